"""The live tab's building blocks: image views, score gauges, shift counters (the verdict banner is in
``station.qt.banner``),
the alert bar and the long-action bar. Cheap to update: no numpy work per frame, no layout churn."""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget)

from core.types import ModelScore, ModelState

from station.qt.screen_fit import named, plain, repolish
from station.shift import ShiftSnapshot
from station.wording import model_label

COLOURS = {
    "PASS": QColor("#2e7d32"), "FAIL": QColor("#c62828"), "REVIEW": QColor("#ffb300"),
    "normal": QColor("#43a047"), "uncertain": QColor("#ffb300"), "defect": QColor("#e53935"),
}


class ImageView(QWidget):
    """Shows an RGB uint8 image scaled to fit (in Qt, at paint time; the array is not copied)."""

    def __init__(self, title: str = "", placeholder: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("imageView")
        self.setMinimumSize(240, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.title = title
        self.placeholder = placeholder
        self.message = ""  # drawn over the image (e.g. "Camera lost — reconnecting…")
        self.smooth = True
        self._array: np.ndarray | None = None
        self._image: QImage | None = None
        self._new = False
        self.frames_shown = 0  # images actually painted (display fps)
        self.last_painted = 0.0

    def set_image(self, rgb: np.ndarray | None) -> None:
        if rgb is None:
            self._array, self._image = None, None
        else:
            if not rgb.flags.c_contiguous:
                rgb = np.ascontiguousarray(rgb)
            h, w = rgb.shape[:2]
            self._array = rgb  # the QImage borrows this buffer: keep it alive
            self._image = QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888)
        self._new = True
        self.update()

    def set_message(self, text: str) -> None:
        if text != self.message:
            self.message = text
            self.update()

    def image_rect(self) -> QRect:
        if self._image is None:
            return QRect()
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = (self.width() - size.width()) // 2
        y = (self.height() - size.height()) // 2
        return QRect(x, y, size.width(), size.height())

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#15191c"))
        if self._image is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.smooth)
            p.drawImage(self.image_rect(), self._image)
            if self._new:
                self.frames_shown += 1
                self._new = False
        elif self.placeholder:
            p.setPen(QColor("#9aa5ab"))
            p.drawText(self.rect().adjusted(20, 20, -20, -20), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self.placeholder)
        f = p.font()
        if self.title:
            f.setPointSizeF(max(9.0, f.pointSizeF() * 0.8))
            p.setFont(f)
            r = p.fontMetrics().boundingRect(self.title).adjusted(-8, -4, 8, 4)
            r.moveTopLeft(self.rect().topLeft() + QRect(8, 8, 0, 0).topLeft())
            p.fillRect(r, QColor(0, 0, 0, 150))
            p.setPen(QColor("#ffffff"))
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, self.title)
        if self.message:
            f.setPointSizeF(f.pointSizeF() * 1.5)
            f.setBold(True)
            p.setFont(f)
            band = QRect(0, self.height() // 2 - 40, self.width(), 80)
            p.fillRect(band, QColor(0, 0, 0, 185))
            p.setPen(QColor("#ffd54f"))
            p.drawText(band, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
        p.end()
        self.last_painted = time.perf_counter()


class ScoreGauge(QWidget):
    """One model's normalised score on a fixed 0..2 scale: 1.0 is its limit (threshold), the
    shaded band is where it is unsure, the bar's colour is its opinion."""

    SCALE_MAX = 2.0

    def __init__(self, model: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.score: ModelScore | None = None
        self.band: tuple[float, float] | None = None
        self.setMinimumHeight(54)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(360, 58)

    def set_band(self, band: tuple[float, float] | None) -> None:
        self.band = band
        self.update()

    def set_score(self, score: ModelScore | None) -> None:
        self.score = score
        if score is not None:
            self.band = score.band
        self.update()

    def _x(self, v: float, r: QRectF) -> float:
        return r.left() + r.width() * min(max(v, 0.0), self.SCALE_MAX) / self.SCALE_MAX

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = p.fontMetrics()
        text_h = fm.height()
        s = self.score
        name = model_label(self.model)
        value = "—" if s is None else f"{s.score:.2f} × limit"
        p.setPen(self.palette().windowText().color())
        p.drawText(QRect(0, 0, self.width(), text_h), Qt.AlignmentFlag.AlignLeft, name)
        f = p.font()
        f.setBold(True)
        p.setFont(f)
        p.drawText(QRect(0, 0, self.width(), text_h), Qt.AlignmentFlag.AlignRight, value)
        bar = QRectF(1, text_h + 4, self.width() - 2, max(14.0, self.height() - text_h - 8))
        p.fillRect(bar, QColor("#263238"))
        if self.band:
            lo, hi = self.band
            p.fillRect(QRectF(QPointF(self._x(lo, bar), bar.top()), QPointF(self._x(hi, bar), bar.bottom())),
                       QColor(255, 179, 0, 90))
        if s is not None:
            colour = COLOURS[ModelState(s.state).value]
            p.fillRect(QRectF(bar.left(), bar.top() + 4, self._x(s.score, bar) - bar.left(), bar.height() - 8), colour)
            if s.score > self.SCALE_MAX:  # off the scale: an arrow at the end
                p.setPen(QPen(QColor("#ffffff"), 2))
                x = bar.right() - 4
                p.drawLine(QPointF(x - 8, bar.top() + 4), QPointF(x, bar.center().y()))
                p.drawLine(QPointF(x - 8, bar.bottom() - 4), QPointF(x, bar.center().y()))
        x1 = self._x(1.0, bar)
        p.setPen(QPen(QColor("#ffffff"), 3))
        p.drawLine(QPointF(x1, bar.top() - 3), QPointF(x1, bar.bottom() + 3))
        p.end()


class ScorePanel(QFrame):
    """A gauge per model of the active recipe."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("panel")
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(10, 8, 10, 8)
        self._layout.setSpacing(6)
        title = named(QLabel("Scores  (1.00 = limit)"), "panelTitle")
        self.setToolTip("Each model's score divided by its limit. Inside the shaded zone the model is "
                        "unsure and the part goes to REVIEW.")
        self._layout.addWidget(title)
        note = named(QLabel("shaded: unsure zone, the part goes to review"), "panelNote")
        self._layout.addWidget(note)
        self.gauges: dict[str, ScoreGauge] = {}

    def set_recipe(self, recipe) -> None:
        for g in self.gauges.values():
            g.deleteLater()
        self.gauges = {}
        for model in recipe.models:
            g = ScoreGauge(model, self)
            g.set_band(recipe.threshold(model).band)
            self.gauges[model] = g
            self._layout.insertWidget(self._layout.count() - 1, g)

    def set_verdict(self, verdict) -> None:
        for s in verdict.scores:
            g = self.gauges.get(s.model)
            if g is not None:
                g.set_score(s)


class ShiftPanel(QFrame):
    """Inspected / Pass / Fail / Review / Yield since the shift started, and Reset shift."""

    reset_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("panel")
        grid = QGridLayout(self)
        grid.setContentsMargins(10, 8, 10, 8)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(2)
        self.title = named(QLabel("This shift"), "panelTitle")
        self.reset_button = named(QPushButton("Reset shift"), "smallButton")
        self.reset_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.reset_button.clicked.connect(self.reset_requested)
        grid.addWidget(self.title, 0, 0, 1, 2)
        grid.addWidget(self.reset_button, 0, 2, Qt.AlignmentFlag.AlignRight)
        self.values: dict[str, QLabel] = {}
        cells = [("inspected", "Inspected", None, 1, 0, 1), ("passed", "Pass", "PASS", 1, 1, 1),
                 ("failed", "Fail", "FAIL", 1, 2, 1), ("review", "Review", "REVIEW", 3, 0, 1),
                 ("yield", "Yield (pass share)", None, 3, 1, 2)]
        for key, text, verdict, row, col, span in cells:
            value = named(QLabel("0"), "counterValue")
            if verdict:
                value.setProperty("verdict", verdict)
            value.setProperty("long", False)
            value.setAlignment(Qt.AlignmentFlag.AlignCenter)
            value.setMinimumWidth(60)
            value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label = named(QLabel(text), "counterLabel")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(value, row, col, 1, span)
            grid.addWidget(label, row + 1, col, 1, span)
            self.values[key] = value
        for col in range(3):
            grid.setColumnStretch(col, 1)

    def _set(self, key: str, text: str) -> None:
        label = self.values[key]
        if label.text() == text:
            return
        long = len(text) > 6  # 100,000 and up: a smaller font instead of clipped digits
        if label.property("long") != long:
            label.setProperty("long", long)
            repolish(label)
        label.setText(text)

    def set_counts(self, snap: ShiftSnapshot) -> None:
        self.title.setText(f"Shift since {snap.started_local}")
        for key, v in (("inspected", snap.inspected), ("passed", snap.passed), ("failed", snap.failed),
                       ("review", snap.review)):
            self._set(key, f"{v:,}")
        y = snap.yield_pct
        self._set("yield", "—" if y is None else f"{y:.1f} %")


class AlertBar(QFrame):
    """One plain-words message (warning or error) with a Dismiss button; hidden when empty.

    Its minimum height is that of ``LINES`` lines whatever it says, so the Live tab can keep the
    room for it (an alert appearing never makes the window taller); a longer message wraps on."""

    LINES = 2

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("alertBar")
        self.setProperty("level", "warning")
        self.label = plain(named(QLabel(""), "alertText"))
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        dismiss = QPushButton("Dismiss")
        dismiss.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        dismiss.clicked.connect(self.clear)
        self.dismiss = dismiss
        self._row = row = QHBoxLayout(self)
        row.setContentsMargins(14, 6, 8, 6)
        row.addWidget(self.label, 1)
        row.addWidget(dismiss)
        self.hide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - the same for every message, shown or not
        self.ensurePolished()
        m = self.contentsMargins() + self._row.contentsMargins()
        inner = max(self.dismiss.minimumSizeHint().height(), self.LINES * self.label.fontMetrics().lineSpacing())
        return QSize(super().minimumSizeHint().width(), m.top() + m.bottom() + inner)

    def show_message(self, text: str, level: str = "warning") -> None:
        if level != self.property("level"):
            self.setProperty("level", level)
            repolish(self)
        self.label.setText(text)
        self.show()

    def clear(self) -> None:
        self.label.setText("")
        self.hide()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" when it is narrower than its text, instead of making its
    window wider; then the full text is its tooltip. ``text()`` is always the full text."""

    MIN_WIDTH = 60

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), self.MIN_WIDTH), hint.height())

    def paintEvent(self, event) -> None:  # noqa: N802
        r = self.contentsRect()
        full = self.text()
        shown = self.fontMetrics().elidedText(full, Qt.TextElideMode.ElideRight, r.width())
        tip = full if shown != full else ""
        if self.toolTip() != tip:
            self.setToolTip(tip)
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(r, int(self.alignment()), shown)
        p.end()


