"""One part, one record, and honest screens, in the real window (offscreen) on the tiny recipe:
continuous mode records each demo part once, the empty fixture reads "No part", a lost camera or a
recipe switch clears the verdict, and a trigger while the camera is down is refused in words."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from station.sources import DemoSource

from station_helpers import FlakyCamera


def _ready(qtbot, win):
    with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000):
        win.start()


def test_continuous_mode_records_each_part_once_and_the_empty_fixture_as_no_part(station, qtbot):
    ctx, make = station
    demo = DemoSource("bracket", fps=30, size=(128, 128), part_seconds=0.8, empty_seconds=0.4, arrive_seconds=0.1)
    win = make(source=demo)
    recorded, headlines = [], set()
    win.pipeline.inspection_recorded.connect(lambda row, insp: recorded.append(row))
    win.pipeline.inspection_ready.connect(lambda r: headlines.add(win.banner.headline))
    _ready(qtbot, win)
    start_parts = demo.parts_shown
    qtbot.waitUntil(lambda: demo.parts_shown >= start_parts + 6, timeout=30000)
    qtbot.waitUntil(lambda: win.banner.headline == "No part", timeout=5000)  # the next empty fixture
    assert win.live.scenes_without_part >= 5 and "without a part so far" in win.banner.detail
    win.close()
    shown = demo.parts_shown - start_parts
    # each part that came to rest is one record; the one under the camera when the recipe became
    # ready may be recorded too, and the last one may not have settled yet
    assert shown - 1 <= len(recorded) <= shown + 1, (len(recorded), shown)
    assert len(ctx.store.query_inspections(limit=None)) == len(recorded)
    assert win.pipeline.shift.snapshot().inspected == len(recorded)


def test_a_lost_camera_clears_the_verdict_and_a_trigger_is_refused_until_it_is_back(station, qtbot):
    ctx, make = station
    cam = FlakyCamera(good_reads=60, failed_opens=10**6, fps=30)
    win = make("triggered", source=cam, backoff=(5.0,))
    errors = []
    win.pipeline.error_occurred.connect(errors.append)
    _ready(qtbot, win)
    win.activateWindow()
    qtbot.waitActive(win)
    with qtbot.waitSignal(win.pipeline.inspection_recorded, timeout=10000):
        QTest.keyClick(win, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: win.banner.state in ("PASS", "FAIL", "REVIEW"), timeout=3000)
    qtbot.waitUntil(lambda: win.pipeline.capture.state == "lost", timeout=10000)
    assert win.banner.headline == "Camera lost" and win._latest is None  # the old PASS is gone
    QTest.keyClick(win, Qt.Key.Key_Space)
    assert not win.pipeline.trigger_pending
    assert any("not delivering images" in e for e in errors)
    qtbot.wait(300)
    assert len(ctx.store.query_inspections(limit=None)) == 1  # nothing was queued for later


def test_a_recipe_switch_does_not_show_the_old_verdict_again(station, qtbot):
    ctx, make = station
    win = make("triggered")
    _ready(qtbot, win)
    win.activateWindow()
    qtbot.waitActive(win)
    with qtbot.waitSignal(win.pipeline.inspection_ready, timeout=10000):
        QTest.keyClick(win, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: win.banner.state in ("PASS", "FAIL", "REVIEW"), timeout=3000)
    recipe = win.current_recipe
    newer = recipe.with_thresholds({}, "same limits, new version")
    newer.save(ctx.recipes_root)
    with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000):
        win.pipeline.load_recipe(recipe.product, recipe.version + 1)
    assert win.banner.headline == "Recipe changed" and win._latest is None


def test_a_low_disk_is_said_in_the_status_bar_and_the_alert(station, qtbot):
    from station.retention import RetentionPolicy

    ctx, make = station
    ctx.settings.min_free_gb = 10.0 ** 6  # no disk has that much free: low
    win = make()
    assert ctx.settings.retention() == RetentionPolicy(30.0, 2.0, 10.0 ** 6)
    win.start()
    qtbot.waitUntil(lambda: "LOW" in win.disk_status.text(), timeout=10000)
    assert "almost full" in win.alert.text and ctx.evidence.paused
    ctx.settings.min_free_gb = 0.0
    win.pipeline.apply_settings(source_changed=False)  # Settings saved: checked again at once
    qtbot.waitUntil(lambda: "LOW" not in win.disk_status.text(), timeout=10000)
    assert ctx.evidence.paused is None
