"""Triggers from the line, one hook (``LineOutputs(on_trigger=...)``): an MQTT command on
``<prefix>/<station>/cmd/inspect`` against a real Mosquitto broker (the hook gets it with its part
id, the ack arrives accepted or refused with the reason; bad and retained commands are refused, not
dropped), and the Modbus trigger coil / register polled on a real pymodbus server (one hook call per
rising edge; the station clears it and writes the answer register)."""
from __future__ import annotations

import json
import threading

import pytest

from core.store import ResultsStore
from station.context import StationSettings
from station.line_settings import ModbusSettings, MqttSettings
from station.outbox import NO_TRIGGER, LineOutputs, TriggerAnswer, TriggerRequest

from line_peers import ModbusIO, fast, wait_until


class Hook:
    """A fake station: answers from ``answers`` in turn (then accepts), remembers every request."""

    def __init__(self, *answers: TriggerAnswer):
        self.requests: list[TriggerRequest] = []
        self._answers = list(answers)
        self._lock = threading.Lock()

    def __call__(self, request: TriggerRequest) -> TriggerAnswer:
        with self._lock:
            self.requests.append(request)
            return self._answers.pop(0) if self._answers else TriggerAnswer(True)


def test_the_hook_answers_refused_when_there_is_none_or_it_fails(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    assert LineOutputs(store).request_trigger(TriggerRequest("mqtt")) == TriggerAnswer(False, NO_TRIGGER)

    def broken(_request):
        raise RuntimeError("boom")

    answer = LineOutputs(store, on_trigger=broken).request_trigger(TriggerRequest("modbus"))
    assert not answer.accepted and "boom" in answer.reason


def test_trigger_settings_are_off_by_default_and_checked_in_words():
    assert not MqttSettings().commands and not ModbusSettings().trigger_enabled
    on = dict(enabled=True, host="plc", trigger_enabled=True)
    assert not ModbusSettings(**on).problems()
    assert "coil of its own" in " ".join(ModbusSettings(**on, trigger_address=1).problems())  # the NG coil
    assert "overlaps" in " ".join(ModbusSettings(**on, trigger_kind="register", trigger_address=2).problems())
    assert "20 to 10000" in " ".join(ModbusSettings(**on, trigger_poll_ms=0).problems())
    assert MqttSettings(station="b1").command_topic == "inspection/b1/cmd/inspect"
    assert MqttSettings(station="b1").ack_topic == "inspection/b1/cmd/ack"


# -- MQTT ----------------------------------------------------------------------------------------

def test_an_mqtt_command_reaches_the_hook_and_is_answered_accepted_or_refused(tmp_path):
    pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (requirements.txt pins it)")
    from line_peers import Consumer, Mosquitto

    broker = Mosquitto(tmp_path / "broker").start()
    consumer = None
    outputs = None
    try:
        consumer = Consumer(broker.port, "inspection/bench-3/#")
        s = StationSettings()
        s.mqtt = MqttSettings(enabled=True, host="127.0.0.1", port=broker.port, station="bench-3", commands=True)
        hook = Hook(TriggerAnswer(True), TriggerAnswer(False, "a part is still being inspected"))
        outputs = LineOutputs(ResultsStore(tmp_path / "results.db"), backoff=fast, on_trigger=hook)
        outputs.apply(s)
        # "online" is published after the command subscription is confirmed
        wait_until(lambda: b"online" in consumer.on("/state"), 10, what="the station online")

        def acks():
            return [json.loads(p) for p in consumer.on("/cmd/ack")]

        pub = consumer.client
        pub.publish("inspection/bench-3/cmd/inspect", json.dumps({"part_id": "P-1", "request_id": 7}), qos=1)
        wait_until(lambda: len(acks()) >= 1, 10, what="the first ack")
        pub.publish("inspection/bench-3/cmd/inspect", b"", qos=1)  # empty: no part id, still a command
        wait_until(lambda: len(acks()) >= 2, 10, what="the second ack")
        pub.publish("inspection/bench-3/cmd/inspect", b"{not json", qos=1)
        wait_until(lambda: len(acks()) >= 3, 10, what="the third ack")
        got = acks()
        assert [(r.source, r.part_id) for r in hook.requests] == [("mqtt", "P-1"), ("mqtt", "")]
        assert (got[0]["accepted"], got[0]["reason"], got[0]["part_id"], got[0]["request_id"]) == (True, "", "P-1", 7)
        assert got[0]["station"] == "bench-3" and got[0]["command"] == "inspect"
        assert (got[1]["accepted"], got[1]["reason"]) == (False, "a part is still being inspected")
        assert got[2]["accepted"] is False and "not a JSON object" in got[2]["reason"]
        assert len(hook.requests) == 2  # the bad command never reached the station

        # a retained command: taken once while the station listens (the broker clears the flag for live
        # subscribers); after a reconnect the broker hands it out again, retained: refused, not taken
        pub.publish("inspection/bench-3/cmd/inspect", b"{}", qos=1, retain=True)
        wait_until(lambda: len(acks()) >= 4, 10, what="the answer to the live command")
        assert acks()[3]["accepted"] is True and len(hook.requests) == 3
        assert outputs.close(timeout=10)
        outputs = LineOutputs(ResultsStore(tmp_path / "results.db"), backoff=fast, on_trigger=hook)
        outputs.apply(s)
        wait_until(lambda: len(acks()) >= 5, 10, what="the answer to the retained command")
        assert acks()[4]["accepted"] is False and "retained" in acks()[4]["reason"]
        assert len(hook.requests) == 3
        pub.publish("inspection/bench-3/cmd/inspect", b"", qos=1, retain=True)  # clears the retained message
    finally:
        if outputs is not None:
            assert outputs.close(timeout=10)
        if consumer is not None:
            consumer.close()
        broker.stop()


def test_commands_are_not_taken_unless_switched_on(tmp_path):
    pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (requirements.txt pins it)")
    from line_peers import Consumer, Mosquitto

    broker = Mosquitto(tmp_path / "broker").start()
    consumer = Consumer(broker.port, "inspection/bench-4/#")
    s = StationSettings()
    s.mqtt = MqttSettings(enabled=True, host="127.0.0.1", port=broker.port, station="bench-4")  # commands off
    hook = Hook()
    outputs = LineOutputs(ResultsStore(tmp_path / "results.db"), backoff=fast, on_trigger=hook)
    try:
        outputs.apply(s)
        wait_until(lambda: b"online" in consumer.on("/state"), 10, what="the station online")
        consumer.client.publish("inspection/bench-4/cmd/inspect", b"{}", qos=1)
        import time

        time.sleep(0.5)
        assert hook.requests == [] and consumer.on("/cmd/ack") == []
    finally:
        assert outputs.close(timeout=10)
        consumer.close()
        broker.stop()


# -- Modbus --------------------------------------------------------------------------------------

TRIGGER_COIL, TRIGGER_REG, ANSWER_REG = 30, 40, 41


def modbus(port: int, **changes) -> StationSettings:
    s = StationSettings()
    s.modbus = ModbusSettings(**{**dict(enabled=True, host="127.0.0.1", port=port, unit=1, pulse_ms=20,
                                        heartbeat_s=0.5, timeout_s=1.0, trigger_enabled=True,
                                        trigger_address=TRIGGER_COIL, trigger_poll_ms=30), **changes})
    return s


class Plc:
    """The PLC's side of the handshake: a pymodbus client writing the trigger on the I/O server."""

    def __init__(self, port: int):
        from pymodbus.client import ModbusTcpClient

        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert self.client.connect()

    def coil(self, address: int, value: bool) -> None:
        assert not self.client.write_coil(address, value, device_id=1).isError()

    def read_coil(self, address: int) -> bool:
        return bool(self.client.read_coils(address, count=1, device_id=1).bits[0])

    def register(self, address: int, value: int) -> None:
        assert not self.client.write_register(address, value, device_id=1).isError()

    def read_register(self, address: int) -> int:
        return int(self.client.read_holding_registers(address, count=1, device_id=1).registers[0])

    def close(self) -> None:
        self.client.close()


def test_a_modbus_trigger_coil_fires_the_hook_once_per_rising_edge_and_is_cleared(tmp_path):
    pytest.importorskip("pymodbus", reason="pymodbus is not installed (requirements.txt pins it)")
    io = ModbusIO(tmp_path / "io").start()
    plc = Plc(io.port)
    hook = Hook(TriggerAnswer(True), TriggerAnswer(False, "inspection is paused: training"))
    outputs = LineOutputs(ResultsStore(tmp_path / "results.db"), backoff=fast, on_trigger=hook)
    try:
        outputs.apply(modbus(io.port, trigger_answer=ANSWER_REG))
        wait_until(lambda: outputs.snapshot()[0].connected, 10, what="connected")
        import time

        time.sleep(0.2)  # a few polls
        assert hook.requests == []  # nothing set: nothing asked
        plc.coil(TRIGGER_COIL, True)
        wait_until(lambda: len(hook.requests) == 1 and not plc.read_coil(TRIGGER_COIL), 5,
                   what="the trigger taken and cleared")
        assert plc.read_register(ANSWER_REG) == 1  # accepted
        plc.coil(TRIGGER_COIL, True)
        wait_until(lambda: len(hook.requests) == 2 and not plc.read_coil(TRIGGER_COIL), 5, what="the second edge")
        assert plc.read_register(ANSWER_REG) == 2  # refused
        time.sleep(0.3)  # ten polls more: nothing new
        assert [r.source for r in hook.requests] == ["modbus", "modbus"]
    finally:
        assert outputs.close(timeout=10)
        plc.close()
        io.kill()


def test_a_modbus_trigger_register_that_stays_set_is_one_edge(tmp_path):
    pytest.importorskip("pymodbus", reason="pymodbus is not installed (requirements.txt pins it)")
    io = ModbusIO(tmp_path / "io").start()
    plc = Plc(io.port)
    hook = Hook()
    outputs = LineOutputs(ResultsStore(tmp_path / "results.db"), backoff=fast, on_trigger=hook)
    try:
        # the PLC clears it itself: the station only reads (no clear), no answer register
        outputs.apply(modbus(io.port, trigger_kind="register", trigger_address=TRIGGER_REG, trigger_clear=False))
        wait_until(lambda: outputs.snapshot()[0].connected, 10, what="connected")
        import time

        time.sleep(0.2)
        plc.register(TRIGGER_REG, 5)
        wait_until(lambda: len(hook.requests) == 1, 5, what="the first edge")
        time.sleep(0.3)  # still set through ten polls: the same edge
        assert len(hook.requests) == 1 and plc.read_register(TRIGGER_REG) == 5
        plc.register(TRIGGER_REG, 0)
        time.sleep(0.2)
        assert len(hook.requests) == 1  # falling: nothing
        plc.register(TRIGGER_REG, 1)
        wait_until(lambda: len(hook.requests) == 2, 5, what="the second edge")
        # only the PLC wrote the trigger register (5, 0, 1): the station did not clear it
        assert [w["values"] for w in io.writes() if w["address"] == TRIGGER_REG and w["fc"] in (6, 16)] == [[5], [0], [1]]
    finally:
        assert outputs.close(timeout=10)
        plc.close()
        io.kill()


def test_a_trigger_already_set_at_connect_is_cleared_not_inspected(tmp_path):
    pytest.importorskip("pymodbus", reason="pymodbus is not installed (requirements.txt pins it)")
    io = ModbusIO(tmp_path / "io").start()
    plc = Plc(io.port)
    plc.coil(TRIGGER_COIL, True)  # left over from before the station connected
    hook = Hook()
    outputs = LineOutputs(ResultsStore(tmp_path / "results.db"), backoff=fast, on_trigger=hook)
    try:
        outputs.apply(modbus(io.port, trigger_answer=ANSWER_REG))
        wait_until(lambda: not plc.read_coil(TRIGGER_COIL), 10, what="the stale trigger cleared")
        assert hook.requests == [] and plc.read_register(ANSWER_REG) == 2
        plc.coil(TRIGGER_COIL, True)
        wait_until(lambda: len(hook.requests) == 1, 5, what="a real edge after it")
    finally:
        assert outputs.close(timeout=10)
        plc.close()
        io.kill()


# -- the line's part id reaches the record -------------------------------------------------------

def test_a_line_triggered_inspection_is_recorded_with_the_lines_part_id(tmp_path, qtbot):
    """The part id travels with the trigger id (``InferenceController.trigger(part_id)``, as
    ``LivePipeline.request_trigger`` hands it on) to the worker, which records the inspection that
    answers the trigger with it; a trigger without one (Space) stores NULL. The whole live station
    taking an OPC UA ``Inspect("P-7")``: tests/test_line_outputs_qt.py."""
    from types import SimpleNamespace

    from station.mailbox import TRIGGERED
    from station.qt.inference import InferenceController
    from station.recording import Recorder, RecordPolicy
    from station_helpers import FakeRecipe, SlowInspector, feeding_frames

    store = ResultsStore(tmp_path / "results.db")
    recorder = Recorder(SimpleNamespace(store=store, evidence=None))
    ctl = InferenceController(recorder, inspector_factory=lambda r: SlowInspector(0.0), mode=TRIGGERED,
                              policy=RecordPolicy("triggered", outbox=("mqtt",)), threads=1)
    ctl.start()
    try:
        with feeding_frames(ctl):
            with qtbot.waitSignal(ctl.recipe_loaded, timeout=5000):
                ctl.set_recipe(FakeRecipe())
            rows = []
            for part_id in ("P-9", None, ""):
                with qtbot.waitSignal(ctl.inspection_recorded, timeout=5000) as blocker:
                    assert ctl.trigger(part_id) is not None
                rows.append(blocker.args[0])
    finally:
        ctl.stop()
    got = [store.get_inspection(r) for r in rows]
    assert [(r.part_id, r.mode) for r in got] == [("P-9", "triggered"), (None, "triggered"), (None, "triggered")]
    pending = store.outbox_pending("mqtt")
    from station.line_message import result_message

    assert [result_message(i.record, station="b1")["part_id"] for i in pending] == [
        "P-9", f"b1-{rows[1]}", f"b1-{rows[2]}"]
    store.close()
