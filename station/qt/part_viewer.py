"""One inspected part on screen: the image, each model's heatmap, the verdict and its reasons.

``PartView`` is the widget (the review queue embeds it); ``PartViewer`` is the dialog that history,
batch and review open on double-click. Both take a store record (a dict as returned by
``ResultsStore.query_inspections``); images and maps are read and blended in a background task,
never in the UI thread.

Heatmaps come from the maps saved beside the image (``station.evidence.load_maps``), blended with
``core.overlay.blend`` on its fixed colour scale; when no maps were kept, the saved heatmap PNG is
shown instead.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QImage, QKeySequence, QPainter, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget,
)

from core.anomaly_map import region_of
from core.images import ImageError, load_image
from core.store import StoredInspection
from station.context import StationContext
from station.evidence import load_maps
from station.qt.screen_fit import fit_to_screen
from station.qt.workflow_common import (
    ALL_MODELS, VERDICT_COLOURS, LatestRunner, local_time, model_label, overlay_small,
    record_in_words, scale_font, scores_in_words, shrink, status_style, to_qimage,
)

log = logging.getLogger(__name__)

VIEW_MAX_SIDE = 1200  # display copies are at most this big: memory stays small for 20 MP images


@dataclass(frozen=True)
class PartImages:
    """Display-ready images of one part: ((caption, QImage), ...) and what could not be shown."""

    views: tuple[tuple[str, QImage], ...]
    message: str = ""


def region_in(image_hw: tuple[int, int], amap: np.ndarray, level: float) -> tuple[int, int, int, int] | None:
    """The hot region of ``amap`` in image pixels; the map may be smaller than the image (batch
    maps come at the working size), it covers the whole image either way."""
    region = region_of(np.asarray(amap, np.float32), level)
    if region is None or tuple(amap.shape[:2]) == tuple(image_hw):
        return region
    sy, sx = image_hw[0] / amap.shape[0], image_hw[1] / amap.shape[1]
    x, y, w, h = region
    x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
    return x0, y0, max(1, int(np.ceil((x + w) * sx)) - x0), max(1, int(np.ceil((y + h) * sy)) - y0)


def views_from_arrays(image: np.ndarray, maps: dict, decision: str | None = None,
                      bands: dict | None = None, max_side: int = VIEW_MAX_SIDE) -> list[tuple[str, QImage]]:
    """Part + one blended heatmap per model. ``bands``: model -> normalised band low (outline)."""
    small = shrink(image, max_side)
    views = [("Part", to_qimage(small))]
    for m in ALL_MODELS:
        amap = maps.get(m)
        if amap is None:
            continue
        region = None
        level = (bands or {}).get(m)
        if m == "patchcore" and level is not None:
            region = region_in(image.shape[:2], amap, float(level))
        views.append((f"{model_label(m)} heatmap",
                      to_qimage(overlay_small(image, amap, max_side, region, decision))))
    return views


def load_part_images(record: StoredInspection, max_side: int = VIEW_MAX_SIDE) -> PartImages:
    """Read a stored part's image, maps or heatmap (runs in a worker thread)."""
    image_path = record.image_path or ""
    heatmap_path = record.heatmap_path or ""
    decision = record.verdict or None
    bands = {m: s.band[0] for m, s in record.scores.items()}
    views: list[tuple[str, QImage]] = []
    problems = []
    image = None
    if image_path:
        try:
            image = load_image(image_path)
        except ImageError as exc:
            problems.append(f"The image cannot be shown: {exc.message}")
    else:
        problems.append("The image of this part was not kept.")
    maps: dict = {}
    if image is not None:
        try:
            maps = load_maps(image_path)
        except (OSError, ValueError) as exc:
            log.warning("Maps of %s unreadable: %s", image_path, exc)
        maps = {k: v for k, v in maps.items() if v.ndim == 2}
        views = views_from_arrays(image, maps, decision, bands, max_side)
    if not maps and heatmap_path and os.path.isfile(heatmap_path):
        try:
            views.append(("Heatmap", to_qimage(shrink(load_image(heatmap_path), max_side))))
        except ImageError as exc:
            problems.append(f"The heatmap cannot be shown: {exc.message}")
    elif not maps and image is not None:
        problems.append("No heatmaps were kept for this part.")
    return PartImages(tuple(views), " ".join(problems))


