"""Choose the product recipe (and version) to inspect with. Lists folders only; loading happens
off the UI thread in ``LivePipeline.load_recipe``."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QListWidget, QListWidgetItem, QVBoxLayout

from station.qt.screen_fit import fit_to_screen


class RecipeDialog(QDialog):
    def __init__(self, context, current: tuple[str, int] | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Choose recipe")
        fit_to_screen(self, 520, 460)
        self.list = QListWidget()
        self.choice: tuple[str, int] | None = None
        for product in context.products():
            versions = context.versions(product)
            for v in reversed(versions):
                text = f"{product}   v{v}" + ("   (newest)" if v == versions[-1] else "")
                item = QListWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, (product, v))
                self.list.addItem(item)
                if current == (product, v):
                    self.list.setCurrentItem(item)
        if self.list.count() and self.list.currentRow() < 0:
            self.list.setCurrentRow(0)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Use this recipe")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Recipes on this station:" if self.list.count() else
                             "There are no recipes yet. Use Product > Build demo recipe, or teach a product."))
        lay.addWidget(self.list, 1)
        lay.addWidget(buttons)

    def accept(self) -> None:
        item = self.list.currentItem()
        self.choice = item.data(Qt.ItemDataRole.UserRole) if item else None
        super().accept()
