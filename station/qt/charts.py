"""Score charts (pyqtgraph), one curve per model in its own colour:

* rolling: each model's normalised score over the last ``HISTORY`` inspections, the limit (1.0)
  as a white line and each model's unsure band shaded; points in the band are amber, over it red;
* histogram: the recipe's calibration scores of good parts (``calibration.<model>`` divided by the
  threshold value), the limit, each model's band, and the current part as a line per model.

Updates are coalesced: ``add_verdict`` only stores numbers; a timer redraws at most
``REDRAW_HZ`` times a second, so plotting never stalls the live view.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QVBoxLayout, QWidget

from station.wording import model_label

HISTORY = 300
REDRAW_HZ = 5  # "at most ~10 a second": 5 keeps a 2-core bench PC's UI thread free
Y_MAX = 2.5  # scores above are drawn at the top edge
MODEL_COLOURS = {"patchcore": "#4fc3f7", "gaussian": "#ce93d8", "classifier": "#a5d6a7"}
BAND_ALPHA = 45
SHOWN_MODELS = ("patchcore", "gaussian")


def calibration_scores(recipe, model: str) -> np.ndarray | None:
    """The recipe's held-out good-part scores of ``model``, normalised (1.0 = threshold)."""
    return recipe.normalised_calibration_scores(model)


def _plot(layout: pg.GraphicsLayout, col: int, title: str) -> pg.PlotItem:
    plot = layout.addPlot(row=0, col=col)
    plot.setTitle(title, color="#e0e0e0", size="12pt")
    plot.setMenuEnabled(False)
    plot.setMouseEnabled(False, False)
    plot.hideButtons()
    font = QFont()
    font.setPointSize(11)
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setTickFont(font)
        axis.setCacheMode(axis.CacheMode.DeviceCoordinateCache)  # static: paint once, blit after
    plot.titleLabel.setCacheMode(plot.titleLabel.CacheMode.DeviceCoordinateCache)
    return plot


def _band(colour: str, orientation: str) -> pg.LinearRegionItem:
    c = QColor(colour)
    c.setAlpha(BAND_ALPHA)
    return pg.LinearRegionItem((0.9, 1.1), orientation=orientation, movable=False, brush=pg.mkBrush(c),
                               pen=pg.mkPen(None))


class _Model:
    """What one model draws in both plots."""

    def __init__(self, model: str, roll: pg.PlotItem, hist: pg.PlotItem):
        colour = MODEL_COLOURS.get(model, "#e0e0e0")
        self.model = model
        self.values: deque[float] = deque(maxlen=HISTORY)
        self.band_lo, self.band_hi = 0.9, 1.1
        self.band = _band(colour, "horizontal")
        roll.addItem(self.band)
        self.curve = roll.plot(pen=pg.mkPen(colour, width=2), name=model_label(model))
        # points in the unsure band (amber) and over it (red): two plain items, no per-point brushes
        self.unsure = pg.ScatterPlotItem(size=7, pen=pg.mkPen(None), brush=pg.mkBrush("#ffca28"))
        self.over = pg.ScatterPlotItem(size=7, pen=pg.mkPen(None), brush=pg.mkBrush("#ff5252"))
        roll.addItem(self.unsure)
        roll.addItem(self.over)
        self.hist_band = _band(colour, "vertical")
        hist.addItem(self.hist_band)
        fill = QColor(colour)
        fill.setAlpha(110)
        self.bars = pg.PlotCurveItem([0.0, 1.0], [0.0], stepMode="center", fillLevel=0,
                                     brush=pg.mkBrush(fill), pen=pg.mkPen(colour))
        hist.addItem(self.bars)
        self.current = pg.InfiniteLine(0.0, angle=90, pen=pg.mkPen(colour, width=4))
        self.current.hide()
        hist.addItem(self.current)

    def set_recipe(self, recipe, edges: np.ndarray) -> float:
        self.band_lo, self.band_hi = recipe.threshold(self.model).band
        self.band.setRegion((self.band_lo, self.band_hi))
        self.hist_band.setRegion((self.band_lo, self.band_hi))
        self.values.clear()
        self.current.hide()
        scores = calibration_scores(recipe, self.model)
        if scores is None:
            self.bars.setData([0.0, 1.0], [0.0])
            return 0.0
        counts, _ = np.histogram(np.clip(scores, 0, Y_MAX - 1e-9), bins=edges)
        self.bars.setData(edges, counts.astype(float))
        return float(counts.max())

    def redraw(self) -> None:
        y = np.fromiter(self.values, dtype=float, count=len(self.values))
        if y.size == 0:
            self.curve.setData([], [])
            self.unsure.setData([], [])
            self.over.setData([], [])
            self.current.hide()
            return
        x = np.arange(HISTORY - y.size, HISTORY, dtype=float)
        shown = np.minimum(y, Y_MAX - 0.02)
        self.curve.setData(x, shown)
        over = y >= self.band_hi
        unsure = (y >= self.band_lo) & ~over
        self.unsure.setData(x[unsure], shown[unsure])
        self.over.setData(x[over], shown[over])
        self.current.setValue(float(shown[-1]))
        self.current.show()


