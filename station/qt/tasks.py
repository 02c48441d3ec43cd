"""Long work off the UI thread, with progress and Cancel.

    task = Task(lambda progress, cancelled: train_recipe(..., progress=progress, cancel=cancelled))
    task.progressed.connect(...)   # (stage text, fraction 0..1)
    task.succeeded.connect(...)    # the function's return value
    task.failed.connect(...)       # a message an operator can read
    task.cancelled.connect(...)
    task.start(); ...; task.cancel()

The function runs in a QThread; it receives a ``progress(stage, fraction)`` callable and a
``cancelled()`` callable to poll. Every result crosses back as a queued signal.
"""
from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from core.coreset import Cancelled

log = logging.getLogger(__name__)


class _Runner(QObject):
    progressed = Signal(str, float)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, fn: Callable, cancel_event: threading.Event):
        super().__init__()
        self._fn = fn
        self._cancel = cancel_event

    def run(self) -> None:
        try:
            result = self._fn(lambda stage, frac: self.progressed.emit(str(stage), float(frac)), self._cancel.is_set)
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - reported to the operator, logged in full
            log.error("Background task failed:\n%s", traceback.format_exc())
            self.failed.emit(str(exc) or exc.__class__.__name__)
        else:
            if self._cancel.is_set():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)


class Task(QObject):
    """One background job; create, connect, start. Not reusable."""

    progressed = Signal(str, float)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn: Callable[[Callable[[str, float], None], Callable[[], bool]], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("station-task")
        self._runner = _Runner(fn, self._cancel)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        for name in ("progressed", "succeeded", "failed", "cancelled"):
            getattr(self._runner, name).connect(getattr(self, name))
        for sig in (self._runner.succeeded, self._runner.failed, self._runner.cancelled):
            sig.connect(self._thread.quit)
        self._thread.finished.connect(self.finished)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, msecs: int = 30000) -> bool:
        return self._thread.wait(msecs)

    def shutdown(self, msecs: int = 30000) -> None:
        """Cancel and wait (window close): the thread never outlives its owner."""
        self.cancel()
        if self._thread.isRunning():
            self._thread.quit()
            self._thread.wait(msecs)