class ImageView(QWidget):
    """Paints a pixmap scaled to fit, aspect kept, centred."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._pixmap = QPixmap()
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)

    def set_image(self, image: QImage | None) -> None:
        self._pixmap = QPixmap.fromImage(image) if image is not None and not image.isNull() else QPixmap()
        self.update()

    def has_image(self) -> bool:
        return not self._pixmap.isNull()

    def sizeHint(self) -> QSize:
        return QSize(360, 300)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._pixmap.isNull():
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        pw, ph = self._pixmap.width(), self._pixmap.height()
        s = min(self.width() / pw, self.height() / ph)
        w, h = pw * s, ph * s
        p.drawPixmap(QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h), self._pixmap,
                     QRectF(0, 0, pw, ph))
        p.end()


class PartView(QWidget):
    """Verdict, images side by side, reasons in words. ``show_record(record)`` fills it."""

    images_loaded = Signal()

    def __init__(self, parent: QWidget | None = None,
                 loader: Callable[[StoredInspection], PartImages] = load_part_images):
        super().__init__(parent)
        self._loader = loader
        self._record: StoredInspection | None = None
        self.verdict_label = QLabel()
        scale_font(self.verdict_label, 1.8, bold=True)
        self.title_label = QLabel()
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.title_label.setWordWrap(True)
        head = QHBoxLayout()
        head.addWidget(self.verdict_label)
        head.addSpacing(16)
        head.addWidget(self.title_label, 1)

        self._views_box = QHBoxLayout()
        self._views: list[tuple[QLabel, ImageView]] = []
        self.reasons_label = QLabel()
        self.reasons_label.setWordWrap(True)
        scale_font(self.reasons_label, 1.3)
        self.scores_label = QLabel()
        scale_font(self.scores_label, 1.1)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setStyleSheet(status_style("warn"))
        # file names, product names and operator notes are shown as they are: never as markup
        # (a QLabel guesses rich text from the first "<tag", so a note "<img src=...>" would load it)
        for label in (self.verdict_label, self.title_label, self.reasons_label, self.scores_label,
                      self.message_label):
            label.setTextFormat(Qt.TextFormat.PlainText)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(head)
        lay.addLayout(self._views_box, 1)
        lay.addWidget(self.reasons_label)
        lay.addWidget(self.scores_label)
        lay.addWidget(self.message_label)

        self._runner = LatestRunner(self)
        self._runner.succeeded.connect(self._on_loaded)
        self._runner.failed.connect(self._on_failed)

    # -- public -------------------------------------------------------------------------------
    def record(self) -> StoredInspection | None:
        return self._record

    def busy(self) -> bool:
        return self._runner.busy()

    def view_captions(self) -> list[str]:
        return [cap.text() for cap, view in self._views if view.has_image() and not cap.isHidden()]

    def clear(self, text: str = "") -> None:
        self._record = None
        self.verdict_label.setText("")
        self.title_label.setText(text)
        self.reasons_label.setText("")
        self.scores_label.setText("")
        self.message_label.setText("")
        self._show_views(())

    def show_record(self, record: StoredInspection) -> None:
        self._record = record
        decision = record.verdict
        if record.error:
            self.verdict_label.setText("NOT INSPECTED")
            self.verdict_label.setStyleSheet("color: #777;")
        else:
            colour = VERDICT_COLOURS.get(decision)
            self.verdict_label.setText(decision)
            self.verdict_label.setStyleSheet(f"color: {colour.name()};" if colour else "")
        bits = [os.path.basename(record.source or record.image_path or "") or "part"]
        if record.ts:
            bits.append(local_time(record.ts))
        if record.recipe:
            bits.append(f"recipe {record.recipe} v{record.recipe_version}")
        if record.review:
            bits.append(f"operator said: {record.review}" + (f" ({record.review_note})" if record.review_note else ""))
        self.title_label.setText("   ·   ".join(bits))
        self.reasons_label.setText("\n".join(record_in_words(record)))
        self.scores_label.setText(scores_in_words(record.scores))
        self.message_label.setText("Loading the images…")
        loader = self._loader
        self._runner.request(self._key(record), lambda progress, cancelled, r=record: loader(r))

    @staticmethod
    def _key(record: StoredInspection):
        return record.id if record.id is not None else ("unstored", id(record))

    def shutdown(self) -> None:
        self._runner.shutdown()

    # -- private ------------------------------------------------------------------------------
    def _on_loaded(self, key, images: PartImages) -> None:
        if self._record is None or key != self._key(self._record):
            return
        self._show_views(images.views)
        self.message_label.setText(images.message)
        self.images_loaded.emit()

    def _on_failed(self, key, message: str) -> None:
        log.error("Could not show part %s: %s", key, message)
        self.message_label.setText(f"The images cannot be shown: {message}")
        self.images_loaded.emit()

    def _show_views(self, views) -> None:
        while len(self._views) < len(views):
            cap, view = QLabel(), ImageView()
            cap.setTextFormat(Qt.TextFormat.PlainText)
            cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
            scale_font(cap, 1.1, bold=True)
            col = QVBoxLayout()
            col.addWidget(cap)
            col.addWidget(view, 1)
            self._views_box.addLayout(col, 1)
            self._views.append((cap, view))
        for i, (cap, view) in enumerate(self._views):
            if i < len(views):
                cap.setText(views[i][0])
                view.set_image(views[i][1])
                cap.show()
                view.show()
            else:
                view.set_image(None)
                cap.hide()
                view.hide()


class PartViewer(QDialog):
    """A dialog showing one part (history, batch, review). Esc closes."""

    def __init__(self, context: StationContext | None, record: StoredInspection, parent: QWidget | None = None,
                 loader: Callable[[StoredInspection], PartImages] = load_part_images):
        super().__init__(parent)
        self.context = context
        self.setWindowTitle("Part " + os.path.basename(record.source or record.image_path or ""))
        self.view = PartView(self, loader)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.view, 1)
        lay.addWidget(buttons)
        QShortcut(QKeySequence(Qt.Key.Key_Space), self, self.reject)
        fit_to_screen(self, 1200, 700)  # or the screen, frame included, where that is smaller
        self.view.show_record(record)

    def done(self, result: int) -> None:
        self.view.shutdown()
        super().done(result)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.view.shutdown()
        super().closeEvent(event)