class TaskBar(QFrame):
    """A long action in progress: its stage, a progress bar and Cancel (Esc)."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("taskBar")
        self.title = named(ElidedLabel(""), "taskTitle")
        self.stage = named(ElidedLabel(""), "taskStage")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.cancel = QPushButton("Cancel (Esc)")
        self.cancel.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.cancel.clicked.connect(self.cancel_requested)
        self._row = row = QHBoxLayout(self)
        row.setContentsMargins(14, 6, 8, 6)
        self._col = col = QVBoxLayout()
        col.addWidget(self.title)
        col.addWidget(self.stage)
        row.addLayout(col, 2)
        row.addWidget(self.bar, 3)
        row.addWidget(self.cancel)
        self.hide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - the same for every title and stage, shown or not
        self.ensurePolished()
        m = self.contentsMargins() + self._row.contentsMargins()
        text = (self.title.fontMetrics().height() + self.stage.fontMetrics().height() + max(0, self._col.spacing())
                + 2 * max(self.title.margin(), 0))
        inner = max(text, self.cancel.minimumSizeHint().height(), self.bar.minimumSizeHint().height())
        return QSize(super().minimumSizeHint().width(), m.top() + m.bottom() + inner)

    def start(self, title: str) -> None:
        self.title.setText(title)
        self.stage.setText("Starting…")
        self.bar.setValue(0)
        self.cancel.setEnabled(True)
        self.show()

    def progress(self, stage: str, fraction: float) -> None:
        self.stage.setText(f"{stage} — {fraction * 100:.0f} %")
        self.bar.setValue(int(round(1000 * fraction)))

    def cancelling(self) -> None:
        self.stage.setText("Cancelling…")
        self.cancel.setEnabled(False)

