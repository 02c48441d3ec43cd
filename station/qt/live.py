"""The live session: source -> capture thread -> newest frame -> inference worker -> results.

``LivePipeline`` is the model behind the main window (no widgets here). It owns the capture and
inference threads, the long background jobs (first-run demo recipe, recipe loading) and the shift
counters, and re-emits everything as UI-thread signals. Other widgets connect to these signals
(``window.pipeline``); they never touch the worker threads.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal

from station.qt.capture import CaptureController
from station.api_station import StationApi
from station.context import StationContext
from station.qt.inference import InferenceController, InspectionResult, LoadedRecipe
from station.live_state import LiveState, LiveStateMachine, Shown, SourceState
from station.mailbox import MODES, TRIGGERED
from station.outbox import LineOutputs, TriggerAnswer, TriggerRequest
from station.recording import Recorder, RecordPolicy
from station.retention import Housekeeper
from station.shift import ShiftCounters
from station.sources import make_source
from station.sweep import startup_sweep
from station.qt.tasks import Task

log = logging.getLogger(__name__)

SOURCE_DOWN = (SourceState.LOST, SourceState.FAILED, SourceState.STOPPED)
TRIGGER_PATIENCE_MS = 3000  # after this, "Inspecting…" says what it is waiting for
LINE_TRIGGER_ANSWER_S = 5.0  # a trigger from the line that the UI thread has not taken by then is refused


class LivePipeline(QObject):
    frame_captured = Signal(object)  # core.types.Frame (at most a couple in flight; frames get skipped when busy)
    source_status_changed = Signal(str, str)  # state (opening/running/lost/back/stopped/failed), message
    inspection_ready = Signal(object)  # InspectionResult
    inspection_recorded = Signal(int, object)  # store row id, Inspection
    inspection_failed = Signal(int, str)  # trigger id (-1: none), message
    recipe_changed = Signal(object)  # LoadedRecipe: its Inspector is ready, verdicts follow
    state_changed = Signal(str, str)  # a station.live_state.LiveState value, message
    task_started = Signal(str)  # title of a long action (Esc cancels it)
    task_progressed = Signal(str, float)  # stage, fraction 0..1
    task_ended = Signal(str, str)  # "succeeded" | "failed" | "cancelled", message
    trigger_changed = Signal(bool)  # True while a triggered inspection is awaited
    mode_changed = Signal(str)
    shift_changed = Signal(object)  # ShiftSnapshot
    error_occurred = Signal(str)  # plain words, also logged
    disk_changed = Signal(object)  # station.retention.DiskStatus, every half minute
    _line_trigger = Signal(object)  # (TriggerRequest, Future): a trigger from the line, to the UI thread

    def __init__(self, context: StationContext, force_demo: bool = False,
                 inspector_factory: Callable | None = None, source_factory: Callable | None = None,
                 record: bool = True, parent: QObject | None = None):
        super().__init__(parent)
        self.context = context
        self.force_demo = force_demo
        self._source_factory = source_factory or (lambda s: make_source(s, force_demo=self.force_demo))
        s = context.settings
        mode = s.live_mode
        policy = RecordPolicy.from_settings(s)
        if not record:
            policy = dataclasses.replace(policy, enabled=False)
        self._record = record
        self.inference = InferenceController(Recorder(context), inspector_factory, mode, policy, parent=self)
        self.capture = CaptureController(sink=self.inference.inbox.put_frame, parent=self)
        self.shift = ShiftCounters(context.config_dir)
        self.housekeeper = Housekeeper(  # the retention policy and the disk check, on their own thread
            context.evidence, lambda: context.settings.retention(),
            lambda: [r.image_path for r in context.store.pending_reviews() if r.image_path],
            self.disk_changed.emit, startup=lambda: startup_sweep(context))  # first: what a kill left behind
        # results to the line (MQTT, Modbus): one delivery thread per enabled output, fed by the
        # store's outbox; the status bar reads ``line.snapshot()`` (never the network or the store)
        # triggers from the line (MQTT command, Modbus trigger, OPC UA Inspect) come through one hook,
        # ``_trigger_from_line`` (any thread), and are taken on the UI thread by ``request_trigger``
        self.line = LineOutputs(context.store, on_trigger=self._trigger_from_line, config_dir=context.config_dir)
        self._line_waiting: set[Future] = set()
        # the local inspection API, when Settings > Inspection API switches it on (station.api_station)
        self.api = StationApi(context)
        self._line_trigger.connect(self._on_line_trigger, Qt.ConnectionType.QueuedConnection)
        self.loaded: LoadedRecipe | None = None
        self.states = LiveStateMachine()  # the one state machine of the live station (station.live_state)
        self._task: Task | None = None
        self._task_title = ""
        self._finishing: set[Task] = set()
        self._pending_trigger: int | None = None
        self._persist_next_load = False
        self._closing = False
        self._trigger_timer = QTimer(self, singleShot=True, interval=TRIGGER_PATIENCE_MS)
        self._trigger_timer.timeout.connect(self._trigger_slow)

        self.capture.frame_captured.connect(self.frame_captured)
        self.capture.status_changed.connect(self.source_status_changed)
        self.capture.status_changed.connect(self._on_source_status)
        inf = self.inference
        inf.inspection_ready.connect(self._on_ready)
        inf.inspection_recorded.connect(self._on_recorded)
        inf.inspection_failed.connect(self._on_failed)
        inf.recipe_loaded.connect(self._on_recipe_loaded)
        inf.recipe_failed.connect(self._on_recipe_failed)
        inf.error_occurred.connect(self._error)
        self.state_changed.connect(self._line_outputs_follow)
        self.trigger_changed.connect(self._line_outputs_follow)
        self.source_status_changed.connect(self._line_outputs_follow)

    # -- properties -------------------------------------------------------------------------
    @property
    def state(self) -> LiveState:
        return self.states.state

    @property
    def mode(self) -> str:
        return self.inference.inbox.mode

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    @property
    def current_recipe(self):
        """The core.recipe.Recipe whose verdicts are shown (None before one is ready)."""
        return self.loaded.recipe if self.loaded else None

    @property
    def source(self):
        return self.capture.source

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def paused(self) -> bool:
        return bool(self.states.holds)

    @property
    def trigger_pending(self) -> bool:
        return self._pending_trigger is not None

    # -- start / stop -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the source and the worker, then find (or build) a recipe in the background."""
        self.inference.start()
        self.housekeeper.start()
        if self._record:
            self.line.apply(self.context.settings)
        self.start_source()
        self._api_follows()
        self._show(self.states.starting())
        shift, context = self.shift, self.context

        def startup(progress, cancelled):
            progress("Reading this shift's results", 0.2)
            counts = shift.counts_in_store(context.store)
            progress("Loading the product recipe", 0.5)
            return counts, context.active_recipe()

        self._run_task("Starting", startup, self._started, quiet=True)

    def start_source(self) -> None:
        try:
            source = self._source_factory(self.context.settings)
        except Exception as exc:  # noqa: BLE001 - a bad setting must not stop the station
            log.exception("Cannot create the image source")
            self._error(f"The image source cannot be used: {exc}. Check File > Settings.")
            return
        self.capture.start(source)

    def shutdown(self) -> None:
        """Stop everything and wait for every thread (window close)."""
        self._closing = True
        self._trigger_timer.stop()
        for fut in list(self._line_waiting):  # a delivery worker waiting for an answer gets one now
            if fut.set_running_or_notify_cancel():
                fut.set_result(TriggerAnswer(False, "the station is closing"))
        self._line_waiting.clear()
        for task in [self._task, *self._finishing]:
            if task is not None:
                task.shutdown()
        self._task = None
        self._finishing.clear()
        self.capture.stop()
        self.inference.stop()
        self.housekeeper.stop()
        self.line.close(timeout=3.0)  # each output says goodbye (MQTT offline, Modbus ready off)
        self.api.close()

    # -- recipes ----------------------------------------------------------------------------
    def _started(self, result) -> None:
        counts, recipe = result
        self.shift.restore(counts)
        self.shift_changed.emit(self.shift.snapshot())
        self._report_skipped()
        if recipe is not None:
            self._use(recipe)
        elif getattr(self.source, "kind", "") == "demo":
            self.build_demo_recipe()
        else:
            self._show(self.states.no_recipe())

    def _use(self, recipe) -> None:
        self._show(self.states.loading(recipe.label))
        self.inference.set_recipe(recipe)

    def load_recipe(self, product: str, version: int | None = None) -> bool:
        """Switch to a saved recipe (loaded and verified off the UI thread)."""
        context = self.context
        self._persist_next_load = True

        def loaded(recipe) -> None:
            self._report_skipped()
            self._use(recipe)

        return self._run_task(f"Loading {product}", lambda p, c: context.load_recipe(product, version), loaded)

    def _report_skipped(self) -> None:
        """Name the recipes the last load passed over (damaged, hostile or unsigned) in the alert bar."""
        words = self.context.skipped_words()
        if words:
            self._error(words)

    def use_recipe(self, recipe, persist: bool = True) -> None:
        """Inspect with an in-memory recipe (e.g. a new threshold version just saved)."""
        self._persist_next_load = persist
        self._use(recipe)

    def build_demo_recipe(self) -> bool:
        root = self.context.recipes_root
        self._show(self.states.training("Building the demo recipe: the live view already shows the demo parts."))

        def build(progress, cancelled):
            from station import demo_recipe  # imports torch: in the task's thread, not at start-up

            return demo_recipe.build_demo_recipe(root, progress, cancelled)

        def built(recipe):
            self._persist_next_load = True
            self._use(recipe)

        return self._run_task("Building the demo recipe", build, built)

    def _on_recipe_loaded(self, loaded: LoadedRecipe) -> None:
        # Everything built so far (libraries, models, widgets) lives as long as the process: move
        # it out of the garbage collector's sight. A full collection walking it stalled every
        # thread, the UI thread included, for ~150 ms on a 2-core bench PC; now it only walks
        # what was made since (frames and results, short-lived). gc.freeze() itself is O(1).
        gc.freeze()
        self.loaded = loaded
        if self._persist_next_load:
            self._persist_next_load = False
            s = self.context.settings
            s.active_product, s.active_version = loaded.recipe.product, loaded.recipe.version
            self._save_settings()
        if loaded.fallback_reason:
            log.warning("%s runs on torch: %s", loaded.label, loaded.fallback_reason)
        self._show(self.states.recipe_ready(loaded.label))
        self.recipe_changed.emit(loaded)
        self._api_follows()

    def _on_recipe_failed(self, message: str) -> None:
        self._persist_next_load = False
        self._error(message)
        self._show(self.states.recipe_failed(message))

    # -- pausing ----------------------------------------------------------------------------
    def pause_inspection(self, key: str, why: str) -> None:
        """Stop inspecting (the camera keeps running) while ``key`` (e.g. a recipe being trained)
        needs the CPU: two cores cannot train and inspect at full speed at once."""
        first = not self.states.holds
        shown = self.states.hold(key, why)
        if first:
            self.inference.set_paused(True)
            self._clear_trigger()
        self._show(shown)

    def resume_inspection(self, key: str) -> None:
        shown = self.states.release(key)
        if shown is None:
            return
        if not self.states.holds:
            self.inference.set_paused(False)
        self._show(shown)

    # -- modes and triggers -----------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        if mode == self.mode:
            return
        self.inference.set_mode(mode)
        self._clear_trigger()
        self.context.settings.mode = mode
        self._save_settings()
        self.mode_changed.emit(mode)

    def trigger(self) -> bool:
        """Triggered mode: inspect the next captured frame once. False (and why) when it cannot."""
        return self.request_trigger()[0]

    def request_trigger(self, source: str = "operator", part_id: str | None = None) -> tuple[bool, str]:
        """``trigger`` with its answer: (accepted, why not in words). UI thread only. ``part_id``: the
        line's id of the part (a trigger from the line), recorded with the inspection that answers it."""
        if self._closing:
            return False, "the station is closing"
        if self.mode != TRIGGERED:
            return False, f"the station is not in triggered mode (it inspects {self.mode})"
        if self._pending_trigger is not None:
            return False, "a part is still being inspected (one trigger at a time)"  # its verdict is on its way
        if self.states.holds:
            why = next(iter(self.states.holds.values()))
            self._error(f"Inspection is paused: {why}")
            return False, f"inspection is paused: {why}"
        if not self.ready:
            self._error("No recipe is ready yet: wait until the recipe has loaded.")
            return False, "no recipe is ready yet"
        if self.capture.state in SOURCE_DOWN:
            name = getattr(self.source, "name", "The camera")
            self._error(f"{name} is not delivering images: the part was not inspected. "
                        + ("Press Space again when the picture is back." if source == "operator" else
                           f"(The trigger came from {source}.)"))
            return False, f"the camera is down ({name} is not delivering images)"
        tid = self.inference.trigger(part_id or None)  # the worker records the part id with the row
        if tid is None:
            return False, "the inspection worker did not take the trigger"
        fire = getattr(self.source, "software_trigger", None)
        if fire is not None:  # a camera in software-trigger mode takes its picture now (station/pylon_source.py)
            fire()
        self._pending_trigger = tid
        self._trigger_timer.start()
        self.trigger_changed.emit(True)
        return True, ""

    def _trigger_from_line(self, request: TriggerRequest) -> TriggerAnswer:
        """The line outputs' trigger hook (any thread): ask the UI thread (a queued signal), wait for
        its answer; one it has not started on within ``LINE_TRIGGER_ANSWER_S`` is refused, never lost."""
        if QThread.currentThread() is self.thread():
            ok, why = self.request_trigger(request.source, request.part_id)
            return TriggerAnswer(ok, why)
        if self._closing:
            return TriggerAnswer(False, "the station is closing")
        fut: Future = Future()
        self._line_waiting.add(fut)
        self._line_trigger.emit((request, fut))
        try:
            return fut.result(LINE_TRIGGER_ANSWER_S)
        except FutureTimeout:
            if fut.cancel():  # not taken yet: it never will be
                return TriggerAnswer(False, f"the station did not answer within {LINE_TRIGGER_ANSWER_S:.0f} s")
            return fut.result(LINE_TRIGGER_ANSWER_S)  # being taken right now: its answer is on the way
        except CancelledError:
            return TriggerAnswer(False, "the station is closing")
        finally:
            self._line_waiting.discard(fut)

    def _on_line_trigger(self, payload) -> None:
        request, fut = payload
        if not fut.set_running_or_notify_cancel():
            return  # the line gave up waiting (and was told so)
        try:
            ok, why = self.request_trigger(request.source, request.part_id)
        except Exception as exc:  # noqa: BLE001 - the line gets an answer whatever happened
            log.exception("A trigger from the line failed")
            fut.set_result(TriggerAnswer(False, f"the station could not take the trigger ({exc})"))
            return
        if ok:
            log.info("Trigger from %s%s accepted", request.source, f" (part {request.part_id})" if request.part_id else "")
        else:
            log.info("Trigger from %s refused: %s", request.source, why)
        fut.set_result(TriggerAnswer(ok, why))

    def _on_source_status(self, state: str, message: str) -> None:
        if state in SOURCE_DOWN and self._pending_trigger is not None:
            # a trigger must judge the part in front of the camera now, not whatever comes back later
            self._clear_trigger()
            self._error(f"The inspection was cancelled: {message}")

    def _trigger_slow(self) -> None:
        if self._pending_trigger is not None:
            self._error(f"Still waiting for an image from {getattr(self.source, 'name', 'the camera')} "
                        "(press Esc to cancel).")

    def _clear_trigger(self) -> None:
        self._trigger_timer.stop()
        if self._pending_trigger is not None:
            self._pending_trigger = None
            self.inference.cancel_trigger()
            self.trigger_changed.emit(False)

    def cancel_current(self) -> str | None:
        """Esc: cancel the long action that runs, else a pending trigger. Says what it cancelled."""
        if self._task is not None:
            self._task.cancel()
            return f"Cancelling: {self._task_title}…"
        if self._pending_trigger is not None:
            self._clear_trigger()
            return "Inspection cancelled."
        return None

    # -- settings ---------------------------------------------------------------------------
    def apply_settings(self, source_changed: bool = True) -> None:
        """After the settings dialog saved: new source, mode and recording policy."""
        s = self.context.settings
        policy = RecordPolicy.from_settings(s)
        if not self._record:
            policy = dataclasses.replace(policy, enabled=False)
        self.inference.set_policy(policy)
        self.housekeeper.poke()  # new retention limits take effect now
        if self._record:
            self.line.apply(s)  # outputs switched on, off or changed: started, stopped, restarted
        self._api_follows()
        if s.live_mode != self.mode:
            self.inference.set_mode(s.live_mode)
            self._clear_trigger()
            self.mode_changed.emit(s.live_mode)
        if source_changed:
            self.force_demo = False  # the operator chose a source: --demo no longer applies
            self.start_source()

    def _api_follows(self) -> None:
        """The inspection API as the settings say, with the recipe shown (started/stopped off this thread)."""
        if self._record and not self._closing:
            self.api.apply(self.context.settings, self.loaded.recipe if self.loaded is not None else None)

    def reset_shift(self) -> None:
        self.shift.reset()
        self.shift_changed.emit(self.shift.snapshot())

    def _save_settings(self) -> None:
        try:
            self.context.save_settings()
        except OSError as exc:
            log.exception("Saving the settings failed")
            self._error(f"The settings could not be saved ({exc.strerror or exc}).")

    # -- results ----------------------------------------------------------------------------
    def _on_ready(self, result: InspectionResult) -> None:
        if result.trigger_id is not None and result.trigger_id == self._pending_trigger:
            self._pending_trigger = None
            self._trigger_timer.stop()
            self.trigger_changed.emit(False)
        if not self._record:
            self.shift.add(result.inspection.decision)
            self.shift_changed.emit(self.shift.snapshot())
        self.inspection_ready.emit(result)

    def _on_recorded(self, row: int, inspection) -> None:
        self.shift.add(inspection.decision)
        self.shift_changed.emit(self.shift.snapshot())
        self.inspection_recorded.emit(row, inspection)

    def _on_failed(self, trigger_id: int, message: str) -> None:
        if trigger_id >= 0 and trigger_id == self._pending_trigger:
            self._pending_trigger = None
            self._trigger_timer.stop()
            self.trigger_changed.emit(False)
        self.inspection_failed.emit(trigger_id, message)

    def _line_outputs_follow(self, *_args) -> None:
        """The Modbus ready and busy coils: ready while parts are being judged, busy while a
        triggered part waits for its verdict."""
        ready = self.ready and self.state is LiveState.READY and self.capture.state not in SOURCE_DOWN
        self.line.set_outputs(ready=ready, busy=self.trigger_pending)

    # -- helpers ----------------------------------------------------------------------------
    def _show(self, shown: Shown) -> None:
        self.state_changed.emit(shown.state.value, shown.message)

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.error_occurred.emit(message)

    def _run_task(self, title: str, fn, on_success, quiet: bool = False) -> bool:
        if self._closing:
            return False
        if self._task is not None:
            self._error(f"Please wait: {self._task_title} is still running (Esc cancels it).")
            return False
        task = Task(fn, parent=self)
        self._task, self._task_title = task, title
        if not quiet:
            task.progressed.connect(self.task_progressed)
            self.task_started.emit(title)

        def succeeded(value):
            if not self._closing:
                self._end_task(task, "succeeded", f"{title}: done.", quiet)
                on_success(value)

        def failed(message):
            self._end_task(task, "failed", f"{title} failed: {message}", quiet)
            self._error(f"{title} failed: {message}")
            if not self._closing:
                self._show(self.states.task_ended(f"{title} failed: {message}"))

        def cancelled():
            self._end_task(task, "cancelled", f"{title}: cancelled.", quiet)
            if not self._closing:
                self._show(self.states.task_ended(f"{title} was cancelled. Product > Build demo recipe starts it again."))

        task.succeeded.connect(succeeded)
        task.failed.connect(failed)
        task.cancelled.connect(cancelled)
        task.start()
        return True

    def _end_task(self, task: Task, outcome: str, message: str, quiet: bool) -> None:
        if self._task is task:
            self._task = None
            # its function has returned; keep the object until its thread has ended
            self._finishing.add(task)
            task.finished.connect(lambda t=task: self._finishing.discard(t))
            if not task.is_running():
                self._finishing.discard(task)
        if not quiet and not self._closing:
            self.task_ended.emit(outcome, message)
