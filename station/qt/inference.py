"""The inference worker: its own Inspector, the newest frame only, results back by signal.

    controller = InferenceController(recorder=Recorder(context))
    controller.inspection_ready.connect(...)       # InspectionResult (frozen), UI thread
    controller.inspection_recorded.connect(...)    # (row id, Inspection) once stored
    controller.start(); controller.set_recipe(recipe); ...; controller.stop()
    capture feeds controller.inbox.put_frame (thread-safe, newest wins)

Lifecycle of the worker (``InferenceWorker.run`` in its QThread): setup (thread limits) -> loop
(``InferenceInbox.next_job``: stop / build an Inspector for a new recipe / inspect a frame, then
emit, then record) -> teardown (drop the Inspector, emit ``finished``). The Inspector is built and
used only in the worker thread. The UI thread talks to the worker only through the inbox.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal

from core import overlay
from core.types import Frame, Inspection, frozen_array

from core.runtime import tune_for_inference
from station.part_tracker import Observation, PartEvent, PartTracker
from station.mailbox import CONTINUOUS, InferenceInbox, RecordPolicy
from station.recording import Recorder

if TYPE_CHECKING:
    from core.engine import Inspector
    from core.recipe import Recipe

log = logging.getLogger(__name__)

NICE = 4  # the inference thread's nice value (Linux), above the UI thread's 0
ERROR_REPEAT_S = 10.0  # the same error message reaches the window at most once per this period


_BLAS: list[Any] = []  # [threadpoolctl.ThreadpoolController or None] once scanned


def blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, scanned once, on the calling thread.

    Call it from the UI thread before starting workers: the scan walks the loaded libraries under
    the dynamic loader's lock and calls back into Python, which deadlocks if another thread holds
    the GIL while it loads a library (an import in a Task thread). Limiting threads later with the
    scanned controller does not walk the libraries again.
    """
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except Exception:  # noqa: BLE001 - optional; only a speed matter
            _BLAS.append(None)
    return _BLAS[0]


