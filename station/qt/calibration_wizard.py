"""Click-to-calibrate: a new product (or a new version of one) from good parts, in five pages.

1. Product: name, false-reject budget (1 in 100 / 200 / 500 / 1000), working size.
2. Good parts: capture from the live source (``add_frame`` is fed by the main window; Space per
   part, or automatically every K seconds) or pick a folder (searched recursively).
3. Region: optionally draw the region to inspect and areas to ignore on a reference image.
4. Training: progress and Cancel (``core.trainer.train_recipe`` in a :class:`station.qt.tasks.Task`).
5. Result: the good-score histogram against the limits, the limits, the expected false-reject rate
   in words. The recipe is saved only when the operator presses "Save recipe".

Nothing is saved on Cancel: captured frames (kept in ``products/<name>/calibration/<time>/`` so a
later retrain can find them) are removed again.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QTimer, Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QRadioButton,
    QVBoxLayout, QWidget, QWizard, QWizardPage,
)

from core.images import load_image
from core.recipe import Recipe, RecipeError, check_product_name
from core.trainer import TrainConfig, train_recipe
from station.qt.calibration_collect import CollectPage
from station.qt.calibration_result import ResultPage
from station.context import StationContext
from station.qt.roi_editor import RoiEditor
from station.qt.tasks import Task
from station.qt.screen_fit import compact_combo, fit_to_screen
from station.qt.workflow_common import LatestRunner, release_later, scale_font, show_status, to_qimage

log = logging.getLogger(__name__)

BUDGETS = (100, 200, 500, 1000)  # false-reject budget: "1 good part in N" auto-FAILed
REVIEW_BUDGETS = (5, 10, 20, 50)  # review budget: "1 good part in N" sent to REVIEW
SIZES = (192, 256, 320, 384)
RESOLUTIONS = (("auto", "Automatic: finer only where it catches clearly more (recommended)"),
               ("base", "Base size only (fastest)"),
               ("fine", "Finer, up to 512 px (small defects on large images; slower)"))


# -- 1. product --------------------------------------------------------------------------------
class ProductPage(QWizardPage):
    def __init__(self, wizard: "CalibrationWizard"):
        super().__init__()
        self.wiz = wizard
        self.setTitle("Which product?")
        self.setSubTitle("Give the product a name. A name that already exists gets a new version; "
                         "the old versions stay available.")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("for example: bracket-A12")
        scale_font(self.name_edit, 1.3)
        self.name_edit.textChanged.connect(self._check)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.budget = QComboBox()
        for n in BUDGETS:
            self.budget.addItem(f"at most about 1 good part in {n}", n)
        self.review_budget = QComboBox()
        for n in REVIEW_BUDGETS:
            self.review_budget.addItem(f"about 1 good part in {n}", n)
        self.resolution = QComboBox()
        for key, text in RESOLUTIONS:
            self.resolution.addItem(text, key)
        self.resolution.setCurrentIndex([k for k, _ in RESOLUTIONS].index(wizard.base_config.resolution))
        compact_combo(self.resolution, 30)  # its long choices would make the wizard wider than a small screen
        self.size_combo = QComboBox()  # not "size": that would hide QWidget.size()
        sizes = sorted(set(SIZES) | {int(wizard.base_config.size)})
        for s in sizes:
            self.size_combo.addItem(f"{s} px" + ("  (recommended)" if s == 256 else "") +
                                    ("  (faster, for small parts)" if s < 256 else "") +
                                    ("  (finer detail, slower)" if s > 256 else ""), s)
        self.size_combo.setCurrentIndex(sizes.index(int(wizard.base_config.size)))
        budget = round(1.0 / wizard.base_config.false_reject_budget)
        self.budget.setCurrentIndex(BUDGETS.index(budget) if budget in BUDGETS else 1)
        review = round(1.0 / wizard.base_config.review_budget)
        self.review_budget.setCurrentIndex(REVIEW_BUDGETS.index(review) if review in REVIEW_BUDGETS else 1)
        form = QFormLayout(self)
        form.addRow("Product name:", self.name_edit)
        form.addRow("", self.message)
        form.addRow("Good parts rejected (FAIL):", self.budget)
        form.addRow("Good parts sent to REVIEW:", self.review_budget)
        form.addRow("Working size:", self.size_combo)
        form.addRow("Resolution:", self.resolution)

    def product(self) -> str:
        return self.name_edit.text().strip()

    def budget_value(self) -> float:
        return 1.0 / float(self.budget.currentData())

    def review_budget_value(self) -> float:
        return 1.0 / float(self.review_budget.currentData())

    def resolution_value(self) -> str:
        return str(self.resolution.currentData())

    def size_value(self) -> int:
        return int(self.size_combo.currentData())

    def _check(self) -> None:
        name = self.product()
        if not name:
            show_status(self.message, "")
        else:
            try:
                check_product_name(name)
            except RecipeError as exc:
                show_status(self.message, str(exc), "error")
            else:
                v = self.wiz.context.versions(name)
                show_status(self.message, f"'{name}' exists (version {v[-1]}): this will make version {v[-1] + 1}."
                        if v else f"A new product: this will make '{name}' version 1.", "warn" if v else "ok")
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802
        try:
            check_product_name(self.product())
        except RecipeError:
            return False
        return True


# -- 3. region ---------------------------------------------------------------------------------
class RegionPage(QWizardPage):
    def __init__(self, wizard: "CalibrationWizard"):
        super().__init__()
        self.wiz = wizard
        self.setTitle("Where to look (optional)")
        self.setSubTitle("Drag a rectangle around the part to inspect only that region, and over "
                         "areas that change from part to part (labels, fixtures) to ignore them. "
                         "Skip with Next to inspect the whole picture.")
        self.editor = RoiEditor()
        self.roi_radio = QRadioButton("Draw the region to inspect  (R)")
        self.ignore_radio = QRadioButton("Draw an area to ignore  (I)")
        self.roi_radio.setChecked(True)
        self.roi_radio.toggled.connect(lambda on: self.editor.set_mode("roi" if on else "ignore"))
        undo = QPushButton("Remove last ignored area")
        undo.clicked.connect(self.editor.remove_last_ignore_zone)
        clear = QPushButton("Clear all")
        clear.clicked.connect(self.editor.clear)
        self.summary = QLabel()
        self.editor.changed.connect(self._summarise)
        row = QHBoxLayout()
        for w in (self.roi_radio, self.ignore_radio):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(undo)
        row.addWidget(clear)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.editor, 1)
        lay.addWidget(self.summary)
        QShortcut(QKeySequence(Qt.Key.Key_R), self, lambda: self.roi_radio.setChecked(True))
        QShortcut(QKeySequence(Qt.Key.Key_I), self, lambda: self.ignore_radio.setChecked(True))
        self._loader = LatestRunner(self)
        self._loader.succeeded.connect(self._loaded)
        self._loader.failed.connect(lambda _k, msg: self.summary.setText(f"The reference picture cannot be shown: {msg}"))
        self._reference_key: tuple[str, object] | None = None  # ("frame", id) or ("file", path) shown

    def busy(self) -> bool:
        return self._loader.busy()

    def shutdown(self) -> None:
        self._loader.shutdown()

    def initializePage(self) -> None:  # noqa: N802
        collect = self.wiz.collect_page
        images = collect.images()
        key: tuple[str, object]
        if collect.using_camera() and collect.reference_frame is not None:
            key, frame = ("frame", id(collect.reference_frame)), collect.reference_frame
            job = lambda progress, cancelled: frame  # noqa: E731
        elif images:
            key, path = ("file", str(images[0])), images[0]
            job = lambda progress, cancelled: load_image(path)  # noqa: E731
        else:
            return
        if key != self._reference_key:
            self._reference_key = key
            self.summary.setText("Loading the reference picture…")
            self._loader.request(key, job)

    def _loaded(self, key, rgb: np.ndarray) -> None:
        self.editor.set_image(to_qimage(rgb))

    def _summarise(self) -> None:
        roi, zones = self.editor.roi(), self.editor.ignore_zones()
        w, h = self.editor.image_size()
        text = (f"Inspecting the region {roi[2]}×{roi[3]} px at ({roi[0]}, {roi[1]})" if roi
                else f"Inspecting the whole picture ({w}×{h} px)")
        if zones:
            text += f"; ignoring {len(zones)} area{'s' if len(zones) > 1 else ''}"
        self.summary.setText(text + ".")


# -- 4. training -------------------------------------------------------------------------------
class TrainPage(QWizardPage):
    def __init__(self, wizard: "CalibrationWizard"):
        super().__init__()
        self.wiz = wizard
        self.setTitle("Learning the good parts")
        self.setSubTitle("This takes a minute or two. You can cancel at any time; nothing is saved "
                         "until you accept the result.")
        self.stage = QLabel()
        scale_font(self.stage, 1.3)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setMinimumHeight(36)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button = QPushButton("Try again")
        self.retry_button.clicked.connect(self.start)
        self.message = QLabel()
        self.message.setWordWrap(True)
        scale_font(self.message, 1.2)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.retry_button)
        row.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        lay.addWidget(self.stage)
        lay.addWidget(self.bar)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addStretch(2)
        self.task: Task | None = None
        self.recipe: Recipe | None = None

    def running(self) -> bool:
        return self.task is not None

    def initializePage(self) -> None:  # noqa: N802
        self.start()

    def cleanupPage(self) -> None:  # noqa: N802
        self.cancel()

    def isComplete(self) -> bool:  # noqa: N802
        return self.recipe is not None and self.task is None

    def start(self) -> None:
        if self.task is not None:
            return
        self.recipe = None
        w = self.wiz
        good = w.collect_page.images()
        config = w.train_config()
        product = w.product_page.product()
        sources = {"good": w.collect_page.source_folder(), "defect": ""}
        log.info("Calibrating %s from %d good images (size %d, budget 1 in %d)", product, len(good),
                 config.size, round(1 / config.false_reject_budget))

        def job(progress, cancelled):
            return train_recipe(good, product=product, config=config, progress=progress, cancel=cancelled,
                                sources=sources)

        self.task = Task(job)
        self.task.progressed.connect(self._progress)
        self.task.succeeded.connect(self._trained)
        self.task.failed.connect(self._failed)
        self.task.cancelled.connect(lambda: show_status(self.message, "Training cancelled: nothing was saved. "
                                                    "Press 'Try again' or go back to change something.", "warn"))
        self.task.finished.connect(self._finished)
        self.bar.setValue(0)
        self.stage.setText("Starting…")
        show_status(self.message, "")
        self.cancel_button.setEnabled(True)
        self.retry_button.hide()
        self.task.start()
        self.wiz.busy_changed.emit(True)
        self.completeChanged.emit()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.stage.setText("Stopping…")
            self.cancel_button.setEnabled(False)

    def _progress(self, stage: str, fraction: float) -> None:
        self.stage.setText(stage)
        self.bar.setValue(int(round(fraction * 1000)))

    def _trained(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.stage.setText("Done")
        self.bar.setValue(1000)

    def _failed(self, message: str) -> None:
        log.error("Calibration of %s failed: %s", self.wiz.product_page.product(), message)
        show_status(self.message, f"Training did not work: {message}", "error")

    def _finished(self) -> None:
        release_later(self.task)
        self.task = None
        self.wiz.busy_changed.emit(False)
        self.cancel_button.setEnabled(False)
        self.retry_button.setVisible(self.recipe is None)
        self.completeChanged.emit()
        if self.wiz.closing:
            self.wiz.finish_closing()
        elif self.recipe is not None and self.wiz.currentPage() is self:
            QTimer.singleShot(0, self.wiz.next)


# -- the wizard --------------------------------------------------------------------------------
class CalibrationWizard(QWizard):
    """New product / new version from good parts. ``config``: base TrainConfig (tests, presets)."""

    recipe_saved = Signal(str, int)  # product, version
    busy_changed = Signal(bool)  # True while training runs (the owner may pause live inspection)

    def __init__(self, context: StationContext, parent: QWidget | None = None, *,
                 config: TrainConfig | None = None):
        super().__init__(parent)
        self.context = context
        self.base_config = config or TrainConfig()
        self.closing = False
        self._saver: Task | None = None
        self.saved_path: Path | None = None
        self.setWindowTitle("Calibrate a product")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, False)
        self.product_page = ProductPage(self)
        self.collect_page = CollectPage(self)
        self.region_page = RegionPage(self)
        self.train_page = TrainPage(self)
        self.result_page = ResultPage(self)
        for page in (self.product_page, self.collect_page, self.region_page, self.train_page, self.result_page):
            self.addPage(page)
        fit_to_screen(self, 1120, 720)  # or the screen, frame included, where that is smaller

    # -- public -------------------------------------------------------------------------------
    @Slot(object)
    def add_frame(self, frame) -> None:
        """The newest frame of the live source: an RGB array or a ``core.types.Frame``.

        Connect the capture's ``frame_captured`` signal here while the wizard is open; frames are
        only referenced (not copied) until the operator captures one.
        """
        self.collect_page.add_frame(getattr(frame, "image", frame))

    def train_config(self) -> TrainConfig:
        roi = self.region_page.editor.roi()
        zones = tuple(self.region_page.editor.ignore_zones())
        return replace(self.base_config, size=self.product_page.size_value(),
                       false_reject_budget=self.product_page.budget_value(),
                       review_budget=self.product_page.review_budget_value(),
                       resolution=self.product_page.resolution_value(), roi=roi, ignore_zones=zones)

    def trained_recipe(self) -> Recipe | None:
        return self.train_page.recipe

    def busy(self) -> bool:
        return (self.train_page.running() or self._saver is not None or self.collect_page.busy()
                or self.region_page.busy())

    def shutdown(self) -> None:
        """Stop all background work and wait for it (for owners closing the application)."""
        if self.train_page.task is not None:
            self.train_page.task.shutdown()
        if self._saver is not None:
            self._saver.wait()
        self.collect_page.shutdown()
        self.region_page.shutdown()

    # -- accept / reject ----------------------------------------------------------------------
    def accept(self) -> None:
        recipe = self.train_page.recipe
        if recipe is None or self._saver is not None:
            return
        if self.saved_path is not None:
            return super().accept()
        root = self.context.recipes_root
        self._saver = Task(lambda progress, cancelled: recipe.save(root))
        self._saver.succeeded.connect(self._saved)
        self._saver.failed.connect(self._save_failed)
        self._saver.finished.connect(self._save_finished)
        for b in (QWizard.WizardButton.FinishButton, QWizard.WizardButton.BackButton, QWizard.WizardButton.CancelButton):
            self.button(b).setEnabled(False)
        show_status(self.result_page.message, "Saving…")
        self._saver.start()

    def _saved(self, path) -> None:
        recipe = self.train_page.recipe
        assert recipe is not None  # accept() saves only a trained recipe; the pages are locked meanwhile
        self.saved_path = Path(path)
        log.info("Saved recipe %s to %s", recipe.label, path)
        self.recipe_saved.emit(recipe.product, recipe.version)

    def _save_failed(self, message: str) -> None:
        log.error("Saving the recipe failed: %s", message)
        show_status(self.result_page.message, f"The recipe was NOT saved: {message}", "error")

    def _save_finished(self) -> None:
        release_later(self._saver)
        self._saver = None
        for b in (QWizard.WizardButton.FinishButton, QWizard.WizardButton.BackButton, QWizard.WizardButton.CancelButton):
            self.button(b).setEnabled(True)
        if self.saved_path is not None:
            super().accept()

    def reject(self) -> None:
        if self._saver is not None:
            return
        if self.train_page.running():  # close once the training has stopped
            self.closing = True
            self.train_page.cancel()
            return
        self.finish_closing()

    def finish_closing(self) -> None:
        self.closing = False
        self.collect_page.shutdown()
        self.region_page.shutdown()
        if self.saved_path is None:
            self.collect_page.discard_captures()
        super().reject()

    def done(self, result: int) -> None:
        self.collect_page.cleanupPage()
        super().done(result)
