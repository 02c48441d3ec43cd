"""The two dialogs of "Retrain like a calibration" (the use case is the Qt-free ``station.retrain``).

* :class:`RetrainConfirmDialog`, before training: what will be used (good and defect images, from
  which folders, with counts, or "MISSING"), what the new version will be (vN+1 of the product,
  trained from vN), which limits it gets, and "Reset the limits to the defaults" when an engineer
  changed them. With too few good images it says why and offers only Close: a training that can
  only fail is never started.
* :class:`RetrainResultDialog`, after training: the calibration wizard's result page (the
  good-score histogram against the limits, the budgets in words, the synthetic-defect check) with
  **Accept** and **Discard**. Accept asks the owner to save (``accept_requested``; the review queue
  saves in a background Task and closes the dialog when the version is saved); Discard saves nothing.

The dialogs never touch the disk themselves.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget,
)

from station.qt.calibration_result import ResultPage
from station.qt.workflow_common import scale_font, show_status
from station.retrain import Retrained, RetrainPlan

if TYPE_CHECKING:
    from station.qt.calibration_wizard import CalibrationWizard


def _plain_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class RetrainConfirmDialog(QDialog):
    """What a retrain will use, before it starts; Start (accept) or Cancel (reject)."""

    def __init__(self, plan: RetrainPlan, parent: QWidget | None = None):
        super().__init__(parent)
        self.plan = plan
        self.setWindowTitle(f"Retrain {plan.product}")
        self.headline = QLabel(f"Retrain {plan.product}: {plan.title()}")
        self.headline.setWordWrap(True)
        scale_font(self.headline, 1.3, bold=True)
        self.details = _plain_label()
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        scale_font(self.details, 1.1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.details)
        self.reset_box = QCheckBox("Reset the limits to the defaults")
        self.reset_box.setToolTip("Unticked, the new version keeps the budgets (and hand-set limits) of "
                                  f"v{plan.parent_version}")
        self.reset_box.setVisible(plan.limits_changed)
        self.reset_box.toggled.connect(self._show)
        self.refusal = _plain_label()
        scale_font(self.refusal, 1.1, bold=True)
        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.accept)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.headline)
        lay.addWidget(scroll, 1)
        lay.addWidget(self.reset_box)
        lay.addWidget(self.refusal)
        lay.addLayout(buttons)
        if plan.refusal:
            show_status(self.refusal, plan.refusal, "error")
            self.start_button.setEnabled(False)
            self.start_button.hide()
            self.cancel_button.setText("Close")
            self.cancel_button.setDefault(True)
        else:
            self.refusal.hide()
            self.start_button.setDefault(True)
        self._show()
        self.resize(820, 520)

    def reset_limits(self) -> bool:
        return self.plan.limits_changed and self.reset_box.isChecked()

    def text(self) -> str:
        """Everything the dialog says (tests, logs)."""
        return "\n".join(w.text() for w in (self.headline, self.details, self.refusal) if w.text())

    def accept(self) -> None:
        if self.plan.refusal:  # never start a training that can only fail
            return
        super().accept()

    def _show(self, *_) -> None:
        self.details.setText("\n".join(self.plan.lines(self.reset_limits())))


class _Wizardless:
    """What the calibration wizard's ResultPage reads of its wizard: the trained recipe, a button text."""

    def __init__(self, recipe):
        self.train_page = SimpleNamespace(recipe=recipe)

    def setButtonText(self, *_args) -> None:  # noqa: N802 - the QWizard method the page calls
        pass


class RetrainResultDialog(QDialog):
    """The retrained recipe, not saved yet: Accept (the owner saves it, then closes this) or Discard."""

    accept_requested = Signal()

    def __init__(self, result: Retrained, parent: QWidget | None = None):
        super().__init__(parent)
        self.result_ = result  # not "result": that would hide QDialog.result()
        plan = result.plan
        self._saving = False
        self.setWindowTitle(f"Retrained {plan.product}: check the result")
        self.headline = QLabel(f"{plan.title()}: not saved yet")
        self.headline.setWordWrap(True)
        scale_font(self.headline, 1.3, bold=True)
        copied = (f" {result.copied} image{'s' if result.copied != 1 else ''} of the original training folders "
                  "were copied into the station's data folder." if result.copied else "")
        self.summary = _plain_label(f"{plan.summary()}{copied} {result.limits_words()}")
        self.page = ResultPage(cast("CalibrationWizard", _Wizardless(result.recipe)))
        self.page.initializePage()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.accept_button = QPushButton(f"Accept and use v{plan.new_version}")
        self.accept_button.clicked.connect(self._accept_clicked)
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Nothing is saved; the station keeps inspecting with "
                                       f"v{plan.parent_version}")
        self.discard_button.clicked.connect(self.reject)
        for b in (self.accept_button, self.discard_button):
            b.setAutoDefault(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.message, 1)
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.discard_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.headline)
        lay.addWidget(self.summary)
        lay.addWidget(self.page, 1)
        lay.addLayout(buttons)
        self.resize(1000, 720)

    @property
    def recipe(self):
        return self.result_.recipe

    def saving(self) -> bool:
        return self._saving

    def set_saving(self, saving: bool) -> None:
        self._saving = saving
        self.accept_button.setEnabled(not saving)
        self.discard_button.setEnabled(not saving)
        if saving:
            show_status(self.message, "Saving…")

    def show_error(self, text: str) -> None:
        self.set_saving(False)
        show_status(self.message, text, "error")

    def saved(self, version: int) -> None:
        """The owner saved it: close."""
        self._saving = False
        show_status(self.message, f"Saved as v{version}.", "ok")
        super().accept()

    def accept(self) -> None:  # Enter: the same as the Accept button
        self._accept_clicked()

    def reject(self) -> None:  # Discard, Esc, the window's close button: nothing is saved
        if self._saving:
            return
        super().reject()

    def _accept_clicked(self) -> None:
        if self._saving:
            return
        self.set_saving(True)
        self.accept_requested.emit()
