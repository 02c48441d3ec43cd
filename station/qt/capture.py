"""The capture thread: owns the source, paces itself to the source's fps, survives a lost camera.

    capture = CaptureController(sink=inference.inbox.put_frame)
    capture.frame_captured.connect(view.show_frame)      # core.types.Frame, UI thread
    capture.status_changed.connect(...)                   # (state, plain message)
    capture.start(source); ...; capture.stop()

Every frame is copied into a read-only ``Frame`` in the capture thread and goes two ways: into the
inference inbox (``sink``, newest wins) and to the window by the ``frame_captured`` signal. At most
``DISPLAY_IN_FLIGHT`` frames are on their way to the UI thread at any time: a busy window skips
frames instead of collecting a backlog of queued events.

Status states: ``opening``, ``running``, ``lost`` (read failed or the source could not be opened:
the thread retries with back-off), ``back`` (the source returned), ``stopped``. A source may say
why it was lost (``lost_reason``), what it could not set up (``notes``, in the running message),
and that a None from ``read`` only means it waits for a trigger (``waiting``: the read blocked for
a moment, the thread reads again; station/pylon_source.py).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Callable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from core.types import Frame

from station.live_state import SourceState
from station.sources import SourceError

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)  # waits between reopen attempts; the last one repeats
DISPLAY_IN_FLIGHT = 2


class CaptureWorker(QObject):
    """Lives in the capture QThread; ``run`` is its whole life."""

    frame_captured = Signal(object)  # Frame
    status_changed = Signal(str, str)  # state, message
    finished = Signal()

    def __init__(self, source, stop: threading.Event, sink: Callable[[Frame], None] | None,
                 display_slots: threading.Semaphore, ids: itertools.count, backoff=BACKOFF_S):
        super().__init__()
        self._source = source
        self._stop = stop
        self._sink = sink
        self.display_slots = display_slots
        self._ids = ids
        self._backoff = tuple(backoff)
        self.skipped_display = 0

    def run(self) -> None:
        src = self._source
        name = getattr(src, "name", "Source")
        opened, was_running, attempt = False, False, 0
        delivered = False
        dead_opens = 0  # opens in a row that gave no frame: a source that opens but never delivers
        period = 0.0
        deadline = time.monotonic()
        threading.current_thread().name = "capture"  # for the log
        try:
            self.status_changed.emit(SourceState.OPENING, f"Opening {name}…")
            while not self._stop.is_set():
                if not opened:
                    opened = self._try_open(src, name, was_running, attempt)
                    if not opened:
                        self._stop.wait(self._backoff[min(attempt, len(self._backoff) - 1)])
                        attempt += 1
                        continue
                    if was_running and dead_opens == 0:
                        self.status_changed.emit(SourceState.BACK, f"{name} back")
                    else:  # with what the source could not set up, in words (a GenICam camera's notes)
                        notes = " ".join(getattr(src, "notes", None) or ())
                        self.status_changed.emit(SourceState.RUNNING, f"{name} running" + (f". {notes}" if notes else ""))
                    was_running, attempt = True, 0
                    delivered = False
                    fps = float(getattr(src, "fps", 0.0) or 0.0)
                    period = 1.0 / fps if fps > 0 else 0.0
                    deadline = time.monotonic()
                try:
                    image = src.read()
                except Exception as exc:  # noqa: BLE001 - a driver error is a lost source
                    log.warning("%s: read failed: %s", name, exc)
                    image = None
                if image is None and getattr(src, "waiting", False):
                    continue  # a triggered camera waiting for its trigger: read blocked a moment, read again
                if image is None:
                    if dead_opens == 0:  # said once, not ~440 lines a second for a source that never delivers
                        why = str(getattr(src, "lost_reason", "") or "")  # a source that knows says why
                        log.warning("%s lost; reconnecting%s", name, f" ({why})" if why else "")
                        self.status_changed.emit(SourceState.LOST,
                                                 f"{name} lost" + (f" ({why})" if why else "") + " — reconnecting…")
                    self._close(src)
                    opened = False
                    if not delivered:  # opened, but nothing came: wait before the next try (no hot loop)
                        self._stop.wait(self._backoff[min(dead_opens, len(self._backoff) - 1)])
                        dead_opens += 1
                    continue
                if dead_opens:  # a source that opened without delivering has recovered
                    self.status_changed.emit(SourceState.BACK, f"{name} back")
                delivered, dead_opens = True, 0
                self._deliver(np.array(image, dtype=np.uint8, copy=True, order="C"), name)
                if period:
                    deadline += period
                    now = time.monotonic()
                    if deadline < now - period:  # fell behind (slow read): do not try to catch up
                        deadline = now
                    self._stop.wait(max(0.0, deadline - now))
        except Exception as exc:  # noqa: BLE001 - never take the app down from here
            log.exception("Capture thread failed")
            self.status_changed.emit(SourceState.FAILED, f"Image capture stopped after an error: {exc}")
        finally:
            self._close(src)
            self.status_changed.emit(SourceState.STOPPED, f"{name} stopped")
            self.finished.emit()
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())

    def _try_open(self, src, name: str, was_running: bool, attempt: int) -> bool:
        try:
            src.open()
            return True
        except Exception as exc:  # noqa: BLE001 - SourceError or a driver error
            msg = str(exc) if isinstance(exc, SourceError) else f"{name} could not be opened ({exc})."
            if attempt == 0:
                log.warning("%s: %s", name, msg)
                if not was_running:
                    self.status_changed.emit(SourceState.LOST, f"{msg} Retrying…")
            self._close(src)
            return False

    @staticmethod
    def _close(src) -> None:
        try:
            src.close()
        except Exception:  # noqa: BLE001
            log.exception("Closing the source failed")

    def _deliver(self, image: np.ndarray, name: str) -> None:
        frame = Frame(image=image, frame_id=next(self._ids), timestamp=time.time(), source=name)
        if self._sink is not None:
            self._sink(frame)
        if self.display_slots.acquire(blocking=False):
            self.frame_captured.emit(frame)
        else:
            self.skipped_display += 1


class CaptureController(QObject):
    """UI-thread owner of the capture thread. One source at a time; ``start`` replaces it."""

    frame_captured = Signal(object)  # Frame, in the UI thread
    status_changed = Signal(str, str)

    def __init__(self, sink: Callable[[Frame], None] | None = None, backoff=BACKOFF_S, parent: QObject | None = None):
        super().__init__(parent)
        self._sink = sink
        self.backoff = tuple(backoff)  # waits between reopen attempts (seconds)
        self._ids = itertools.count(1)  # frame ids stay unique across source changes
        self._thread: QThread | None = None
        self._worker: CaptureWorker | None = None
        self._stop_event: threading.Event | None = None
        self._retiring: dict[QThread, tuple] = {}  # replaced sources still finishing
        self.source = None
        self.state: str = SourceState.STOPPED  # a SourceState value (a plain str once it came through a signal)

    def start(self, source) -> None:
        """Capture from ``source``. A running source is told to stop and left to finish on its own
        (a camera read may block for a while): the UI thread does not wait for it here."""
        self._retire()
        self.source = source
        self._stop_event = threading.Event()
        slots = threading.BoundedSemaphore(DISPLAY_IN_FLIGHT)
        self._thread = QThread()
        self._thread.setObjectName("station-capture")
        self._worker = CaptureWorker(source, self._stop_event, self._sink, slots, self._ids, self.backoff)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._thread.finished.connect(self._reap)
        self._worker.frame_captured.connect(self._on_frame)
        self._worker.status_changed.connect(self._on_status)
        self._thread.start()

    def _retire(self) -> None:
        if self._thread is None:
            return
        assert self._stop_event is not None  # set together with _thread in start()
        self._stop_event.set()
        self._thread.quit()
        if self._thread.isRunning():
            self._retiring[self._thread] = (self._worker, self._stop_event)
        self._thread = self._worker = self._stop_event = None
        self.state = SourceState.STOPPED

    @Slot()
    def _reap(self) -> None:
        thread = self.sender()
        if thread in self._retiring and not thread.isRunning():
            del self._retiring[thread]

    @Slot(object)
    def _on_frame(self, frame: Frame) -> None:
        worker = self.sender()
        if isinstance(worker, CaptureWorker):
            worker.display_slots.release()  # this frame reached the UI thread: send another
        if worker is self._worker:  # a frame of a source being replaced is not shown
            self.frame_captured.emit(frame)

    @Slot(str, str)
    def _on_status(self, state: str, message: str) -> None:
        if self.sender() is not self._worker:
            return
        self.state = state
        self.status_changed.emit(state, message)

    def is_running(self) -> bool:
        """True while any capture thread (also one being replaced) still runs."""
        return (self._thread is not None and self._thread.isRunning()) or any(
            t.isRunning() for t in self._retiring)

    def stop(self, wait_ms: int = 10000) -> bool:
        """Stop and wait for the capture thread(s) (window close; a blocking camera read may
        take a moment). True when every thread has ended."""
        self._retire()
        ended = True
        for thread in list(self._retiring):
            if thread.wait(wait_ms):
                self._retiring.pop(thread, None)
            else:
                log.error("A capture thread did not stop within %d ms", wait_ms)
                ended = False
        return ended
