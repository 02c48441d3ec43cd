"""The line outputs in the station's window: Settings > Line outputs (off by default, checked in
words, saved, fitting a 1366 x 768 screen), and the live station sending its recorded results to a
real Mosquitto broker and a pymodbus I/O module, with the status bar saying how each output is."""
from __future__ import annotations

import json

import pytest

from station.context import StationContext
from station.line_settings import ModbusSettings, MqttSettings
from station.qt.settings_dialog import SettingsDialog


def test_settings_line_outputs_are_off_by_default_checked_in_words_and_saved(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("STATION_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(tmp_path / "c"))
    ctx = StationContext()
    try:
        dlg = SettingsDialog(ctx)
        qtbot.addWidget(dlg)
        box = dlg.line_outputs
        assert not box.mqtt_box.isChecked() and not box.modbus_box.isChecked()
        assert box.mqtt_password.echoMode() == box.mqtt_password.EchoMode.Password
        # it fits a 1366 x 768 factory screen, frame included (the settings scroll; Save stays in sight)
        assert dlg.minimumSizeHint().width() <= 1366 - 16
        assert dlg.minimumSizeHint().height() <= 768 - 48
        saved = []
        dlg.settings_saved.connect(saved.append)
        box.modbus_box.setChecked(True)  # no PLC address yet
        dlg.accept()
        assert saved == [] and "address of the PLC" in dlg.error.text()
        box.modbus_host.setText("10.1.2.3")
        box.coils["coil_ng"].setValue(0)  # the same coil as OK
        dlg.accept()
        assert saved == [] and "coil of its own" in dlg.error.text()
        box.coils["coil_ng"].setValue(17)
        box.modbus_pulse.setValue(300)
        box.mqtt_box.setChecked(True)
        box.mqtt_host.setText("broker.plant")
        box.mqtt_station.setText("bench-7")
        box.mqtt_user.setText("station")
        box.mqtt_password.setText("s3cret")
        box.mqtt_tls.setChecked(True)
        box.mqtt_ca.setText("/etc/plant/ca.pem")
        dlg.accept()
        assert saved == [False]  # the image source did not change
        data = json.loads(ctx.settings_path.read_text())
        assert data["modbus"]["enabled"] and data["modbus"]["host"] == "10.1.2.3"
        assert (data["modbus"]["coil_ng"], data["modbus"]["pulse_ms"]) == (17, 300)
        assert data["mqtt"]["host"] == "broker.plant" and data["mqtt"]["station"] == "bench-7"
        assert (data["mqtt"]["tls"], data["mqtt"]["ca_file"]) == (True, "/etc/plant/ca.pem")
        assert ctx.settings.mqtt.password == "s3cret" and ctx.settings.mqtt.result_topic == "inspection/bench-7/result"
        again = SettingsDialog(ctx)  # opened again: what was saved
        qtbot.addWidget(again)
        assert again.line_outputs.values() == (ctx.settings.mqtt, ctx.settings.modbus)
        again.reject()
    finally:
        ctx.close()


def test_the_station_sends_recorded_results_to_the_line_and_the_status_bar_says_how(station, qtbot, tmp_path):
    pytest.importorskip("paho.mqtt")
    pytest.importorskip("pymodbus")
    from line_peers import Consumer, ModbusIO, Mosquitto, retained

    broker = Mosquitto(tmp_path / "broker").start()
    io = ModbusIO(tmp_path / "io").start()
    consumer = Consumer(broker.port, "inspection/#")
    try:
        ctx, make = station
        ctx.settings.mqtt = MqttSettings(enabled=True, host="127.0.0.1", port=broker.port, station="bench-9")
        ctx.settings.modbus = ModbusSettings(enabled=True, host="127.0.0.1", port=io.port, pulse_ms=20,
                                             heartbeat_s=0.2, coil_ready=12)
        win = make()
        recorded = []
        win.pipeline.inspection_recorded.connect(lambda row, insp: recorded.append(row))
        with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000):
            win.start()
        qtbot.waitUntil(lambda: len(recorded) >= 3, timeout=30000)
        first = recorded[:3]
        qtbot.waitUntil(lambda: set(first) <= {m["inspection_id"] for m in consumer.results()}, timeout=10000)
        by_id = {m["inspection_id"]: m for m in consumer.results()}
        for iid in first:
            row = ctx.store.get_inspection(iid)
            assert by_id[iid]["verdict"] == row.verdict and by_id[iid]["recipe"] == {"product": "tiny", "version": 1}

        def pulsed():
            regs, ids = None, set()
            for w in io.writes():
                if w["fc"] == 16:
                    regs = w["values"]
                elif w["fc"] == 5 and w["address"] in (0, 1, 2) and w["values"][0] and regs:
                    ids.add((regs[2] << 16) | regs[3])
            return ids

        qtbot.waitUntil(lambda: set(first) <= pulsed(), timeout=10000)
        ready = [w["values"][0] for w in io.writes() if w["fc"] == 5 and w["address"] == 12]
        assert ready and ready[-1] == 1  # the station is inspecting: ready on
        label = win.line_status
        qtbot.waitUntil(lambda: label.isVisible() and label.text().startswith("MQTT connected")
                        and "Modbus connected" in label.text(), timeout=5000)
        assert "127.0.0.1" in label.toolTip()

        broker.kill()
        qtbot.waitUntil(lambda: "MQTT: " in label.text() and "not connected" in label.text(), timeout=10000)
        assert label.property("level") == "warning"
        broker.start()
        qtbot.waitUntil(lambda: label.text().startswith("MQTT connected"), timeout=10000)

        ctx.settings.mqtt.enabled = False
        ctx.settings.modbus.enabled = False
        win.pipeline.apply_settings(False)
        qtbot.waitUntil(lambda: not label.isVisible(), timeout=5000)  # nothing switched on: nothing shown
        qtbot.waitUntil(lambda: retained(broker.port, "inspection/bench-9/state") == b"offline",
                        timeout=10000)  # stopped cleanly: it said so
        win.close()
    finally:
        consumer.close()
        broker.stop()
        io.kill()
