"""Threshold what-if: move one model's limit and see which stored parts would change verdict.

For the chosen recipe version, every stored inspection's raw model scores are scored again with
``core.fusion.model_score`` and fused with ``core.fusion.fuse``, the chosen model's threshold
scaled by a factor (1.0 = the current limit; its uncertainty band scales with it, so the band keeps
its width relative to the limit). Shown: the verdict transitions (PASS→REVIEW: 3, ...) and, among
parts an operator confirmed good, how many would be rejected or sent to review (and among confirmed
defects, how many would pass). "Apply" saves a NEW recipe version; the old one is never changed.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDialog, QDoubleSpinBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
    QLineEdit, QPushButton, QSlider, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from core.calibration import Threshold, expected_false_reject
from core.fusion import fuse, model_score
from core.recipe import Recipe
from station.context import StationContext
from station.tasks import Task
from station.workflow_common import (
    LatestRunner, model_name, one_in_words, release_later, scale_font, status_style,
)

log = logging.getLogger(__name__)

MIN_FACTOR, MAX_FACTOR = 0.5, 2.0
MAX_RECORDS = 50_000  # the newest stored inspections of the version are used (memory, speed)
DECISIONS = ("PASS", "REVIEW", "FAIL")


@dataclass(frozen=True)
class StoredScores:
    """What the what-if needs of one stored inspection."""

    id: int
    decision: str
    raw: dict
    review: str | None = None
    unfamiliar: bool = False

    @classmethod
    def from_record(cls, r: dict) -> "StoredScores | None":
        if r.get("error") or not r.get("decision"):
            return None
        raw = {m: float(s["raw"]) for m, s in (r.get("scores") or {}).items() if "raw" in s}
        return cls(int(r["id"]), r["decision"], raw, r.get("review"), "unfamiliar_input" in (r.get("reasons") or ()))


@dataclass
class WhatIfResult:
    factor: float
    total: int = 0
    skipped: int = 0  # stored without a score for every model of the recipe
    transitions: Counter = field(default_factory=Counter)  # (before, after) -> parts, before != after
    before: Counter = field(default_factory=Counter)
    after: Counter = field(default_factory=Counter)
    good_before: Counter = field(default_factory=Counter)  # verdicts of parts reviewed as good
    good_after: Counter = field(default_factory=Counter)
    defect_before: Counter = field(default_factory=Counter)
    defect_after: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())


def _expected_false_reject(good_scores: np.ndarray | None, high: float, fallback: float) -> float:
    """Fitted probability that a good part scores above ``high`` (same law as the calibration)."""
    if good_scores is None or np.asarray(good_scores).size < 3:
        return fallback
    return expected_false_reject(good_scores, high)


def scaled_threshold(thr: Threshold, factor: float, good_scores: np.ndarray | None = None,
                     from_version: int | None = None) -> Threshold:
    """The threshold times ``factor``, band included (so the band keeps its relative width)."""
    f = float(factor)
    high = thr.high * f
    note = f"manual x{f:.3f}" + (f" of v{from_version}" if from_version is not None else "")
    return replace(thr, value=thr.value * f, low=thr.low * f, high=high, method=f"{thr.method}; {note}",
                   expected_false_reject=_expected_false_reject(good_scores, high, thr.expected_false_reject))


def simulate(records: list[StoredScores], thresholds: dict[str, Threshold], model: str, factor: float) -> WhatIfResult:
    """Re-run the verdict rules on stored raw scores with ``model``'s threshold scaled by ``factor``."""
    changed = dict(thresholds)
    changed[model] = scaled_threshold(thresholds[model], factor)
    out = WhatIfResult(factor=float(factor))
    for rec in records:
        if any(m not in rec.raw for m in thresholds):
            out.skipped += 1
            continue
        scores = [model_score(m, rec.raw[m], changed[m]) for m in thresholds]
        new = fuse(scores, ("unfamiliar input",) if rec.unfamiliar else ()).decision.value
        old = rec.decision
        out.total += 1
        out.before[old] += 1
        out.after[new] += 1
        if old != new:
            out.transitions[(old, new)] += 1
        if rec.review == "good":
            out.good_before[old] += 1
            out.good_after[new] += 1
        elif rec.review == "defect":
            out.defect_before[old] += 1
            out.defect_after[new] += 1
    return out


