"""The live pipeline's state machine (station.live_state), driven without Qt: every move of the table."""
from __future__ import annotations

import pytest

from station.live_state import TRANSITIONS, LiveState, LiveStateMachine, TransitionError

S = LiveState


def machine() -> LiveStateMachine:
    return LiveStateMachine(strict=True)


def test_first_start_without_a_recipe_trains_the_demo_then_inspects():
    m = machine()
    assert m.shown().state is S.STARTING
    assert m.training("Building the demo recipe").state is S.TRAINING
    assert m.loading("demo v1").message == "Preparing demo v1 for inspection…"
    shown = m.recipe_ready("demo v1")
    assert (shown.state, shown.message) == (S.READY, "Inspecting with demo v1")


def test_a_failed_start_says_no_recipe_and_a_failed_switch_keeps_the_old_recipe():
    m = machine()
    assert m.task_ended("Starting failed: disk").state is S.NO_RECIPE
    m.loading("a v1")
    assert m.recipe_failed("The recipe a v1 cannot be used").state is S.NO_RECIPE
    m.loading("a v2")
    m.recipe_ready("a v2")
    m.loading("b v1")
    shown = m.recipe_failed("The recipe b v1 cannot be used")
    assert (shown.state, shown.message) == (S.READY, "Still inspecting with a v2")


def test_a_cancelled_training_goes_back_to_the_recipe_in_use():
    m = machine()
    m.loading("a v1")
    m.recipe_ready("a v1")
    assert m.training("Building the demo recipe").state is S.TRAINING
    assert m.task_ended("cancelled").state is S.READY  # it used to stay "training"


def test_holds_pause_whatever_the_base_does_and_the_last_release_shows_it():
    m = machine()
    m.loading("a v1")
    assert m.hold("wizard", "a new recipe is being trained").state is S.PAUSED
    assert m.hold("retrain", "retraining").message == "Inspection paused: a new recipe is being trained"
    assert m.recipe_ready("a v1").state is S.PAUSED  # loaded during the pause: still paused
    assert m.release("wizard").state is S.PAUSED  # another hold remains
    assert m.release("nobody") is None
    shown = m.release("retrain")
    assert (shown.state, shown.message) == (S.READY, "Inspecting with a v1")


def test_a_pause_while_loading_resumes_to_loading_not_to_no_recipe():
    m = machine()
    m.loading("a v1")
    m.hold("wizard", "training")
    assert m.release("wizard").state is S.LOADING


@pytest.mark.parametrize("start", [s for s in TRANSITIONS])
def test_moves_outside_the_table_are_refused_by_a_strict_machine(start):
    allowed = TRANSITIONS[start]
    moves = {S.STARTING: lambda m: m.starting(), S.TRAINING: lambda m: m.training("t"),
             S.LOADING: lambda m: m.loading("x"), S.READY: lambda m: m.recipe_ready("x"),
             S.NO_RECIPE: lambda m: m.no_recipe()}
    for to, move in moves.items():
        m = machine()
        m.base = start
        if to is S.STARTING or to in allowed:  # starting: a restart, from anywhere
            assert move(m).state is to
        else:
            with pytest.raises(TransitionError):
                move(m)


def test_a_lenient_machine_logs_an_unexpected_move_and_makes_it(caplog):
    m = LiveStateMachine()
    m.recipe_ready("a v1")  # starting -> ready is not in the table
    assert m.state is S.READY and "not an expected move" in caplog.text