def default_threads() -> int:
    """Inference threads: $STATION_THREADS, else all cores but one (the UI keeps a core)."""
    env = os.environ.get("STATION_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class InspectionResult:
    """One verdict with the frame it belongs to and its overlay (blended once, in the worker)."""

    inspection: Inspection
    frame: Frame
    overlay: np.ndarray  # RGB uint8, read-only: heatmap over frame.image, region outlined
    trigger_id: int | None = None  # the trigger this answers (triggered mode)
    taken_at: float = 0.0  # time.perf_counter() when the worker took the frame
    part: Observation | None = None  # continuous mode: the part tracker's view (None: triggered)

    def __post_init__(self) -> None:
        frozen_array(self.overlay)


@dataclass(frozen=True)
class LoadedRecipe:
    """A recipe the worker has built an Inspector for (its thresholds are now in force)."""

    recipe: Recipe  # read-only from here on
    backend: str
    fallback_reason: str | None
    seconds: float

    @property
    def label(self) -> str:
        return self.recipe.label


def _default_factory(threads: int) -> Callable:
    def build(recipe):
        from core.engine import Inspector  # torch import: only in the worker thread

        return Inspector(recipe, threads=threads)

    return build


class InferenceWorker(QObject):
    """Lives in the inference QThread; see the module docstring."""

    inspection_ready = Signal(object)  # InspectionResult
    inspection_recorded = Signal(int, object)  # row id, Inspection
    inspection_failed = Signal(int, str)  # trigger id (-1: none), message
    recipe_loaded = Signal(object)  # LoadedRecipe
    recipe_failed = Signal(str)
    error_occurred = Signal(str)
    finished = Signal()

    def __init__(self, inbox: InferenceInbox, recorder: Recorder | None, factory: Callable, threads: int):
        super().__init__()
        self._inbox = inbox
        self._recorder = recorder
        self._factory = factory
        self._threads = threads
        self._inspector: Inspector | None = None
        self._tracker = PartTracker()  # continuous mode: one record per part (station.part_tracker)
        self._limits = None
        self._reported: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._setup()
            while True:
                job = self._inbox.next_job(ready=self._inspector is not None, timeout=1.0)
                if job is None:
                    continue
                if job.kind == "stop":
                    break
                if job.kind == "recipe":
                    self._load(job.recipe)
                else:
                    assert job.frame is not None  # a "frame" job always carries its frame
                    self._inspect(job.frame, job.trigger_id, job.part_id)
        except Exception as exc:  # noqa: BLE001 - the loop itself broke: say so, log it all
            log.exception("The inspection worker stopped")
            self.error_occurred.emit(f"Inspection stopped after an unexpected error: {exc}. Restart the station.")
        finally:
            self._teardown()

    def _setup(self) -> None:
        threading.current_thread().name = "inference"  # for the log
        if NICE and hasattr(os, "setpriority"):  # Linux: per-thread nice value
            try:  # when cores are short, the UI thread wins: smooth video, slightly fewer verdicts
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
            except OSError:
                pass
        # the process's thread pools: this worker owns inference (one OpenCV thread, torch's pool
        # at the inference threads for the torch backend); the Inspector it builds changes none
        tune_for_inference(self._threads)
        blas = blas_controller()
        if blas is not None:  # NumPy's BLAS (nearest-neighbour search) would take every core
            try:
                self._limits = blas.limit(limits=self._threads, user_api="blas")
            except Exception:  # noqa: BLE001 - optional; only a speed matter
                self._limits = None

    def _teardown(self) -> None:
        self._inspector = None
        if self._limits is not None:
            self._limits.restore_original_limits()
        self.finished.emit()
        app = QCoreApplication.instance()
        if app is not None:  # hand the object back, so it is deleted in a living thread
            self.moveToThread(app.thread())

    # -- jobs -----------------------------------------------------------------------------
    def _load(self, recipe) -> None:
        t0 = time.perf_counter()
        label = getattr(recipe, "label", "recipe")
        try:
            inspector = self._factory(recipe)
        except Exception as exc:  # noqa: BLE001 - RecipeError or worse: keep the old inspector
            log.exception("Building the inspector for %s failed", label)
            self.recipe_failed.emit(f"The recipe {label} cannot be used: {exc}")
            return
        self._inspector = inspector
        self._tracker.reset()  # a new recipe judges the part under the camera again
        loaded = LoadedRecipe(recipe, getattr(inspector, "backend", "?"),
                              getattr(inspector, "fallback_reason", None), time.perf_counter() - t0)
        log.info("Inspector ready for %s (%s, %.1f s)", label, loaded.backend, loaded.seconds)
        self.recipe_loaded.emit(loaded)

    def _inspect(self, frame: Frame, trigger_id: int | None, part_id: str | None = None) -> None:
        taken = time.perf_counter()
        try:
            inspector = self._inspector
            assert inspector is not None  # next_job(ready=...) hands out frames only once there is one
            inspection = inspector.inspect(frame.image, source=frame.source, frame_id=frame.frame_id)
            amap = inspection.maps.get("patchcore")
            shown = frame.image if amap is None else overlay.blend(
                frame.image, amap, inspection.region, inspection.decision.value)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the line
            log.exception("Inspecting frame %s failed", frame.frame_id)
            message = f"This image could not be inspected: {exc}"
            self.inspection_failed.emit(-1 if trigger_id is None else trigger_id, message)
            self._report(message)
            return
        part = self._tracker.observe(frame.image, inspection) if trigger_id is None else None
        self.inspection_ready.emit(InspectionResult(inspection, frame, shown, trigger_id, taken, part))
        policy = self._inbox.policy
        if self._recorder is None or not policy.enabled:
            return
        if part is not None and policy.one_per_part and part.event is not PartEvent.NEW_PART:
            return  # continuous mode: the part was recorded when it settled (or there is none)
        # part_id: the line's id of the part the trigger named, recorded with its row (here, off the UI thread)
        outcome = self._recorder.record(inspection, frame.image, policy, blended=shown, part_id=part_id)
        if outcome.inspection_id is not None:
            self.inspection_recorded.emit(outcome.inspection_id, inspection)
        if outcome.problem:
            self._report(outcome.problem)

    def _report(self, message: str) -> None:
        now = time.monotonic()
        if now - self._reported.get(message, -1e9) >= ERROR_REPEAT_S:
            self._reported[message] = now
            self.error_occurred.emit(message)


class InferenceController(QObject):
    """UI-thread owner of the inference thread; all its signals arrive in the UI thread."""

    inspection_ready = Signal(object)
    inspection_recorded = Signal(int, object)
    inspection_failed = Signal(int, str)
    recipe_loaded = Signal(object)
    recipe_failed = Signal(str)
    error_occurred = Signal(str)

    def __init__(self, recorder: Recorder | None = None, inspector_factory: Callable | None = None,
                 mode: str = CONTINUOUS, policy: RecordPolicy | None = None, threads: int | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.threads = threads or default_threads()
        blas_controller()  # scan now, on this (UI) thread: see blas_controller
        self.inbox = InferenceInbox(mode, policy or RecordPolicy(mode=mode))
        self._recorder = recorder
        self._factory = inspector_factory or _default_factory(self.threads)
        self._thread: QThread | None = None
        self._worker: InferenceWorker | None = None
        self.loaded: LoadedRecipe | None = None
        self.recipe_loaded.connect(self._remember)

    def _remember(self, loaded: LoadedRecipe) -> None:
        self.loaded = loaded

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = QThread()
        self._thread.setObjectName("station-inference")
        self._worker = InferenceWorker(self.inbox, self._recorder, self._factory, self.threads)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        for name in ("inspection_ready", "inspection_recorded", "inspection_failed",
                     "recipe_loaded", "recipe_failed", "error_occurred"):
            getattr(self._worker, name).connect(getattr(self, name))
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def stop(self, wait_ms: int = 10000) -> bool:
        """Stop the worker and wait for its thread (window close). True when it has ended."""
        self.inbox.stop()
        if self._thread is None:
            return True
        self._thread.quit()
        ended = self._thread.wait(wait_ms)
        if not ended:
            log.error("The inference thread did not stop within %d ms", wait_ms)
        else:
            self._thread = None
            self._worker = None
        return ended

    # -- thread-safe requests (through the inbox) -------------------------------------------
    def set_recipe(self, recipe) -> None:
        self.inbox.request_recipe(recipe)

    def set_mode(self, mode: str) -> None:
        self.inbox.set_mode(mode)

    def set_policy(self, policy: RecordPolicy) -> None:
        self.inbox.set_policy(policy)

    def set_paused(self, paused: bool) -> None:
        self.inbox.set_paused(paused)

    def trigger(self, part_id: str | None = None) -> int | None:
        """Triggered mode: inspect the next frame; ``part_id`` (the line's) is recorded with it."""
        return self.inbox.trigger(part_id)

    def cancel_trigger(self) -> bool:
        return self.inbox.cancel_trigger()
