"""The live station's states, as enums, and the one state machine of the live pipeline. Qt-free.

``LivePipeline`` (``station.qt.live``) feeds events into :class:`LiveStateMachine` and shows what
it answers; the transitions are the table :data:`TRANSITIONS` and are tested without a window
(``tests/test_live_state.py``).

The state has two layers. The *base* state says where the recipe is: ``starting`` (reading the
shift and the active recipe), ``training`` (building one), ``loading`` (preparing one for
inspection), ``ready`` (verdicts flow) or ``no_recipe``. *Holds* sit on top: while anyone holds
inspection (a recipe being trained in the wizard, a retrain), the visible state is ``paused``,
whatever the base does underneath; when the last hold is released the base state shows again, so
a recipe that finished loading during a pause is ready at once and one still loading is still
loading.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class LiveState(enum.StrEnum):
    STARTING = "starting"
    TRAINING = "training"
    LOADING = "loading"
    READY = "ready"
    NO_RECIPE = "no_recipe"
    PAUSED = "paused"  # only ever visible: a base state is never paused


class Mode(enum.StrEnum):
    """How parts are inspected: every frame (continuous) or one frame per trigger."""

    CONTINUOUS = "continuous"
    TRIGGERED = "triggered"


class SourceState(enum.StrEnum):
    """The image source as the capture thread reports it."""

    OPENING = "opening"
    RUNNING = "running"
    LOST = "lost"  # a read failed or the source could not be opened: retrying
    BACK = "back"  # running again after being lost
    STOPPED = "stopped"
    FAILED = "failed"  # capture stopped after an unexpected error


S = LiveState
# base state -> the base states it may move to
TRANSITIONS: dict[LiveState, frozenset[LiveState]] = {
    S.STARTING: frozenset({S.LOADING, S.TRAINING, S.NO_RECIPE}),
    S.TRAINING: frozenset({S.LOADING, S.NO_RECIPE, S.READY}),  # READY: cancelled, the old recipe goes on
    S.LOADING: frozenset({S.READY, S.NO_RECIPE, S.LOADING, S.TRAINING}),
    S.READY: frozenset({S.LOADING, S.TRAINING, S.READY}),
    S.NO_RECIPE: frozenset({S.LOADING, S.TRAINING, S.NO_RECIPE}),
}
NO_RECIPE_HINT = "No product recipe yet. Use Product > Build demo recipe, or teach a product."


class TransitionError(RuntimeError):
    """A move the table does not allow (raised only by a strict machine: the tests)."""


@dataclass(frozen=True)
class Shown:
    state: LiveState
    message: str


class LiveStateMachine:
    """Events in, the state to show out. ``strict``: raise on a move outside :data:`TRANSITIONS`
    (the tests); otherwise such a move is logged and made, so the station never stops on one."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.base = LiveState.STARTING
        self._message = "Loading the product recipe…"
        self.recipe_label: str | None = None  # the recipe whose verdicts are shown
        self.holds: dict[str, str] = {}  # who holds inspection -> why, in plain words

    # -- what to show ------------------------------------------------------------------------
    @property
    def state(self) -> LiveState:
        return LiveState.PAUSED if self.holds else self.base

    @property
    def message(self) -> str:
        if self.holds:
            return f"Inspection paused: {next(iter(self.holds.values()))}"
        return self._message

    def shown(self) -> Shown:
        return Shown(self.state, self.message)

    # -- events ------------------------------------------------------------------------------
    def starting(self) -> Shown:
        self.base, self._message = LiveState.STARTING, "Loading the product recipe…"
        return self.shown()

    def training(self, message: str) -> Shown:
        return self._move(LiveState.TRAINING, message)

    def loading(self, label: str) -> Shown:
        return self._move(LiveState.LOADING, f"Preparing {label} for inspection…")

    def recipe_ready(self, label: str) -> Shown:
        self.recipe_label = label
        return self._move(LiveState.READY, f"Inspecting with {label}")

    def recipe_failed(self, message: str) -> Shown:
        """The recipe asked for cannot be used; an older one goes on if there is one."""
        if self.recipe_label is not None:
            return self._move(LiveState.READY, f"Still inspecting with {self.recipe_label}")
        return self._move(LiveState.NO_RECIPE, message)

    def no_recipe(self, message: str = NO_RECIPE_HINT) -> Shown:
        return self._move(LiveState.NO_RECIPE, message)

    def task_ended(self, message: str) -> Shown:
        """A long action failed or was cancelled: without a recipe, say so; with one, go on."""
        if self.recipe_label is None:
            return self._move(LiveState.NO_RECIPE, message)
        if self.base in (LiveState.TRAINING, LiveState.LOADING):
            return self._move(LiveState.READY, f"Inspecting with {self.recipe_label}")
        return self.shown()

    def hold(self, key: str, why: str) -> Shown:
        self.holds[key] = why
        return self.shown()

    def release(self, key: str) -> Shown | None:
        """None when ``key`` held nothing (nothing changes)."""
        if self.holds.pop(key, None) is None:
            return None
        return self.shown()

    # -- the table -----------------------------------------------------------------------------
    def _move(self, to: LiveState, message: str) -> Shown:
        if to not in TRANSITIONS[self.base]:
            text = f"live state: {self.base.value} -> {to.value} is not an expected move"
            if self.strict:
                raise TransitionError(text)
            log.error("%s (made anyway)", text)
        self.base, self._message = to, message
        return self.shown()
