"""First run on an empty data folder: demo source at once, demo recipe trained in the background
(real train_recipe, fewer and smaller parts), inspection once it is ready; Esc cancels it."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from station import demo_recipe
from station.context import DEMO_PRODUCT, StationContext
from station.qt.main_window import MainWindow

from station_helpers import station_dirs


@pytest.fixture
def fresh_station(tmp_path, monkeypatch, qtbot):
    data, config = station_dirs(tmp_path)
    monkeypatch.setenv("STATION_DATA_DIR", str(data))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(config))
    monkeypatch.setattr(demo_recipe, "DEMO_PARTS", 10)
    monkeypatch.setattr(demo_recipe, "DEMO_SIZE", (64, 64))
    ctx = StationContext()
    win = MainWindow(ctx)
    qtbot.addWidget(win)
    win.show()
    yield ctx, win
    win.close()
    ctx.close()


def test_first_run_builds_the_demo_recipe_while_showing_the_demo(fresh_station, qtbot):
    ctx, win = fresh_station
    p = win.pipeline
    stages, frames_before_ready = [], []
    p.task_progressed.connect(lambda stage, frac: stages.append((stage, frac)))
    p.recipe_changed.connect(lambda _r: frames_before_ready.append(win.live_view.frames_shown))
    assert ctx.products() == [] and ctx.settings.source_kind == "demo"
    with qtbot.waitSignal(p.task_started, timeout=10000) as started:
        win.start()
    assert started.args == ["Building the demo recipe"]
    assert win.task_bar.isVisible() and win.banner.state == "BUSY"
    with qtbot.waitSignal(p.recipe_changed, timeout=60000) as ready:
        pass
    recipe = ready.args[0].recipe
    assert recipe.product == DEMO_PRODUCT and recipe.version == 1
    assert (ctx.recipes_root / DEMO_PRODUCT / "v0001" / "manifest.json").is_file()
    assert recipe.manifest["training"]["n_good"] == 10
    assert frames_before_ready[0] > 0  # the live view showed demo frames during training
    names = [s for s, _ in stages]
    assert "Generating demo parts" in names and "Fitting Gaussian model" in names
    fracs = [f for _, f in stages]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    assert not win.task_bar.isVisible()
    saved = json.loads(ctx.settings_path.read_text())
    assert saved["active_product"] == DEMO_PRODUCT and saved["active_version"] == 1
    with qtbot.waitSignal(p.inspection_ready, timeout=20000) as got:
        pass
    assert got.args[0].inspection.recipe == DEMO_PRODUCT


def test_escape_cancels_the_demo_recipe(fresh_station, qtbot):
    ctx, win = fresh_station
    p = win.pipeline
    with qtbot.waitSignal(p.task_started, timeout=10000):
        win.start()
    win.activateWindow()
    qtbot.waitActive(win)
    with qtbot.waitSignal(p.task_ended, timeout=30000) as ended:
        QTest.keyClick(win, Qt.Key.Key_Escape)
        assert win.task_bar.stage.text() == "Cancelling…"
    assert ended.args[0] == "cancelled"
    assert p.state == "no_recipe" and not p.ready
    assert ctx.products() == []
    assert "cancelled" in win.alert.text