class ScoreCharts(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("scoreCharts")
        pg.setConfigOptions(antialias=False, background="#1b2024", foreground="#cfd8dc")
        self.view = pg.GraphicsLayoutWidget()
        self.view.setMinimumHeight(160)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)
        self.roll = _plot(self.view.ci, 0, f"Scores of the last {HISTORY} inspections (1 = limit)")
        self.roll.setYRange(0, Y_MAX, padding=0)
        self.roll.setXRange(0, HISTORY, padding=0.01)
        self.roll.showGrid(y=True, alpha=0.15)
        self.roll.getAxis("bottom").setStyle(showValues=False)  # newest on the right
        self.roll.addItem(pg.InfiniteLine(1.0, angle=0, pen=pg.mkPen("#ffffff", width=2)))
        self.legend = self.roll.addLegend(offset=(8, 4), labelTextColor="#e0e0e0", labelTextSize="11pt",
                                          brush=pg.mkBrush(27, 32, 36, 200))
        self.hist = _plot(self.view.ci, 1, "Good parts at calibration; lines: this part")
        self.hist.setXRange(0, Y_MAX, padding=0)
        self.hist.getAxis("left").setStyle(showValues=False)
        self.hist.addItem(pg.InfiniteLine(1.0, angle=90, pen=pg.mkPen("#ffffff", width=2)))
        self.view.ci.layout.setColumnStretchFactor(0, 3)
        self.view.ci.layout.setColumnStretchFactor(1, 1)
        self.models: dict[str, _Model] = {}
        self._dirty = False
        self.redraws = 0
        self._timer = QTimer(self, interval=int(1000 / REDRAW_HZ))
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    def set_recipe(self, recipe) -> None:
        for m in self.models.values():
            for item in (m.band, m.curve, m.unsure, m.over):
                self.roll.removeItem(item)
            for item in (m.hist_band, m.bars, m.current):
                self.hist.removeItem(item)
        self.legend.clear()
        self.models = {}
        edges = np.linspace(0, Y_MAX, 51)
        top = 1.0
        for model in [m for m in recipe.models if m in SHOWN_MODELS] or list(recipe.models):
            self.models[model] = _Model(model, self.roll, self.hist)
            top = max(top, self.models[model].set_recipe(recipe, edges))
        self.hist.setYRange(0, top * 1.15, padding=0)
        self._dirty = True

    def add_verdict(self, verdict) -> None:
        """Store the scores of one verdict; drawn at the next tick."""
        for s in verdict.scores:
            m = self.models.get(s.model)
            if m is not None:
                m.values.append(float(s.score) if np.isfinite(s.score) else Y_MAX)
        self._dirty = True

    def clear(self) -> None:
        for m in self.models.values():
            m.values.clear()
        self._dirty = True

    def _redraw(self) -> None:
        if not self._dirty or not self.isVisible():
            return
        self._dirty = False
        self.redraws += 1
        for m in self.models.values():
            m.redraw()
