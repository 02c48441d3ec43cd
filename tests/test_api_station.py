"""The station serves the inspection API itself: Settings > Inspection API (off by default, bad
hand-edited values fall back), switched on it answers on the configured port with the station's
recipe and records into the station's store; switched off it stops."""
from __future__ import annotations

import json
import socket

import httpx

from core.images import encode_png
from station.api_settings import ApiSettings
from station.context import StationSettings
from station.demo import PartGenerator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_settings_are_off_by_default_and_hand_edited_bad_values_fall_back(tmp_path):
    assert StationSettings().api == ApiSettings(enabled=False, host="127.0.0.1", port=8470)
    path = tmp_path / "station.json"
    path.write_text(json.dumps({"api": {"enabled": "yes", "host": "", "port": 70000}}))
    assert StationSettings.load(path).api == ApiSettings()
    path.write_text(json.dumps({"api": "on"}))
    assert StationSettings.load(path).api == ApiSettings()
    s = StationSettings(api={"enabled": True, "host": "0.0.0.0", "port": 9000})
    s.save(path)
    assert StationSettings.load(path).api == ApiSettings(True, "0.0.0.0", 9000)


def _health(port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
    except httpx.TransportError:
        return None


def test_switched_on_in_settings_the_station_serves_the_api_and_switched_off_it_stops(station, qtbot):
    from station.qt.settings_dialog import SettingsDialog

    ctx, make = station
    win = make()
    pipeline = win.pipeline
    with qtbot.waitSignal(pipeline.recipe_changed, timeout=60000):
        win.start()
    port = _free_port()
    assert _health(port) is None and pipeline.api.state == "off"  # off by default

    dlg = SettingsDialog(ctx, parent=win)
    qtbot.addWidget(dlg)
    dlg.settings_saved.connect(pipeline.apply_settings)
    assert not dlg.api_box.isChecked()
    assert dlg.minimumSizeHint().width() <= 1366 - 16 and dlg.minimumSizeHint().height() <= 768 - 48
    dlg.api_box.setChecked(True)
    dlg.api_box.port.setValue(port)
    dlg.accept()
    assert json.loads(ctx.settings_path.read_text())["api"] == {"enabled": True, "host": "127.0.0.1", "port": port}
    assert dlg.api_box.token.text() == ""  # loopback: no token made
    qtbot.waitUntil(lambda: (r := _health(port)) is not None and r.status_code == 200, timeout=60000)
    h = _health(port).json()
    assert h["recipe"]["product"] == pipeline.current_recipe.product and h["status"] == "ok"
    assert pipeline.api.state == "running"

    part = encode_png(PartGenerator("bracket", (128, 128), seed=0).defective(7).image)
    r = httpx.post(f"http://127.0.0.1:{port}/v1/inspect", files={"file": ("line.png", part)}, timeout=60)
    assert r.status_code == 200, r.text
    rec = ctx.store.get_inspection(r.json()["id"])  # the station's own results store
    assert rec is not None and rec.mode == "api" and rec.source == "line.png" and rec.verdict == r.json()["decision"]
    snap = pipeline.api.snapshot()  # the status bar says so, read from the API's snapshot on the stats timer
    assert snap.state == "serving" and snap.url == f"http://127.0.0.1:{port}" and snap.answered == 1
    qtbot.waitUntil(lambda: win.api_status.isVisible()
                    and win.api_status.text() == f"API: serving 127.0.0.1:{port}", timeout=5000)
    assert "Parts answered: 1" in win.api_status.toolTip()

    again = SettingsDialog(ctx, parent=win)
    qtbot.addWidget(again)
    again.settings_saved.connect(pipeline.apply_settings)
    assert again.api_box.isChecked() and again.api_box.port.value() == port
    again.api_box.setChecked(False)
    again.accept()
    qtbot.waitUntil(lambda: _health(port) is None, timeout=30000)
    qtbot.waitUntil(lambda: pipeline.api.state == "off", timeout=30000)
    qtbot.waitUntil(lambda: not win.api_status.isVisible(), timeout=5000)  # off: not shown


def test_beyond_loopback_the_token_is_made_on_save_and_shown_once(qtbot, ctx):
    from station.qt.settings_dialog import SettingsDialog

    dlg = SettingsDialog(ctx)
    qtbot.addWidget(dlg)
    dlg.api_box.setChecked(True)
    dlg.api_box.host.setText("0.0.0.0")
    dlg.accept()
    token = dlg.api_box.token.text()
    assert len(token) >= 40 and (ctx.config_dir / "api-token").read_text().strip() == token
    assert token in dlg.new_token_box.text()
    again = SettingsDialog(ctx)  # saved again: the same token, not shown again
    qtbot.addWidget(again)
    again.accept()
    assert again.api_box.token.text() == "" and not hasattr(again, "new_token_box")
    dlg.new_token_box.close()


def test_an_empty_address_in_the_dialog_is_refused_in_words(qtbot, ctx):
    from station.qt.settings_dialog import SettingsDialog

    dlg = SettingsDialog(ctx)
    qtbot.addWidget(dlg)
    dlg.api_box.setChecked(True)
    dlg.api_box.host.setText("  ")
    saved = []
    dlg.settings_saved.connect(saved.append)
    dlg.accept()
    assert saved == [] and "address to listen on" in dlg.error.text()