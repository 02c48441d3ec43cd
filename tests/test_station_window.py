"""The real main window, offscreen, on the tiny recipe: verdicts by signal, triggered mode,
a camera that comes and goes, a clean close."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from core.types import Decision
from station.qt.inference import InspectionResult

from station_helpers import FlakyCamera


def _start_and_wait_ready(qtbot, win):
    with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000) as blocker:
        win.start()
    return blocker.args[0]


def test_demo_source_gives_verdicts_by_signal_and_records_them(station, qtbot):
    ctx, make = station
    win = make()
    results, recorded = [], []
    win.pipeline.inspection_ready.connect(results.append)
    win.pipeline.inspection_recorded.connect(lambda row, insp: recorded.append((row, insp)))
    loaded = _start_and_wait_ready(qtbot, win)
    assert loaded.recipe.product == "tiny" and win.current_recipe is loaded.recipe
    assert win.recipe_label.text() == "Recipe: tiny  v1"
    qtbot.waitUntil(lambda: len(recorded) >= 4, timeout=20000)

    r = results[0]
    assert isinstance(r, InspectionResult)
    assert r.inspection.recipe == "tiny" and r.inspection.frame_id == r.frame.frame_id
    assert r.overlay.shape == r.frame.image.shape and not r.overlay.flags.writeable
    assert win.live_view.frames_shown > 0
    # what the banner shows is the newest verdict: it is applied on the next event-loop turn after a
    # result arrives, and results keep arriving, so wait for a turn where the two agree
    qtbot.waitUntil(lambda: win.banner.state in ("PASS", "FAIL", "REVIEW")
                    and win.banner.state == win._latest.inspection.decision.value, timeout=5000)
    assert win.banner.detail
    rows = ctx.store.query_inspections(limit=None, newest_first=False)
    assert len(rows) >= 4 and {r.mode for r in rows} == {"continuous"}
    by_id = {r.id: r for r in rows}
    for row_id, insp in recorded:
        row = by_id[row_id]
        assert row.decision == insp.decision.value
        if insp.decision in (Decision.REVIEW, Decision.FAIL):  # kept for the review queue
            assert row.image_path and row.heatmap_path
        else:
            assert row.image_path is None
    win.close()  # stops the threads: the counts stop moving (the last signals may still be queued)
    stored = len(ctx.store.query_inspections(limit=None))
    qtbot.waitUntil(lambda: len(recorded) == stored, timeout=2000)
    snap = win.pipeline.shift.snapshot()
    assert snap.inspected == stored
    qtbot.waitUntil(lambda: win.shift_panel.values["inspected"].text() == f"{snap.inspected:,}", timeout=2000)


def test_triggered_mode_records_exactly_one_inspection_per_trigger(station, qtbot):
    ctx, make = station
    win = make("triggered")
    recorded = []
    win.pipeline.inspection_recorded.connect(lambda row, insp: recorded.append(row))
    _start_and_wait_ready(qtbot, win)
    assert win.inspect_button.isVisible() and win.inspect_button.isEnabled()
    win.activateWindow()
    qtbot.waitActive(win)
    for i in range(3):
        with qtbot.waitSignal(win.pipeline.inspection_recorded, timeout=10000):
            if i == 2:
                win.inspect_button.click()
            else:
                QTest.keyClick(win, Qt.Key.Key_Space)
            assert win.banner.headline == "Inspecting…"
            assert not win.inspect_button.isEnabled()
            QTest.keyClick(win, Qt.Key.Key_Space)  # pressed again while inspecting: ignored
        qtbot.waitUntil(lambda: win.banner.state in ("PASS", "FAIL", "REVIEW"), timeout=2000)
    qtbot.wait(600)  # nothing else is inspected between triggers
    rows = ctx.store.query_inspections(limit=None)
    assert len(recorded) == 3 and len(rows) == 3 and len(set(recorded)) == 3
    assert {r.mode for r in rows} == {"triggered"}
    assert win.inspections_seen == 3 and win.pipeline.shift.snapshot().inspected == 3


def test_escape_cancels_a_pending_trigger(station, qtbot):
    ctx, make = station
    win = make("triggered", source=FlakyCamera(good_reads=10**9, fps=0.5))  # a frame every 2 s
    _start_and_wait_ready(qtbot, win)
    win.activateWindow()
    qtbot.waitActive(win)
    QTest.keyClick(win, Qt.Key.Key_Space)
    assert win.pipeline.trigger_pending and win.banner.headline == "Inspecting…"
    with qtbot.waitSignal(win.pipeline.trigger_changed, timeout=2000) as blocker:
        QTest.keyClick(win, Qt.Key.Key_Escape)
    assert blocker.args == [False] and not win.pipeline.trigger_pending
    assert win.inspect_button.isEnabled()


def test_lost_camera_is_shown_in_words_and_recovers(station, qtbot):
    ctx, make = station
    cam = FlakyCamera(good_reads=20, failed_opens=2, fps=30)
    win = make(source=cam, backoff=(0.05,))
    seen = []
    win.pipeline.source_status_changed.connect(lambda state, msg: seen.append(state))
    win.start()
    qtbot.waitUntil(lambda: "lost" in seen, timeout=10000)
    assert win.alert.text == "Camera lost — reconnecting…"
    qtbot.waitUntil(lambda: "back" in seen, timeout=10000)
    assert win.alert.text == "Camera back" and win.live_view.message == ""
    n = win.live_view.frames_shown
    qtbot.waitUntil(lambda: win.live_view.frames_shown > n + 3, timeout=5000)


def test_window_closes_with_every_thread_stopped(station, qtbot):
    ctx, make = station
    win = make()
    _start_and_wait_ready(qtbot, win)
    qtbot.waitUntil(lambda: win.inspections_seen >= 1, timeout=20000)
    p = win.pipeline
    assert p.capture.is_running() and p.inference.is_running()
    win.close()
    assert not p.capture.is_running() and not p.inference.is_running()
    assert p.inference.inbox.stopped
    win.close()  # twice is harmless
    assert (ctx.config_dir / "ui.ini").is_file()  # geometry and splitters saved


def test_public_api_for_other_tools(station, qtbot):
    from PySide6.QtWidgets import QLabel

    class Tool(QLabel):
        stopped = False

        def shutdown(self):
            Tool.stopped = True

    ctx, make = station
    win = make()
    assert win.tabs.tabText(0) == "Live"
    before = win.tabs.count()  # Live, Review, History
    idx = win.add_tab(Tool("extra"), "Extra tool")
    assert idx == before and win.tabs.tabText(idx) == "Extra tool"
    hits = []
    act = win.add_action("Inspect", "Open extra tool", lambda: hits.append(1), "Ctrl+Shift+E")
    act.trigger()
    assert hits == [1] and act in win.menu("Inspect").actions()
    assert [a.text() for a in win.menuBar().actions()] == ["&File", "&Product", "&Inspect", "&View", "&Help"]
    win.close()
    assert Tool.stopped  # plugged-in tools are told to stop their threads


def test_switching_recipe_loads_off_the_ui_thread_and_is_remembered(station, qtbot, monkeypatch):
    import threading
    import time

    ctx, make = station
    win = make()
    _start_and_wait_ready(qtbot, win)
    loaded_in = []
    real = ctx.load_recipe

    def spy(product, version=None):
        loaded_in.append(threading.get_ident())
        return real(product, version)

    monkeypatch.setattr(ctx, "load_recipe", spy)
    t0 = time.perf_counter()
    with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000) as blocker:
        assert win.pipeline.load_recipe("tiny", 1)
        assert time.perf_counter() - t0 < 0.2  # the UI thread only started the work
        assert win.banner.state == "BUSY" or win.pipeline.busy
    assert blocker.args[0].recipe.version == 1
    assert loaded_in and loaded_in[0] != threading.get_ident()
    assert (ctx.settings.active_product, ctx.settings.active_version) == ("tiny", 1)
    qtbot.waitUntil(lambda: win.banner.state in ("PASS", "FAIL", "REVIEW"), timeout=20000)
