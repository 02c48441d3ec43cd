"""Calibration wizard, page 5: the good-score histogram against the PASS and FAIL limits, the two
budgets in words, the settings the recipe chose for itself and what its synthetic-defect check
says it would catch. The wizard saves the recipe when the operator accepts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget, QWizard, QWizardPage

from core.recipe import Recipe
from station.qt.workflow_common import model_label, one_in, one_in_words, scale_font, show_status


MODEL_COLOURS = {"patchcore": (31, 119, 180), "gaussian": (255, 127, 14), "classifier": (44, 160, 44),
                 "fused": (90, 90, 90)}


def good_scores(recipe: Recipe) -> dict[str, np.ndarray]:
    """Held-out good scores per model and fused, normalised (1.0 = that score's FAIL limit)."""
    out = {}
    for m in [*recipe.models, "fused"]:
        scores = recipe.normalised_calibration_scores(m) if m != "classifier" else None
        if scores is not None:
            out[m] = scores
    return out


def budget_words(recipe: Recipe) -> str:
    fr, rv = recipe.budgets
    if fr is None or rv is None:
        return one_in_words(max(recipe.threshold(m).budget for m in recipe.models)).capitalize() + "."
    return (f"About 1 good part in {one_in(fr)} will be auto-FAILed and 1 in {one_in(rv)} "
            "sent to REVIEW (the budgets); the rest PASS.")


def synthetic_lines(recipe: Recipe) -> list[str]:
    """The synthetic-defect check in words: what the recipe would catch, by size."""
    syn = recipe.synthetic_check
    if not syn:
        return []
    sizes = "; ".join(f"about {r['caught']:.0%} of defects of {r['size_px']} px" for r in syn["by_size"])
    return [f"Synthetic-defect check ({syn['n_defects']} spots, scratches, blobs and misplaced pieces pasted "
            f"into good parts it had not seen): this recipe would catch {sizes} "
            f"(AUROC {syn['auroc']['fused']:.3f}). An estimate: real defects differ."]


if TYPE_CHECKING:  # the wizard imports this page
    from station.qt.calibration_wizard import CalibrationWizard


class ResultPage(QWizardPage):
    def __init__(self, wizard: CalibrationWizard):
        super().__init__()
        self.wiz = wizard
        self.setTitle("Check the result")
        self.setSubTitle("The bars are the good parts you showed, scored by each check; the dashed line "
                         "is the limit. Press 'Save recipe' to use it.")
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        scale_font(self.headline, 1.5, bold=True)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(180)
        label_style = {"color": "#222", "font-size": "12pt"}
        self.plot.setLabel("bottom", "score of a good part (1.0 = limit)", **label_style)
        self.plot.setLabel("left", "good parts", **label_style)
        tick_font = self.font()
        tick_font.setPointSizeF(max(9.0, tick_font.pointSizeF() * 1.1))
        for side in ("bottom", "left"):
            axis = self.plot.getAxis(side)
            axis.setTextPen("#222")
            axis.setPen("#666")
            axis.setTickFont(tick_font)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        scale_font(self.details, 1.1)
        self.message = QLabel()
        self.message.setWordWrap(True)
        # on a short screen the page scrolls (the wizard's buttons stay in sight); on a tall one the plot grows
        content = QWidget()
        col = QVBoxLayout(content)
        col.setContentsMargins(0, 0, 6, 0)
        col.addWidget(self.headline)
        col.addWidget(self.plot, 1)
        col.addWidget(self.details)
        col.addWidget(self.message)
        scroll = QScrollArea()
        scroll.setWidget(content)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(scroll)
        self.histograms: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def initializePage(self) -> None:  # noqa: N802
        recipe = self.wiz.train_page.recipe
        if recipe is None:
            return
        self.headline.setText(budget_words(recipe))
        self._plot(recipe)
        self.details.setText("\n".join(self._details(recipe)))
        show_status(self.message, "")
        self.wiz.setButtonText(QWizard.WizardButton.FinishButton, "Save recipe")

    def _plot(self, recipe: Recipe) -> None:
        self.plot.clear()
        self.histograms.clear()
        legend = self.plot.plotItem.legend or self.plot.addLegend(offset=(-10, 10), labelTextColor="#222",
                                                                   labelTextSize="12pt")
        legend.clear()
        scores = good_scores(recipe)
        top = max([1.3] + [float(s.max()) * 1.1 for s in scores.values() if s.size])
        low = min([0.5] + [float(s.min()) for s in scores.values() if s.size])
        bottom = max(0.0, np.floor(low * 10.0) / 10.0 - 0.1)
        edges = np.linspace(bottom, top, 31)
        for m, s in scores.items():
            counts, _ = np.histogram(np.clip(s, bottom, top), edges)
            self.histograms[m] = (edges, counts)
            r, g, b = MODEL_COLOURS.get(m, (100, 100, 100))
            self.plot.plot(edges, counts, stepMode="center", fillLevel=0, name=model_label(m),
                           pen=pg.mkPen((r, g, b), width=2), brush=pg.mkBrush(r, g, b, 80))
        fusion = recipe.fusion
        if fusion is not None and fusion.threshold is not None:
            lo, hi = fusion.threshold.band
            band = pg.LinearRegionItem((lo, hi), movable=False, brush=pg.mkBrush(215, 140, 0, 40),
                                       pen=pg.mkPen(None))
            self.plot.addItem(band)
        line = pg.InfiniteLine(1.0, angle=90, pen=pg.mkPen((200, 40, 40), width=2, style=Qt.PenStyle.DashLine),
                               label="FAIL limit", labelOpts={"position": 0.9, "color": (200, 40, 40)})
        self.plot.addItem(line)
        self.plot.setXRange(bottom, top, padding=0)

    @staticmethod
    def _details(recipe: Recipe) -> list[str]:
        t = recipe.training
        lines = [f"Learned from {t.get('n_good', '?')} good parts in {float(t.get('seconds', 0)):.0f} s; "
                 f"working size {recipe.working_shape[1]}×{recipe.working_shape[0]} px."]
        for key, why in recipe.framing_why.items():
            lines.append(f"{key.capitalize()}: {why}.")
        scores = good_scores(recipe)
        fusion = recipe.fusion
        if fusion is not None and fusion.threshold is not None:
            lo = fusion.threshold.band[0]
            lines.append(f"Combined score ({fusion.chosen_by}): PASS below {lo:.2f}× its FAIL limit, REVIEW "
                         "between, FAIL from 1.00×; the shaded band on the chart.")
        for m in recipe.models:
            thr = recipe.threshold(m)
            lo, hi = thr.band
            line = (f"{model_label(m)}: PASS below {thr.pass_limit:.4g}, FAIL from {thr.value:.4g}; "
                    f"expected {one_in_words(thr.expected_false_reject, 'at or above its FAIL limit')}")
            line += f"; highest good part {thr.good_max / thr.value:.2f}×"
            if thr.n < 10:
                line += f" (only {thr.n} parts to calibrate on: more good parts give a steadier limit)"
            lines.append(line + ".")
            over = int(np.sum(scores.get(m, np.zeros(0)) >= 1.0))
            if over:
                lines.append(f"   {over} of the good parts you showed score above the {model_label(m)} limit: "
                             "check that they really are good.")
        lines.extend(synthetic_lines(recipe))
        skipped = t.get("skipped") or []
        if skipped:
            lines.append(f"{len(skipped)} picture(s) were not used, e.g. {Path(skipped[0]['source']).name}: "
                         f"{skipped[0]['error']}")
        return lines