def load_job(context: StationContext, product: str, version: int | None):
    def run(progress, cancelled):
        recipe = context.load_recipe(product, version or None)
        records = context.store.query_inspections(recipe=recipe.product, recipe_version=recipe.version,
                                                  limit=MAX_RECORDS)
        stored = [s for s in (StoredScores.from_record(r) for r in records) if s is not None]
        return recipe, stored
    return run


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
        self.result: WhatIfResult | None = None
        self._saver: Task | None = None

        self.recipe_label = QLabel("Loading…")
        scale_font(self.recipe_label, 1.2, bold=True)
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
        form.addRow("Check:", self.model_combo)
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
        self.resize(760, 620)

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

    def new_threshold(self) -> Threshold:
        m = self.model()
        good = self.recipe.tensors.get(f"calibration.{m}")
        return scaled_threshold(self.recipe.threshold(m), self.factor(), good, self.recipe.version)

    def apply(self) -> None:
        if self.recipe is None or self._saver is not None or abs(self.factor() - 1.0) < 1e-9:
            return
        m, f = self.model(), self.factor()
        note = self.note_edit.text().strip() or f"What-if: {model_name(m)} limit x{f:.2f} of v{self.recipe.version}"
        new = self.recipe.with_thresholds({m: self.new_threshold()}, note)
        root = self.context.recipes_root
        self._saver = Task(lambda progress, cancelled: (new.save(root), new.version)[1])
        self._saver.succeeded.connect(self._saved)
        self._saver.failed.connect(lambda msg: (log.error("What-if apply failed: %s", msg),
                                                self._say(f"The new version was NOT saved: {msg}", "error")))
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
            for m in self.recipe.models:
                self.model_combo.addItem(model_name(m), m)
            self.model_combo.blockSignals(False)
            self._model_changed()
        else:
            self.result = value
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
            thr = self.recipe.threshold(self.model())
            f = self.factor()
            lo, hi = thr.band
            self.limit_label.setText(f"{model_name(self.model())} limit {thr.value:.4g} → {thr.value * f:.4g}; "
                                     f"unsure between {lo * f:.2f}× and {hi * f:.2f}× the current limit.")
        self.apply_button.setEnabled(False)
        self._debounce.start()

    def _recompute(self) -> None:
        if self.recipe is None or not self.model():
            return
        records, m, f = self.records, self.model(), self.factor()
        thresholds = {name: self.recipe.threshold(name) for name in self.recipe.models}
        self._runner.request(("sim", m, f), lambda progress, cancelled: simulate(records, thresholds, m, f))

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
        if not math.isclose(r.factor, 1.0):
            lines.append("Estimate from the calibration parts: with the new limit "
                         + one_in_words(thr.expected_false_reject, "would score above the unsure band") + ".")
        self.good_label.setText("\n".join(lines))
        self.apply_button.setEnabled(self._saver is None and not math.isclose(r.factor, 1.0))

    def _saved(self, version: int) -> None:
        log.info("What-if: saved %s version %d", self.recipe.product, version)
        self._say(f"Saved as {self.recipe.product} version {version}. Version {self.recipe.version} is unchanged; "
                  "choose the version to use in the station settings.", "ok")
        self.recipe_saved.emit(self.recipe.product, int(version))

    def _save_finished(self) -> None:
        release_later(self._saver)
        self._saver = None

    def _say(self, text: str, kind: str = "info") -> None:
        self.status.setText(text)
        self.status.setStyleSheet(status_style(kind))
