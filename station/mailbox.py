"""The hand-over between the live side and the inference worker: newest frame wins.

``InferenceInbox`` is a one-slot mailbox (a lock and a condition, no queue). The capture thread
calls :meth:`InferenceInbox.put_frame`, which overwrites whatever frame is waiting; the worker
blocks in :meth:`InferenceInbox.next_job` and takes the newest frame when it is free. A frame the
worker never took is simply replaced (counted in ``dropped``): a 30 fps camera in front of a 50 ms
model never builds a backlog, and memory holds at most one waiting frame.

The same lock guards the few controls the UI thread hands to the worker (all thread-safe, none
blocks for longer than the lock): the next recipe (newest wins), the mode, a trigger, the
recording policy and stop. Qt-free, so it is unit-tested without threads of Qt's.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.types import Frame
from station.live_state import Mode
from station.recording import RecordPolicy

CONTINUOUS = Mode.CONTINUOUS
TRIGGERED = Mode.TRIGGERED
MODES = tuple(Mode)


@dataclass(frozen=True)
class Job:
    """What the worker does next: ``stop``, load a ``recipe``, or inspect a ``frame``."""

    kind: str
    frame: Frame | None = None
    recipe: Any = None
    trigger_id: int | None = None  # set when the frame answers a trigger
    part_id: str | None = None  # the line's id of the part that trigger named (None: none, or no trigger)


class InferenceInbox:
    """Thread-safe one-slot mailbox plus controls; see the module docstring."""

    def __init__(self, mode: str = CONTINUOUS, policy: RecordPolicy | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self._cond = threading.Condition(threading.Lock())
        self._frame: Frame | None = None
        self._recipe: Any = None
        self._has_recipe = False
        self._mode = mode
        self._policy = policy or RecordPolicy(mode=mode)
        self._trigger_id: int | None = None
        self._trigger_part: str | None = None
        self._trigger_time = 0.0
        self._last_trigger = 0
        self._stopped = False
        self._paused = False
        self.posted = 0  # frames put
        self.dropped = 0  # frames replaced (or discarded) before the worker took them
        self.taken = 0  # frames handed to the worker

    # -- capture side ---------------------------------------------------------------------
    def put_frame(self, frame: Frame) -> None:
        """Offer the newest frame; a frame still waiting is replaced. Never blocks for long."""
        with self._cond:
            if self._stopped:
                return
            self.posted += 1
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    # -- UI side --------------------------------------------------------------------------
    def request_recipe(self, recipe: Any) -> None:
        """Ask the worker to switch to ``recipe`` (newest request wins)."""
        with self._cond:
            self._recipe, self._has_recipe = recipe, True
            self._cond.notify_all()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        with self._cond:
            self._mode = mode
            self._policy = dataclasses.replace(self._policy, mode=mode)
            if mode == CONTINUOUS:
                self._trigger_id = None
            self._cond.notify_all()

    def set_policy(self, policy: RecordPolicy) -> None:
        with self._cond:
            self._policy = policy

    def set_paused(self, paused: bool) -> None:
        """Paused: frames are left to be overwritten and triggers refused (the cores are busy
        with something the operator asked for, e.g. training a recipe)."""
        with self._cond:
            self._paused = bool(paused)
            if paused:
                self._trigger_id = None
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    @property
    def policy(self) -> RecordPolicy:
        with self._cond:
            return self._policy

    @property
    def mode(self) -> str:
        with self._cond:
            return self._mode

    def trigger(self, part_id: str | None = None) -> int | None:
        """Inspect the next frame captured from now on, once. Returns the trigger id, or None
        when a trigger is still pending (one at a time) or the mode is not triggered. ``part_id``:
        the line's id of the part, handed to the worker with the frame (it is recorded with it)."""
        with self._cond:
            if self._stopped or self._paused or self._mode != TRIGGERED or self._trigger_id is not None:
                return None
            self._last_trigger += 1
            self._trigger_id = self._last_trigger
            self._trigger_part = part_id or None
            self._trigger_time = time.time()
            if self._frame is not None:  # captured before the trigger: not the one to judge
                self._frame = None
                self.dropped += 1
            self._cond.notify_all()
            return self._trigger_id

    def cancel_trigger(self) -> bool:
        with self._cond:
            pending = self._trigger_id is not None
            self._trigger_id = None
            return pending

    @property
    def trigger_pending(self) -> bool:
        with self._cond:
            return self._trigger_id is not None

    def stop(self) -> None:
        """Wake the worker and make it leave its loop; later frames are ignored."""
        with self._cond:
            self._stopped = True
            self._frame = None
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        with self._cond:
            return self._stopped

    # -- worker side ----------------------------------------------------------------------
    def next_job(self, ready: bool, timeout: float | None = None) -> Job | None:
        """Block until there is something to do; None when ``timeout`` (seconds) passed first.

        ``ready``: the worker has an inspector; without one, frames are left to be overwritten.
        Priority: stop, then a recipe switch, then the newest frame (in triggered mode only the
        first frame captured after the trigger).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._stopped:
                    return Job("stop")
                if self._has_recipe:
                    recipe, self._recipe, self._has_recipe = self._recipe, None, False
                    return Job("recipe", recipe=recipe)
                frame = self._frame
                if ready and not self._paused and frame is not None:
                    if self._mode == CONTINUOUS:
                        self._frame = None
                        self.taken += 1
                        return Job("frame", frame=frame)
                    if self._trigger_id is not None:
                        self._frame = None
                        if frame.timestamp >= self._trigger_time:
                            tid, self._trigger_id = self._trigger_id, None
                            part_id, self._trigger_part = self._trigger_part, None
                            self.taken += 1
                            return Job("frame", frame=frame, trigger_id=tid, part_id=part_id)
                        self.dropped += 1  # captured before the key press
                        continue
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
