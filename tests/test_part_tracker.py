"""One part, one record (station.part_tracker), driven by the demo camera's frames without Qt."""
from __future__ import annotations

import numpy as np

from core.types import Decision, Inspection, Reason, Verdict
from station.part_tracker import PartEvent, PartTracker
from station.sources import DemoSource


def _inspection(unfamiliar: bool) -> Inspection:
    reasons = (Reason.UNFAMILIAR_INPUT,) if unfamiliar else (Reason.AGREE_NORMAL,)
    verdict = Verdict(Decision.REVIEW if unfamiliar else Decision.PASS, reasons, (), 0.5)
    return Inspection(verdict, {}, None, (128, 128), 10.0)


def _run(src: DemoSource, frames: int, every: int = 1) -> tuple[list[PartEvent], int]:
    """Feed every ``every``-th frame (a worker slower than the camera skips frames)."""
    tracker, events = PartTracker(), []
    src.open()
    for n in range(frames):
        k = n % src.cycle
        image = src.read()
        if n % every:
            continue
        events.append(tracker.observe(image, _inspection(unfamiliar=k < src.empty)).event)
    return events, src.parts_shown


def test_each_part_that_comes_to_rest_is_one_new_part_and_the_empty_fixture_no_part():
    src = DemoSource("bracket", fps=30, size=(128, 128))
    events, shown = _run(src, 10 * src.cycle)
    assert shown == 10
    assert events.count(PartEvent.NEW_PART) == 10
    assert events.count(PartEvent.NO_PART) == 10  # the empty fixture before each part
    assert events.count(PartEvent.SAME_PART) > 300  # everything else while a part lies still


def test_a_worker_that_takes_every_third_frame_still_sees_each_part_once():
    src = DemoSource("bracket", fps=30, size=(128, 128), noise=2.0)  # and a noisy camera
    events, shown = _run(src, 10 * src.cycle, every=3)
    assert events.count(PartEvent.NEW_PART) == shown == 10


def test_a_part_left_under_the_camera_for_a_minute_is_one_part():
    src = DemoSource("bracket", fps=30, size=(128, 128), part_seconds=60, empty_seconds=0, arrive_seconds=0)
    events, _ = _run(src, 1800)
    assert events.count(PartEvent.NEW_PART) == 1 and events.count(PartEvent.NO_PART) == 0


def test_parts_following_each_other_without_an_empty_fixture_are_told_apart():
    src = DemoSource("bracket", fps=30, size=(128, 128), part_seconds=0.5, empty_seconds=0, arrive_seconds=0)
    events, shown = _run(src, 20 * src.cycle)
    assert events.count(PartEvent.NEW_PART) == shown == 20


def test_after_a_reset_the_part_under_the_camera_is_judged_again():
    tracker = PartTracker()
    image = np.full((64, 64, 3), 120, np.uint8)
    got = [tracker.observe(image, _inspection(False)).event for _ in range(5)]
    assert got == [PartEvent.MOVING, PartEvent.SETTLING, PartEvent.SETTLING, PartEvent.NEW_PART, PartEvent.SAME_PART]
    tracker.reset()
    got = [tracker.observe(image, _inspection(False)).event for _ in range(5)]
    assert got.count(PartEvent.NEW_PART) == 1 and tracker.parts == 2
