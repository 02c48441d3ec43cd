"""The threshold what-if dialog: the window around :mod:`station.whatif` (budgets, a score's limits
moved, which stored parts would change; Apply saves a new recipe version)."""
from __future__ import annotations

import logging

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QDoubleSpinBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
    QLineEdit, QPushButton, QSlider, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from core.calibration import CalibrationError, Threshold
from core.fusion import Fusion
from core.recipe import Recipe
from station.context import StationContext
from station.qt.tasks import Task
from station.qt.screen_fit import fit_to_screen
from station.qt.workflow_common import (
    LatestRunner, model_label, one_in_words, release_later, scale_font, status_style,
)
from station.whatif import (
    DECISIONS, MAX_FACTOR, MAX_RECORDS, MIN_FACTOR, StoredScores, WhatIfResult, budget_limits, load_job, scaled_limits, simulate,
)

log = logging.getLogger(__name__)


class WhatIfDialog(QDialog):
    """Try a model's limit on the stored results; Apply saves it as a new recipe version."""

    recipe_saved = Signal(str, int)  # product, version

    def __init__(self, context: StationContext, parent: QWidget | None = None, *, product: str | None = None,
                 version: int | None = None):
        super().__init__(parent)
        self.context = context
        self.setWindowTitle("What if the limit were different?")
        s = context.settings
        products = context.products()
        self.product = product or (s.active_product if s.active_product in products else (products[0] if products else ""))
        self.version = version if version is not None else (s.active_version if self.product == s.active_product else 0)
        self.recipe: Recipe | None = None
        self.records: list[StoredScores] = []
        self.simulated: WhatIfResult | None = None  # the newest simulation
        self._saver: Task | None = None

        self.recipe_label = QLabel("Loading…")
        self.recipe_label.setWordWrap(True)  # the recipe and how many inspections: long on a small screen
        scale_font(self.recipe_label, 1.2, bold=True)
        self.fail_budget = QSpinBox()
        self.fail_budget.setRange(20, 100_000)
        self.fail_budget.setPrefix("1 good part in ")
        self.fail_budget.setSuffix(" auto-FAILed")
        self.review_budget = QSpinBox()
        self.review_budget.setRange(2, 1000)
        self.review_budget.setPrefix("1 good part in ")
        self.review_budget.setSuffix(" sent to REVIEW")
        for box in (self.fail_budget, self.review_budget):
            scale_font(box, 1.1)
            box.setEnabled(False)
            box.valueChanged.connect(self._factor_changed)
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(MIN_FACTOR * 100), int(MAX_FACTOR * 100))
        self.slider.setValue(100)
        self.slider.setPageStep(5)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(MIN_FACTOR, MAX_FACTOR)
        self.spin.setDecimals(2)
        self.spin.setSingleStep(0.01)
        self.spin.setValue(1.0)
        self.spin.setSuffix(" × current limit")
        scale_font(self.spin, 1.2)
        self.slider.valueChanged.connect(lambda v: self.spin.setValue(v / 100.0))
        self.spin.valueChanged.connect(self._factor_changed)
        self.limit_label = QLabel()
        self.limit_label.setWordWrap(True)

        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Verdict now", "Would become", "Parts"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        scale_font(self.table, 1.2)
        self.table.setMinimumHeight(120)
        self.table.setMaximumHeight(240)
        self.changed_label = QLabel()
        self.changed_label.setWordWrap(True)
        scale_font(self.changed_label, 1.3, bold=True)
        self.good_label = QLabel()
        self.good_label.setWordWrap(True)
        scale_font(self.good_label, 1.15)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Why (saved with the new version)")
        self.apply_button = QPushButton("Apply as a new version")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        self.status = QLabel()
        self.status.setWordWrap(True)
        for button in (self.apply_button, close):  # Enter in the note must not save a version
            button.setAutoDefault(False)
            button.setDefault(False)

        form = QFormLayout()
        form.addRow("Recipe:", self.recipe_label)
        form.addRow("False-reject budget:", self.fail_budget)
        form.addRow("Review budget:", self.review_budget)
        form.addRow("Score:", self.model_combo)
        limit = QHBoxLayout()
        limit.addWidget(self.slider, 1)
        limit.addWidget(self.spin)
        form.addRow("Limit:", limit)
        form.addRow("", self.limit_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.note_edit, 1)
        buttons.addWidget(self.apply_button)
        buttons.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.changed_label)
        lay.addWidget(self.table)
        lay.addWidget(self.good_label)
        lay.addStretch(1)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        fit_to_screen(self, 900, 640)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(120)
        self._debounce.timeout.connect(self._recompute)
        self._runner = LatestRunner(self)
        self._runner.succeeded.connect(self._done)
        self._runner.failed.connect(self._failed)
        if self.product:
            self._runner.request("load", load_job(context, self.product, self.version))
        else:
            self.recipe_label.setText("There is no recipe yet.")

    # -- public -------------------------------------------------------------------------------
    def model(self) -> str:
        return self.model_combo.currentData() or ""

    def factor(self) -> float:
        return round(self.spin.value(), 4)

    def set_factor(self, factor: float) -> None:
        self.spin.setValue(factor)

    def busy(self) -> bool:
        return self._runner.busy() or self._debounce.isActive() or self._saver is not None

    def budgets(self) -> tuple[float, float]:
        """(false-reject budget, review budget) as probabilities."""
        return 1.0 / self.fail_budget.value(), 1.0 / self.review_budget.value()

    def _recipe_budgets(self) -> tuple[int, int]:
        fr, rv = self.recipe.budgets if self.recipe is not None else (None, None)
        fr, rv = fr or 0.005, rv or 0.1
        return int(round(1.0 / fr)), int(round(1.0 / rv))

    def budgets_changed(self) -> bool:
        return self.recipe is not None and (self.fail_budget.value(), self.review_budget.value()) != self._recipe_budgets()

    def limits(self) -> tuple[dict[str, Threshold], Fusion | None]:
        """The limits the dialog shows: from the budgets (when changed), the chosen score scaled."""
        recipe = self.recipe
        assert recipe is not None  # every caller checks self.recipe first (or runs after it was loaded)
        if self.budgets_changed():
            try:
                thresholds, fusion = budget_limits(recipe, *self.budgets())
            except CalibrationError:
                thresholds, fusion = {m: recipe.threshold(m) for m in recipe.models}, recipe.fusion
        else:
            thresholds, fusion = {m: recipe.threshold(m) for m in recipe.models}, recipe.fusion
        return scaled_limits(thresholds, fusion, self.model(), self.factor(), recipe)

    def new_threshold(self) -> Threshold:
        thresholds, fusion = self.limits()
        if self.model() == "fused":
            assert fusion is not None and fusion.threshold is not None  # "fused" is offered only then
            return fusion.threshold
        return thresholds[self.model()]

    def changed(self) -> bool:
        return self.budgets_changed() or abs(self.factor() - 1.0) > 1e-9

    def apply(self) -> None:
        if self.recipe is None or self._saver is not None or not self.changed():
            return
        m, f = self.model(), self.factor()
        fr, rv = self.fail_budget.value(), self.review_budget.value()
        what = [f"budgets 1 in {fr} FAIL, 1 in {rv} REVIEW"] if self.budgets_changed() else []
        if abs(f - 1.0) > 1e-9:
            what.append(f"{model_label(m)} limits x{f:.2f}")
        note = self.note_edit.text().strip() or f"What-if: {', '.join(what)} of v{self.recipe.version}"
        thresholds, fusion = self.limits()
        changes = dict(thresholds)
        if fusion is not None and fusion.threshold is not None:
            changes["fused"] = fusion.threshold
        new = self.recipe.with_thresholds(changes, note, budgets=self.budgets() if self.budgets_changed() else None)
        root = self.context.recipes_root
        self._saver = Task(lambda progress, cancelled: (new.save(root), new.version)[1])
        self._saver.succeeded.connect(self._saved)

        def failed(msg: str) -> None:
            log.error("What-if apply failed: %s", msg)
            self._say(f"The new version was NOT saved: {msg}", "error")

        self._saver.failed.connect(failed)
        self._saver.finished.connect(self._save_finished)
        self.apply_button.setEnabled(False)
        self._say("Saving…")
        self._saver.start()

    def shutdown(self) -> None:
        self._debounce.stop()
        self._runner.shutdown()
        if self._saver is not None:
            self._saver.wait()

    def done(self, result: int) -> None:
        self.shutdown()
        super().done(result)

    # -- private ------------------------------------------------------------------------------
    def _done(self, key, value) -> None:
        if key == "load":
            self.recipe, self.records = value
            reviewed = sum(1 for r in self.records if r.review)
            newest = " (the newest)" if len(self.records) >= MAX_RECORDS else ""
            self.recipe_label.setText(f"{self.recipe.label}  —  {len(self.records)} stored inspections{newest}, "
                                      f"{reviewed} confirmed by an operator")
            self.model_combo.blockSignals(True)
            if self.recipe.fusion is not None and self.recipe.fusion.threshold is not None:
                self.model_combo.addItem("Combined score (decides the verdict)", "fused")
            for m in self.recipe.models:
                self.model_combo.addItem(model_label(m), m)
            self.model_combo.blockSignals(False)
            fr, rv = self._recipe_budgets()
            for box, v in ((self.fail_budget, fr), (self.review_budget, rv)):
                box.blockSignals(True)
                box.setValue(v)
                box.setEnabled(True)
                box.blockSignals(False)
            self._model_changed()
        else:
            self.simulated = value
            self._show(value)

    def _failed(self, key, message: str) -> None:
        log.error("What-if (%s) failed: %s", key, message)
        self._say(f"Cannot {'load the recipe' if key == 'load' else 'compute'}: {message}", "error")

    def _model_changed(self, *_) -> None:
        self.spin.setValue(1.0)
        self._factor_changed()

    def _factor_changed(self, *_) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(self.spin.value() * 100)))
        self.slider.blockSignals(False)
        if self.recipe is not None and self.model():
            m = self.model()
            old = self.recipe.fusion.threshold if m == "fused" else self.recipe.threshold(m)
            new = self.new_threshold()
            self.limit_label.setText(f"{model_label(m)}: PASS below {old.pass_limit:.4g} → {new.pass_limit:.4g}, "
                                     f"FAIL from {old.value:.4g} → {new.value:.4g}.")
        self.apply_button.setEnabled(False)
        self._debounce.start()

    def _recompute(self) -> None:
        if self.recipe is None or not self.model():
            return
        records, m, f = self.records, self.model(), self.factor()
        thresholds, fusion = self.limits()
        key = ("sim", m, f, self.fail_budget.value(), self.review_budget.value())
        self._runner.request(key, lambda progress, cancelled: simulate(records, thresholds, fusion, f))

    def _show(self, r: WhatIfResult) -> None:
        rows = sorted(r.transitions.items(), key=lambda kv: (DECISIONS.index(kv[0][0]), DECISIONS.index(kv[0][1])))
        self.table.setRowCount(len(rows))
        for i, ((a, b), n) in enumerate(rows):
            for j, text in enumerate((a, b, str(n))):
                item = QTableWidgetItem(text)
                if j == 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.changed_label.setText(f"{r.changed} of {r.total} parts would change verdict" if r.total
                                   else "No stored inspections for this recipe version yet.")
        lines = []
        n_good = sum(r.good_before.values())
        if n_good:
            lines.append(f"Of {n_good} part{'s' if n_good != 1 else ''} an operator confirmed GOOD: rejected (FAIL) {r.good_before['FAIL']} → "
                         f"{r.good_after['FAIL']}, sent to review {r.good_before['REVIEW']} → {r.good_after['REVIEW']}.")
        n_def = sum(r.defect_before.values())
        if n_def:
            lines.append(f"Of {n_def} part{'s' if n_def != 1 else ''} an operator confirmed DEFECT: passed {r.defect_before['PASS']} → "
                         f"{r.defect_after['PASS']}, sent to review {r.defect_before['REVIEW']} → {r.defect_after['REVIEW']}.")
        if not lines and r.total:
            lines.append("No part of this recipe version has been confirmed by an operator yet.")
        if r.skipped:
            lines.append(f"{r.skipped} stored results lack a score for every check and were left out.")
        thr = self.new_threshold()
        if self.changed():
            lines.append("Estimate from the calibration parts: with the new limits "
                         + one_in_words(thr.expected_false_reject, f"would reach the {model_label(self.model())} "
                                                                   "FAIL limit") + ".")
        self.good_label.setText("\n".join(lines))
        self.apply_button.setEnabled(self._saver is None and self.changed())

    def _saved(self, version: int) -> None:
        recipe = self.recipe
        assert recipe is not None  # apply() saves only with a recipe loaded
        log.info("What-if: saved %s version %d", recipe.product, version)
        self._say(f"Saved as {recipe.product} version {version}. Version {recipe.version} is kept as it "
                  "was; choose the version to inspect with in Recipe > Choose recipe (Ctrl+R).", "ok")
        self.recipe_saved.emit(recipe.product, int(version))

    def _save_finished(self) -> None:
        release_later(self._saver)
        self._saver = None

    def _say(self, text: str, kind: str = "info") -> None:
        self.status.setText(text)
        self.status.setStyleSheet(status_style(kind))
