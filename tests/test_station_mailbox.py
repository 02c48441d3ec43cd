"""Newest frame wins: the inbox never queues, the worker never works through a backlog."""
from __future__ import annotations

import threading
import time

from station.qt.inference import InferenceController
from station.mailbox import CONTINUOUS, TRIGGERED, InferenceInbox
from station.recording import RecordPolicy

from station_helpers import FakeRecipe, SlowInspector, feeding_frames, make_frame


def test_inbox_keeps_only_the_newest_frame():
    inbox = InferenceInbox(CONTINUOUS)
    for i in range(1, 51):
        inbox.put_frame(make_frame(i))
    job = inbox.next_job(ready=True, timeout=0)
    assert job.kind == "frame" and job.frame.frame_id == 50
    assert (inbox.posted, inbox.dropped, inbox.taken) == (50, 49, 1)
    assert inbox.next_job(ready=True, timeout=0.01) is None  # nothing left: no backlog


def test_inbox_without_inspector_leaves_frames_and_serves_recipe_and_stop_first():
    inbox = InferenceInbox(CONTINUOUS)
    inbox.put_frame(make_frame(1))
    assert inbox.next_job(ready=False, timeout=0.01) is None
    inbox.request_recipe("a")
    inbox.request_recipe("b")  # newest request wins
    assert inbox.next_job(ready=False, timeout=0).recipe == "b"
    inbox.stop()
    assert inbox.next_job(ready=True, timeout=0).kind == "stop"
    inbox.put_frame(make_frame(2))  # ignored once stopped
    assert inbox.posted == 1


def test_trigger_takes_the_next_frame_captured_after_it_once():
    inbox = InferenceInbox(TRIGGERED)
    inbox.put_frame(make_frame(1))
    assert inbox.next_job(ready=True, timeout=0.01) is None  # triggered mode: no trigger, no job
    tid = inbox.trigger()
    assert tid == 1 and inbox.trigger() is None  # one at a time
    inbox.put_frame(make_frame(2, timestamp=time.time() - 5))  # captured before the key press
    assert inbox.next_job(ready=True, timeout=0.01) is None
    inbox.put_frame(make_frame(3))
    job = inbox.next_job(ready=True, timeout=0)
    assert (job.frame.frame_id, job.trigger_id) == (3, 1)
    inbox.put_frame(make_frame(4))
    assert inbox.next_job(ready=True, timeout=0.01) is None  # the trigger is spent
    assert inbox.trigger() == 2 and inbox.cancel_trigger() and not inbox.trigger_pending


def test_inbox_wakes_a_waiting_worker():
    inbox = InferenceInbox(CONTINUOUS)
    got = []
    t = threading.Thread(target=lambda: got.append(inbox.next_job(ready=True, timeout=5)))
    t.start()
    time.sleep(0.05)
    inbox.put_frame(make_frame(7))
    t.join(2)
    assert got and got[0].frame.frame_id == 7


def test_record_policy_keeps_review_images_always_and_fail_images_when_queued():
    assert RecordPolicy(keep_images="none").keeps_images("REVIEW")
    assert not RecordPolicy(keep_images="none").keeps_images("FAIL")
    assert RecordPolicy(keep_images="none", queue_fails=True).keeps_images("FAIL")
    assert RecordPolicy(keep_images="review_fail").keeps_images("FAIL")
    assert not RecordPolicy(keep_images="review_fail").keeps_images("PASS")
    assert RecordPolicy(keep_images="all").keeps_images("PASS")


def test_slow_worker_processes_only_the_latest_frames(qtbot):
    fake = SlowInspector(delay=0.05)
    ctl = InferenceController(recorder=None, inspector_factory=lambda r: fake, threads=1)
    results = []
    ctl.inspection_ready.connect(results.append)
    ctl.start()
    try:
        with qtbot.waitSignal(ctl.recipe_loaded, timeout=5000):
            ctl.set_recipe(FakeRecipe())
        n = 200

        def capture():  # a fast camera: a frame every millisecond
            for i in range(1, n + 1):
                ctl.inbox.put_frame(make_frame(i))
                time.sleep(0.001)

        feeder = threading.Thread(target=capture)
        t0 = time.perf_counter()
        feeder.start()
        feeder.join()
        pushed_for = time.perf_counter() - t0
        qtbot.waitUntil(lambda: fake.seen and fake.seen[-1] == n, timeout=3000)
        done_after = time.perf_counter() - t0 - pushed_for
        time.sleep(0.15)  # nothing more must come: no backlog left behind
    finally:
        ctl.stop()
    seen = fake.seen
    assert seen[-1] == n and len(seen) < n / 4
    assert seen == sorted(set(seen))  # newest first, never an older frame after a newer one
    assert done_after < 0.05 * 2 + 0.5  # finished one inspection after the last frame, not a queue
    assert ctl.inbox.taken == len(seen) and ctl.inbox.dropped == n - len(seen)
    assert len(fake.threads) == 1 and threading.get_ident() not in fake.threads  # its own thread
    qtbot.waitUntil(lambda: len(results) == len(seen), timeout=2000)
    assert [r.frame.frame_id for r in results] == seen
    assert all(r.inspection.frame_id == r.frame.frame_id for r in results)
    assert pushed_for > 0.1


def test_inspector_is_built_in_the_worker_thread(qtbot):
    built_in = []

    def factory(recipe):
        built_in.append(threading.get_ident())
        return SlowInspector(0.0)

    ctl = InferenceController(recorder=None, inspector_factory=factory, threads=1)
    ctl.start()
    try:
        with qtbot.waitSignal(ctl.recipe_loaded, timeout=5000) as blocker:
            ctl.set_recipe(FakeRecipe())
        assert blocker.args[0].backend == "fake"
    finally:
        assert ctl.stop()
    assert built_in and built_in[0] != threading.get_ident()
    assert not ctl.is_running()


def test_a_recipe_that_cannot_be_built_is_reported_in_words(qtbot):
    def factory(recipe):
        raise ValueError("the memory bank is empty")

    ctl = InferenceController(recorder=None, inspector_factory=factory, threads=1)
    ctl.start()
    try:
        with qtbot.waitSignal(ctl.recipe_failed, timeout=5000) as blocker:
            ctl.set_recipe(FakeRecipe())
    finally:
        ctl.stop()
    assert "fake v1 cannot be used" in blocker.args[0] and "memory bank is empty" in blocker.args[0]


def test_worker_answers_each_trigger_once(qtbot):
    fake = SlowInspector(delay=0.01)
    ctl = InferenceController(recorder=None, inspector_factory=lambda r: fake, mode=TRIGGERED, threads=1)
    ctl.start()
    try:
        with feeding_frames(ctl):
            with qtbot.waitSignal(ctl.recipe_loaded, timeout=5000):
                ctl.set_recipe(FakeRecipe())
            answers = []
            for _ in range(3):
                with qtbot.waitSignal(ctl.inspection_ready, timeout=3000) as blocker:
                    tid = ctl.trigger()
                answers.append((tid, blocker.args[0].trigger_id))
            time.sleep(0.1)
    finally:
        ctl.stop()
    assert answers == [(1, 1), (2, 2), (3, 3)]
    assert len(fake.seen) == 3
