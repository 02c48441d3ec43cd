"""Small pieces the operator workflows share: plain words, image conversion, one-job-at-a-time runner.

Qt widgets live in the workflow modules; this one holds what more than one of them needs:

* what operators read lives in the Qt-free :mod:`station.wording` (re-exported here);
* :func:`to_qimage` (a QImage may be built in a worker thread; a QPixmap only in the UI thread);
  :func:`shrink` and :func:`thumbnail_png` come from the Qt-free :mod:`station.thumbnails`;
* :class:`LatestRunner`: runs :class:`station.qt.tasks.Task` jobs one at a time, newest request wins
  (the review queue, the viewer and the what-if dialog ask for work faster than it finishes).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage
from PySide6.QtWidgets import QWidget

from station.qt.tasks import Task
from station.thumbnails import overlay_small, shrink, thumbnail_png  # noqa: F401 - re-exported
from station.wording import (  # noqa: F401 - re-exported for the workflow widgets
    ALL_MODELS, STATE_WORDS, local_time, model_label, one_in, one_in_words, record_in_words, scores_in_words,
)

log = logging.getLogger(__name__)

VERDICT_COLOURS = {"PASS": QColor(40, 150, 60), "FAIL": QColor(200, 40, 40), "REVIEW": QColor(215, 140, 0)}
ERROR_COLOUR = QColor(120, 120, 120)


# -- images ------------------------------------------------------------------------------------
def to_qimage(rgb: np.ndarray) -> QImage:
    """RGB uint8 HxWx3 (or HxW) -> a QImage that owns its pixels (safe in any thread)."""
    a = np.ascontiguousarray(rgb)
    if a.ndim == 2:
        a = np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    h, w = a.shape[:2]
    return QImage(a.data, w, h, int(a.strides[0]), QImage.Format.Format_RGB888).copy()


# -- looks -------------------------------------------------------------------------------------
def scale_font(widget: QWidget, factor: float, bold: bool = False) -> None:
    f = QFont(widget.font())
    if f.pointSizeF() > 0:
        f.setPointSizeF(f.pointSizeF() * factor)
    else:
        f.setPixelSize(int(round(max(1, f.pixelSize()) * factor)))
    f.setBold(bold)
    widget.setFont(f)


def show_status(label, text: str, kind: str = "info") -> None:
    """Set an inline status line: 'info', 'ok', 'warn' or 'error'."""
    label.setText(text)
    label.setStyleSheet(status_style(kind))


def status_style(kind: str) -> str:
    """Style sheet for an inline status line: 'info', 'ok', 'warn' or 'error'."""
    colour = {"ok": "#1f7a33", "warn": "#a66300", "error": "#b3261e"}.get(kind, "")
    return f"color: {colour};" if colour else ""


# -- background work ---------------------------------------------------------------------------
_graveyard: list = []


def release_later(obj: QObject | None) -> None:
    """Drop the last reference to a finished Task after the current signal delivery, not during it."""
    if obj is None:
        return
    _graveyard.append(obj)
    QTimer.singleShot(0, lambda: _graveyard.remove(obj) if obj in _graveyard else None)


class ColumnsTableModel(QAbstractTableModel):
    """A table of ``COLUMNS`` over a list held in the attribute named by ``ITEMS``."""

    COLUMNS: tuple[str, ...] = ()
    ITEMS = "rows"

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(getattr(self, self.ITEMS))

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None


class LatestRunner(QObject):
    """Runs jobs as :class:`Task`\\ s, one at a time; a newer request replaces any waiting one.

    ``request(key, fn)`` with ``fn(progress, cancelled)``; results come back as
    ``succeeded(key, result)`` / ``failed(key, message)``, but only for the newest request: a job
    overtaken by a newer one is cancelled and its result dropped.
    """

    succeeded = Signal(object, object)
    failed = Signal(object, str)
    progressed = Signal(str, float)
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._task: Task | None = None
        self._key: Any = None
        self._pending: tuple[Any, Callable] | None = None
        self._serial = 0
        self._closed = False

    def busy(self) -> bool:
        return not self._closed and (self._task is not None or self._pending is not None)

    def request(self, key: Any, fn: Callable) -> None:
        if self._closed:
            return
        self._serial += 1
        if self._task is not None:
            self._pending = (key, fn)
            self._task.cancel()
            return
        self._start(key, fn)

    def _start(self, key: Any, fn: Callable) -> None:
        serial = self._serial
        task = Task(fn)
        self._task, self._key = task, key
        task.progressed.connect(self.progressed)
        task.succeeded.connect(lambda result: self._done(serial, key, result, None))
        task.failed.connect(lambda message: self._done(serial, key, None, message))
        task.finished.connect(self._finished)
        task.start()

    def _done(self, serial: int, key: Any, result: Any, message: str | None) -> None:
        if serial != self._serial or self._closed:
            return  # overtaken by a newer request
        if message is None:
            self.succeeded.emit(key, result)
        else:
            self.failed.emit(key, message)

    def _finished(self) -> None:
        # drop the finished task after its signals are delivered (not from inside them)
        release_later(self._task)
        self._task = None
        if self._pending is not None and not self._closed:
            key, fn = self._pending
            self._pending = None
            self._start(key, fn)
        elif self._task is None:
            self.idle.emit()

    def shutdown(self, msecs: int = 30000) -> None:
        """Cancel, wait for the running job, drop the waiting one (window close)."""
        self._closed = True
        self._pending = None
        if self._task is not None:
            self._task.shutdown(msecs)
