"""The line outputs in the station's window: Settings > Line outputs (off by default, checked in
words, saved, fitting a 1366 x 768 screen), and the live station sending its recorded results to a
real Mosquitto broker and a pymodbus I/O module, with the status bar saying how each output is; the
triggers and the OPC UA server in the settings; an OPC UA ``Inspect`` taken by the real live station."""
from __future__ import annotations

import json

import pytest

from station.line_settings import ModbusSettings, MqttSettings
from station.qt.settings_dialog import SettingsDialog


def test_settings_line_outputs_are_off_by_default_checked_in_words_and_saved(qtbot, ctx):
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


def test_settings_triggers_and_opcua_are_off_by_default_and_saved(qtbot, ctx):
    dlg = SettingsDialog(ctx)
    qtbot.addWidget(dlg)
    box = dlg.line_outputs
    assert not box.opcua_box.isChecked() and not box.mqtt_commands.isChecked() and not box.trigger_on.isChecked()
    assert not box.opcua_anonymous.isChecked() and not box.opcua_unsecured.isChecked()
    assert box.opcua_password.echoMode() == box.opcua_password.EchoMode.Password
    assert box.opcua_host.text() == "127.0.0.1" and box.opcua_port.value() == 4840
    assert dlg.minimumSizeHint().width() <= 1366 - 16 and dlg.minimumSizeHint().height() <= 768 - 48
    saved = []
    dlg.settings_saved.connect(saved.append)
    box.opcua_box.setChecked(True)  # no user and anonymous not allowed: not saved
    dlg.accept()
    assert saved == [] and "user name and a password" in dlg.error.text()
    box.opcua_user.setText("line")
    box.opcua_password.setText("pw-1")
    box.modbus_box.setChecked(True)
    box.modbus_host.setText("10.0.0.5")
    box.trigger_on.setChecked(True)
    box.trigger_kind.setCurrentText("register")
    box.trigger_address.setValue(30)
    box.trigger_answer.setValue(31)
    box.mqtt_box.setChecked(True)
    box.mqtt_commands.setChecked(True)
    dlg.accept()
    assert saved == [False]
    data = json.loads(ctx.settings_path.read_text())
    assert data["opcua"]["enabled"] and data["opcua"]["username"] == "line" and data["opcua"]["port"] == 4840
    assert (data["modbus"]["trigger_enabled"], data["modbus"]["trigger_kind"], data["modbus"]["trigger_address"],
            data["modbus"]["trigger_answer"]) == (True, "register", 30, 31)
    assert data["mqtt"]["commands"] is True
    again = SettingsDialog(ctx)
    qtbot.addWidget(again)
    assert again.line_outputs.opcua_values() == ctx.settings.opcua
    assert again.line_outputs.values() == (ctx.settings.mqtt, ctx.settings.modbus)
    again.reject()


def test_opcua_inspect_goes_through_the_live_station_one_trigger_one_record(station, qtbot):
    """The real LivePipeline in triggered mode: ``Inspect("P-7")`` (an asyncua client, secured, from its
    own thread) is taken on the UI thread, gives one record with the part id P-7, whose id and part id
    the nodes then show; paused, the
    station answers refused with the reason."""
    pytest.importorskip("asyncua")
    import asyncio
    import threading

    from asyncua import ua

    from line_peers import free_port
    from station.line_opcua import NAMESPACE, ensure_certificate
    from station.line_settings import OpcUaSettings
    from station.live_state import SourceState
    from test_line_opcua import secure_client

    ctx, make = station
    port = free_port()
    ctx.settings.opcua = OpcUaSettings(enabled=True, port=port, username="line", password="pw-2")
    cert = ensure_certificate(ctx.config_dir / "test-client")
    win = make("triggered")
    p = win.pipeline
    recorded = []
    p.inspection_recorded.connect(lambda row, insp: recorded.append(row))
    with qtbot.waitSignal(p.recipe_changed, timeout=30000):
        win.start()
    qtbot.waitUntil(lambda: p.capture.state == SourceState.RUNNING, timeout=10000)
    qtbot.waitUntil(lambda: p.line.snapshot() and p.line.snapshot()[0].connected, timeout=20000)
    server_cert = ctx.config_dir / "opcua" / "server_cert.der"  # made on the first start, in the config folder
    assert server_cert.exists()

    def call(what: str):
        box: dict = {}

        async def session():
            c = await secure_client(port, cert, server_cert, "line", "pw-2")
            async with c:
                ns = await c.get_namespace_index(NAMESPACE)
                if what == "inspect":
                    return await c.get_node(ua.NodeId("InspectionStation", ns)).call_method(
                        ua.NodeId("InspectionStation.Inspect", ns), ua.Variant("P-7", ua.VariantType.String))
                if what == "part":
                    return await c.get_node(ua.NodeId("InspectionStation.PartId", ns)).read_value()
                return await c.get_node(ua.NodeId("InspectionStation.InspectionId", ns)).read_value()

        def main():
            try:
                box["value"] = asyncio.run(asyncio.wait_for(session(), 15))
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                box["error"] = exc

        t = threading.Thread(target=main, daemon=True)
        t.start()
        qtbot.waitUntil(lambda: not t.is_alive(), timeout=20000)  # the UI thread keeps running meanwhile
        if "error" in box:
            raise box["error"]
        return box["value"]

    assert call("inspect") == [True, ""]
    qtbot.waitUntil(lambda: len(recorded) == 1, timeout=10000)
    qtbot.waitUntil(lambda: call("read") == recorded[0], timeout=10000)
    assert ctx.store.get_inspection(recorded[0]).part_id == "P-7"  # the line's part id, stored with its record
    assert call("part") == "P-7"  # and sent back in the result
    qtbot.wait(300)
    assert len(recorded) == 1  # one trigger, one record
    p.pause_inspection("test", "a recipe is being trained")
    accepted, reason = call("inspect")
    assert accepted is False and "paused" in reason and "trained" in reason
    import time

    from station.mailbox import CONTINUOUS
    from station.outbox import TriggerRequest

    t0 = time.monotonic()  # the hook called on the UI thread itself answers at once (no queued wait)
    answer = p._trigger_from_line(TriggerRequest("test"))
    assert not answer.accepted and "paused" in answer.reason and time.monotonic() - t0 < 1.0
    p.resume_inspection("test")
    # the UI thread does not get to the trigger in time: refused, and never taken later
    import station.qt.live as live

    late: list = []
    live.LINE_TRIGGER_ANSWER_S, before = 0.2, live.LINE_TRIGGER_ANSWER_S
    try:
        t = threading.Thread(target=lambda: late.append(p._trigger_from_line(TriggerRequest("mqtt"))))
        t.start()
        t.join(5)  # the UI thread is blocked here: no events are processed
    finally:
        live.LINE_TRIGGER_ANSWER_S = before
    assert late and not late[0].accepted and "did not answer" in late[0].reason
    qtbot.wait(300)  # now the queued request is delivered: it was given up, so it is skipped
    assert not p.trigger_pending and len(recorded) == 1
    p.set_mode(CONTINUOUS)
    assert call("inspect") == [False, "the station is not in triggered mode (it inspects continuous)"]
    win.close()
