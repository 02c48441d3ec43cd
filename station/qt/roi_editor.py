"""Draw a region of interest and ignore zones on a reference image, in the image's own pixels.

Drag with the mouse to draw a rectangle; the mode decides what it becomes: the region of interest
(one, green; a new one replaces it) or an ignore zone (any number, red). Delete / Backspace removes
the last ignore zone. Boxes are (x, y, w, h) in image pixels, clipped to the image, as
``core.trainer.TrainConfig.roi`` / ``ignore_zones`` expect.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView

Box = tuple[int, int, int, int]
MIN_SIDE = 4  # pixels: smaller drags are treated as clicks

ROI_PEN = QColor(30, 200, 60)
IGNORE_PEN = QColor(230, 40, 40)


class RoiEditor(QGraphicsView):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setBackgroundBrush(QBrush(QColor(40, 40, 40)))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumSize(320, 240)
        self._pixmap_item: QGraphicsPixmapItem | None = None
        self._size = (0, 0)
        self._mode = "roi"
        self._roi_item: QGraphicsRectItem | None = None
        self._ignore_items: list[QGraphicsRectItem] = []
        self._drag_start: QPointF | None = None
        self._drag_item: QGraphicsRectItem | None = None

    # -- public -------------------------------------------------------------------------------
    def set_image(self, image: QImage) -> None:
        self.scene().clear()
        self._roi_item, self._ignore_items, self._drag_item = None, [], None
        self._pixmap_item = self.scene().addPixmap(QPixmap.fromImage(image))
        self._size = (image.width(), image.height())
        self.scene().setSceneRect(QRectF(0, 0, image.width(), image.height()))
        self._fit()
        self.changed.emit()

    def image_size(self) -> tuple[int, int]:
        return self._size

    def set_mode(self, mode: str) -> None:
        if mode not in ("roi", "ignore"):
            raise ValueError("mode must be 'roi' or 'ignore'")
        self._mode = mode

    def roi(self) -> Box | None:
        return self._box(self._roi_item) if self._roi_item is not None else None

    def ignore_zones(self) -> list[Box]:
        return [self._box(i) for i in self._ignore_items]

    def set_roi(self, box: Box | None) -> None:
        if self._roi_item is not None:
            self.scene().removeItem(self._roi_item)
            self._roi_item = None
        if box is not None:
            self._roi_item = self._add(QRectF(*box), "roi")
        self.changed.emit()

    def add_ignore_zone(self, box: Box) -> None:
        self._ignore_items.append(self._add(QRectF(*box), "ignore"))
        self.changed.emit()

    def clear(self) -> None:
        self.set_roi(None)
        for item in self._ignore_items:
            self.scene().removeItem(item)
        self._ignore_items = []
        self.changed.emit()

    def remove_last_ignore_zone(self) -> None:
        if self._ignore_items:
            self.scene().removeItem(self._ignore_items.pop())
            self.changed.emit()

    # -- drawing ------------------------------------------------------------------------------
    def _add(self, rect: QRectF, kind: str) -> QGraphicsRectItem:
        colour = ROI_PEN if kind == "roi" else IGNORE_PEN
        pen = QPen(colour, 2)
        pen.setCosmetic(True)  # constant width on screen, whatever the zoom
        fill = QColor(colour)
        fill.setAlpha(30 if kind == "roi" else 90)
        item = self.scene().addRect(self._clip(rect), pen, QBrush(fill))
        item.setZValue(2 if kind == "ignore" else 1)
        return item

    def _clip(self, rect: QRectF) -> QRectF:
        r = rect.normalized().intersected(QRectF(0, 0, *self._size))
        x0, y0 = round(r.left()), round(r.top())
        return QRectF(x0, y0, round(r.right()) - x0, round(r.bottom()) - y0)

    @staticmethod
    def _box(item: QGraphicsRectItem) -> Box:
        r = item.rect()
        return int(r.x()), int(r.y()), int(r.width()), int(r.height())

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self._pixmap_item is None or event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        self._drag_start = self.mapToScene(event.position().toPoint())
        self._drag_item = self._add(QRectF(self._drag_start, self._drag_start), self._mode)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is None or self._drag_item is None:
            return super().mouseMoveEvent(event)
        here = self.mapToScene(event.position().toPoint())
        self._drag_item.setRect(self._clip(QRectF(self._drag_start, here)))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is None or self._drag_item is None:
            return super().mouseReleaseEvent(event)
        item, self._drag_item, self._drag_start = self._drag_item, None, None
        r = item.rect()
        if r.width() < MIN_SIDE or r.height() < MIN_SIDE:
            self.scene().removeItem(item)
            return
        if self._mode == "roi":
            if self._roi_item is not None:
                self.scene().removeItem(self._roi_item)
            self._roi_item = item
        else:
            self._ignore_items.append(item)
        self.changed.emit()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.remove_last_ignore_zone()
        else:
            super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self._pixmap_item is not None:
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
