"""The tools inside the real main window: a REVIEW part reaches the Review tab and is decided with
G in the window; long work in a tool (batch, calibration) pauses live inspection and resumes it;
a recipe saved by a tool becomes the one the station inspects with."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from station.context import StationContext
from station.qt.live import LivePipeline
from station.qt.main_window import MainWindow
from station.sources import DemoSource

from station_helpers import SlowInspector, station_dirs


@pytest.fixture
def window(tmp_path, tiny_recipe_root, monkeypatch, qtbot):
    data, config = station_dirs(tmp_path, tiny_recipe_root)
    monkeypatch.setenv("STATION_DATA_DIR", str(data))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(config))
    ctx = StationContext()
    made = []

    def make(decision="REVIEW", mode="triggered", real_engine=False):
        ctx.settings.mode = mode
        ctx.settings.keep_images = "review_fail"
        fake = SlowInspector(0.01, decision)
        pipeline = LivePipeline(ctx, source_factory=lambda s: DemoSource("bracket", fps=30, size=(128, 128)),
                                inspector_factory=None if real_engine else (lambda recipe: fake))
        win = MainWindow(ctx, pipeline)
        qtbot.addWidget(win)
        made.append(win)
        win.show()
        win.activateWindow()
        qtbot.waitActive(win)
        with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000):
            win.start()
        return win

    yield ctx, make
    for w in made:
        w.close()
    ctx.close()


def test_review_part_decided_with_g_in_the_window_lands_in_the_store(window, qtbot):
    ctx, make = window
    win = make("REVIEW")
    assert [win.tabs.tabText(i) for i in range(win.tabs.count())] == ["Live", "Review", "History"]
    with qtbot.waitSignal(win.pipeline.inspection_recorded, timeout=10000) as blocker:
        QTest.keyClick(win, Qt.Key.Key_Space)
    row_id = blocker.args[0]
    qtbot.waitUntil(lambda: win.tabs.tabText(1) == "Review (1)", timeout=5000)
    assert win.review.current_record().id == row_id

    QTest.keyClick(win, Qt.Key.Key_F2)  # the review queue, with the keyboard
    assert win.tabs.currentWidget() is win.review
    QTest.keyClick(win.review, Qt.Key.Key_G)
    qtbot.waitUntil(lambda: ctx.store.get_inspection(row_id).review == "good", timeout=5000)
    assert [r.decision for r in ctx.store.reviews_for(row_id)] == ["good"]
    qtbot.waitUntil(lambda: win.tabs.tabText(1) == "Review", timeout=5000)

    QTest.keyClick(win, Qt.Key.Key_F1)
    assert win.tabs.currentIndex() == 0
    # the history tab lists the stored part
    QTest.keyClick(win, Qt.Key.Key_F3)
    win.history.refresh()
    qtbot.waitUntil(lambda: any(r.id == row_id for r in win.history.records()), timeout=10000)


def test_pass_parts_do_not_reach_the_queue(window, qtbot):
    ctx, make = window
    win = make("PASS")
    with qtbot.waitSignal(win.pipeline.inspection_recorded, timeout=10000):
        QTest.keyClick(win, Qt.Key.Key_Space)
    qtbot.wait(200)
    assert win.review.pending_count() == 0 and win.tabs.tabText(1) == "Review"


def test_long_work_in_a_tool_pauses_live_inspection_then_resumes(window, qtbot):
    ctx, make = window
    win = make("PASS", mode="continuous")
    seen = []
    win.pipeline.inspection_ready.connect(lambda r: seen.append(r))
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=10000)

    win.open_batch()
    dlg = win.batch_dialog
    dlg.busy_changed.emit(True)  # what a running batch says
    assert win.pipeline.paused and win.banner.headline == "Paused"
    qtbot.wait(300)  # let frames already in flight arrive
    n = len(seen)
    qtbot.wait(500)
    assert len(seen) == n, "inspection went on while paused"
    frames = win.live_view.frames_shown
    qtbot.waitUntil(lambda: win.live_view.frames_shown > frames + 3, timeout=5000)  # the camera keeps running

    # a trigger is refused while paused
    win.pipeline.set_mode("triggered")
    assert win.pipeline.trigger() is False and not win.inspect_button.isEnabled()
    win.pipeline.set_mode("continuous")

    dlg.busy_changed.emit(False)
    assert not win.pipeline.paused
    qtbot.waitUntil(lambda: len(seen) > n + 2, timeout=10000)
    dlg.reject()


def test_two_holders_keep_the_pause_until_both_are_done(window, qtbot):
    ctx, make = window
    win = make("PASS")
    p = win.pipeline
    p.pause_inspection("batch", "a folder is being inspected")
    p.pause_inspection("calibration", "a new recipe is being trained")
    p.resume_inspection("batch")
    assert p.paused and "trained" in win.banner.action
    p.resume_inspection("calibration")
    assert not p.paused and p.state == "ready"
    p.resume_inspection("calibration")  # twice: harmless


def test_calibration_wizard_gets_live_frames_and_closing_it_resumes(window, qtbot):
    ctx, make = window
    win = make("PASS", mode="continuous")
    win.open_calibration()
    wiz = win.calibration_wizard
    got = []
    orig = wiz.collect_page.add_frame
    wiz.collect_page.add_frame = lambda img: (got.append(img), orig(img))
    qtbot.waitUntil(lambda: len(got) >= 2, timeout=5000)
    wiz.busy_changed.emit(True)
    assert win.pipeline.paused
    wiz.reject()
    qtbot.waitUntil(lambda: not wiz.isVisible(), timeout=5000)
    assert not win.pipeline.paused
    n = len(got)
    qtbot.wait(300)
    assert len(got) == n  # no longer connected to the camera


def test_a_recipe_saved_by_a_tool_becomes_the_active_one(window, qtbot, tiny_recipe_root):
    ctx, make = window
    win = make("PASS")
    r = win.current_recipe
    with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000) as blocker:
        win.review.recipe_saved.emit(r.product, r.version)
    assert blocker.args[0].recipe.label == r.label
    assert ctx.settings.active_product == r.product
