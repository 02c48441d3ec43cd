"""Keyboard first: menu mnemonics, Enter starts a batch, Ctrl+Q answers even with the batch dialog open
(and asks before cancelling a running batch)."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from station.context import StationContext
from station.demo import PartGenerator
from core.images import save_image_atomic
from station.qt.live import LivePipeline
from station.qt.main_window import MainWindow
from station.sources import DemoSource

from station_helpers import station_dirs


@pytest.fixture
def window(tmp_path, tiny_recipe_root, monkeypatch, qtbot):
    data, config = station_dirs(tmp_path, tiny_recipe_root)
    monkeypatch.setenv("STATION_DATA_DIR", str(data))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(config))
    ctx = StationContext()
    win = MainWindow(ctx, LivePipeline(ctx, source_factory=lambda s: DemoSource("bracket", size=(128, 128))))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    ctx.close()


def test_every_menu_has_its_own_alt_key(window):
    titles = [m.title() for m in window._menus.values()]
    assert titles[:5] == ["&File", "&Product", "&Inspect", "&View", "&Help"]
    keys = [t[t.index("&") + 1].lower() for t in titles if "&" in t]
    assert len(keys) == len(set(keys))


def test_enter_starts_a_batch_and_ctrl_q_asks_before_cancelling_it(window, qtbot, tmp_path):
    folder = tmp_path / "many"
    gen = PartGenerator("bracket", (128, 128), seed=1)
    for i in range(150):
        save_image_atomic(folder / f"{i:03d}.png", gen.good(i).image)
    with qtbot.waitSignal(window.pipeline.recipe_changed, timeout=30000):
        window.start()
    window.open_batch(str(folder))
    dlg = window.batch_dialog
    QTest.keyClick(dlg.folder_edit, Qt.Key.Key_Return)
    assert dlg.running()
    # the offscreen platform does not hand the dialog the keyboard (the main window stays the active
    # window there), so the dialog's own Ctrl+Q shortcut is fired as the shortcut map would
    assert dlg._quit.key().toString() == "Ctrl+Q"
    dlg._quit.activated.emit()
    box = window.quit_box
    assert box.isVisible() and "Cancel it and quit?" in box.text()
    box.button(QMessageBox.StandardButton.No).click()  # the operator changes their mind: nothing stops
    assert dlg.running() and window.isVisible()
    dlg._quit.activated.emit()
    with qtbot.waitSignal(window.closed, timeout=30000):
        window.quit_box.button(QMessageBox.StandardButton.Yes).click()
    assert dlg._task is None or not dlg._task.is_running()  # the batch thread was stopped with the rest


def test_ctrl_q_quits_at_once_when_nothing_runs(window, qtbot):
    with qtbot.waitSignal(window.closed, timeout=30000):
        window.request_quit()
