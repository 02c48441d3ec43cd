"""The durable outbox without a network: the store's outbox table (same transaction as the row,
additive migration), the recording policy, the line settings, the result message, and the
delivery worker against a fake peer that goes away and comes back."""
from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time

import numpy as np
import pytest

from core.store import SCHEMA_VERSION, ResultsStore, StoredInspection, StoreError
from core.types import Decision
from station.context import StationSettings
from station.line_message import SCHEMA, item_payload, result_message
from station.line_settings import ModbusSettings, MqttSettings, enabled_channels
from station.outbox import Backoff, ChannelError, ChannelState, DeliveryWorker, LineOutputs
from station.recording import RecordPolicy, record, record_failure

from station_helpers import make_inspection
from line_peers import wait_until

IMAGE = np.zeros((32, 32, 3), np.uint8)


def rec(decision=Decision.PASS, source="p") -> StoredInspection:
    return StoredInspection(id=None, ts="2024-05-01T12:00:00.000Z", source=source, recipe="widget",
                            recipe_version=3, decision=decision)


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "results.db") as s:
        yield s


# -- the store ------------------------------------------------------------------------------

def test_a_record_and_its_outbox_rows_are_one_transaction(store):
    heard = []
    store.add_outbox_listener(heard.append)
    a = store.add_record(rec(), outbox=("mqtt", "modbus"))
    b = store.add_record(rec(Decision.FAIL), outbox=("mqtt",))
    store.add_record(rec())  # no line output: no outbox row
    assert heard == [("mqtt", "modbus"), ("mqtt",)]
    mqtt = store.outbox_pending("mqtt")
    assert [(i.inspection_id, i.seq) for i in mqtt] == [(a, 1), (b, 2)]
    assert [(i.inspection_id, i.seq) for i in store.outbox_pending("modbus")] == [(a, 1)]
    assert mqtt[1].record.decision is Decision.FAIL and mqtt[1].record.recipe == "widget"
    # a refused record queues nothing: a record with neither decision nor error
    with pytest.raises(StoreError):
        store.add_record(StoredInspection(id=None, ts="2024-05-01", source="x", recipe="", recipe_version=0,
                                          decision=None), outbox=("mqtt",))
    # a refused outbox row takes its record with it (the same transaction)
    n = store.counts()["inspected"]
    with pytest.raises(StoreError):
        store.add_record(rec(), outbox=("no such channel!",))
    assert store.counts()["inspected"] == n and store.outbox_backlog("mqtt") == 2
    with pytest.raises(sqlite3.IntegrityError):  # one row per (inspection, channel)
        with store._transaction() as conn:
            conn.execute("INSERT INTO outbox (inspection_id, channel, seq, created) VALUES (?, 'mqtt', 99, 'x')", (a,))


def test_delivered_rows_leave_the_pending_list_and_old_ones_are_pruned(store):
    ids = [store.add_record(rec(), outbox=("mqtt",)) for _ in range(4)]
    items = store.outbox_pending("mqtt")
    assert store.outbox_delivered(items[0].id) is True
    assert store.outbox_delivered(items[0].id) is False  # already
    store.outbox_failed(items[1].id, "the broker went away")
    pending = store.outbox_pending("mqtt")
    assert [i.inspection_id for i in pending] == ids[1:]
    assert (pending[0].attempts, pending[0].last_error) == (1, "the broker went away")
    assert store.outbox_pending("mqtt", after_id=pending[0].id)[0].inspection_id == ids[2]
    for i in pending:
        store.outbox_delivered(i.id)
    assert store.outbox_backlog("mqtt") == 0 and store.outbox_delivered_count("mqtt") == 4
    assert store.outbox_prune("2000-01-01") == 0  # none delivered that long ago
    assert store.outbox_prune("2999-01-01") == 3  # the newest stays: it keeps the running number
    store.add_record(rec(), outbox=("mqtt",))
    assert store.outbox_pending("mqtt")[0].seq == 5


def test_an_older_store_gets_the_outbox_when_opened_and_keeps_its_schema_version(tmp_path):
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        s.add_record(rec())
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX idx_outbox_pending")
    raw.execute("DROP TABLE outbox")  # a store written before the outbox existed
    raw.commit()
    raw.close()
    with ResultsStore(path) as s:
        assert s.counts()["inspected"] == 1
        s.add_record(rec(), outbox=("mqtt",))
        assert s.outbox_backlog("mqtt") == 1
    raw = sqlite3.connect(path)
    names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert {"outbox", "idx_outbox_pending", "inspections_keep_reviewed"} <= names
    # objects added later raise no schema version (an older station still opens the store)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


# -- recording, settings, the message ---------------------------------------------------------

def test_live_records_are_queued_for_the_enabled_outputs_and_batch_ones_are_not(store):
    s = StationSettings()
    assert enabled_channels(s) == ()  # every output off by default
    assert RecordPolicy.from_settings(s).outbox == ()
    s.mqtt.enabled = True
    s.modbus.enabled = True
    live = RecordPolicy.from_settings(s)
    assert live.outbox == ("mqtt", "modbus")
    assert RecordPolicy.from_settings(s, mode="batch").outbox == ()
    out = record(store, None, make_inspection("FAIL"), IMAGE, live)
    assert out.problem is None
    assert [i.inspection_id for i in store.outbox_pending("modbus")] == [out.inspection_id]
    record(store, None, make_inspection("PASS"), IMAGE, RecordPolicy.from_settings(s, mode="batch"))
    record_failure(store, "bad.png", "not an image", mode="continuous")
    assert store.outbox_backlog("mqtt") == 1 and store.counts()["inspected"] == 2


def test_line_settings_round_trip_keep_the_password_out_of_sight_and_survive_bad_values(tmp_path, caplog):
    s = StationSettings()
    s.mqtt = MqttSettings(enabled=True, host="broker.plant", username="station", password="s3cret!")
    s.modbus = ModbusSettings(enabled=True, host="10.0.0.7", coil_ok=16, pulse_ms=150)
    path = tmp_path / "station.json"
    s.save(path)
    back = StationSettings.load(path)
    assert back.mqtt == s.mqtt and back.modbus == s.modbus
    assert json.loads(path.read_text())["mqtt"]["host"] == "broker.plant"
    assert "s3cret" not in repr(back) and "s3cret" not in repr(back.mqtt)
    data = json.loads(path.read_text())
    data["mqtt"].update(port="not a port", enabled="yes", password=7, bogus=1)
    data["modbus"] = "garbage"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        bad = StationSettings.load(path)
    assert (bad.mqtt.port, bad.mqtt.enabled, bad.mqtt.password, bad.mqtt.host) == (1883, False, "", "broker.plant")
    assert bad.modbus == ModbusSettings()
    assert "s3cret" not in caplog.text and "MqttSettings.port" in caplog.text


def test_line_settings_say_what_keeps_an_output_from_starting():
    assert MqttSettings().problems() == [] and ModbusSettings(host="plc").problems() == []
    assert any("address" in p for p in ModbusSettings().problems())  # no host
    assert any("coil of its own" in p for p in ModbusSettings(host="plc", coil_ng=0).problems())
    assert any("topic" in p for p in MqttSettings(topic_prefix="plant/+/x").problems())
    assert any("one topic level" in p for p in MqttSettings(station="a/b").problems())
    assert any("TLS is off" in p for p in MqttSettings(ca_file="/ca.pem").problems())
    assert MqttSettings(topic_prefix="/plant/line3/", station="bench-2").result_topic == "plant/line3/bench-2/result"


def test_the_result_message_carries_schema_ids_verdict_reasons_scores_and_recipe(store):
    s = StationSettings()
    s.mqtt.enabled = True
    out = record(store, None, make_inspection("REVIEW", source="Camera 0"), IMAGE, RecordPolicy.from_settings(s))
    item = store.outbox_pending("mqtt")[0]
    msg = json.loads(item_payload(item, "bench-2"))
    assert msg == result_message(item.record, station="bench-2", seq=1)
    assert msg["schema"] == SCHEMA == 1
    assert (msg["inspection_id"], msg["seq"], msg["part_id"]) == (out.inspection_id, 1, f"bench-2-{out.inspection_id}")
    assert (msg["verdict"], msg["station"], msg["source"]) == ("REVIEW", "bench-2", "Camera 0")
    assert msg["reasons"] == list(out.record.reasons) and "models_disagree" in msg["reasons"]
    assert msg["recipe"] == {"product": "fake", "version": 1}
    pc = msg["models"]["patchcore"]
    assert pc["score"] == pytest.approx(out.record.scores["patchcore"].score)
    assert (pc["pass_limit"], pc["fail_limit"]) == pytest.approx(out.record.scores["patchcore"].band)
    assert msg["time"] == out.record.ts and msg["time"].endswith("Z")
    assert item_payload(item, "bench-2") == item_payload(store.outbox_pending("mqtt")[0], "bench-2")  # a retry: same bytes


def test_the_result_message_carries_the_lines_part_id_when_the_record_has_one(store):
    s = StationSettings()
    s.mqtt.enabled = True
    policy = RecordPolicy.from_settings(s, mode="triggered")
    out = record(store, None, make_inspection("PASS", source="Camera 0"), IMAGE, policy, part_id="A-000123")
    plain = record(store, None, make_inspection("PASS", source="Camera 0"), IMAGE, policy)  # Space: none
    assert (out.record.part_id, plain.record.part_id) == ("A-000123", None)
    first, second = store.outbox_pending("mqtt")
    assert first.record.part_id == "A-000123"  # read back from the row the message is built from
    assert json.loads(item_payload(first, "bench-2"))["part_id"] == "A-000123"
    assert json.loads(item_payload(second, "bench-2"))["part_id"] == f"bench-2-{plain.inspection_id}"
    assert result_message(dataclasses.replace(first.record, part_id=""), station="b")["part_id"] == f"b-{first.inspection_id}"


# -- the delivery worker ----------------------------------------------------------------------

class FakePeer:
    """A channel whose peer can be switched off; records what it was given, in order."""

    name, label, peer = "mqtt", "MQTT", "fake:1"

    def __init__(self):
        self.up = threading.Event()
        self.got: list[int] = []
        self.connects = 0
        self.fail_next_delivery = False
        self.on_lost = None
        self._connected = False
        self.closed_clean = 0

    @property
    def connected(self):
        return self._connected and self.up.is_set()

    def connect(self):
        self.connects += 1
        if not self.up.is_set():
            raise ChannelError("nothing answers at fake:1")
        self._connected = True

    def deliver(self, item):
        if not self.up.is_set():
            raise ChannelError("the connection to fake:1 was lost")
        if self.fail_next_delivery:  # sent, but the acknowledgement never came
            self.fail_next_delivery = False
            self.got.append(item.inspection_id)
            raise ChannelError("no acknowledgement")
        self.got.append(item.inspection_id)

    def tick(self):
        return 5.0

    def close(self, clean):
        self.closed_clean += bool(clean)
        self._connected = False


def fast() -> Backoff:
    return Backoff(initial=0.02, cap=0.2)


def test_backoff_grows_to_its_cap_and_starts_again_after_a_success():
    b = Backoff(initial=1.0, cap=8.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 1.0
    j = Backoff(initial=1.0, cap=8.0, jitter=0.1)
    assert all(0.9 <= j.next() <= 8.8 for _ in range(20))


def test_a_peer_that_is_down_is_retried_with_backoff_logged_once_and_then_gets_everything_in_order(store, caplog):
    peer = FakePeer()
    ids = [store.add_record(rec(), outbox=("mqtt",)) for _ in range(5)]
    worker = DeliveryWorker(store, peer, Backoff(initial=0.05, cap=0.2, jitter=0.0))
    with caplog.at_level(logging.DEBUG, logger="station.outbox"):
        worker.start()
        try:
            time.sleep(1.0)
            # 1 s with the peer down: 0.05 + 0.1 + 0.2 + 0.2 ... about 7 attempts, never a hot loop
            assert 3 <= peer.connects <= 10
            state = worker.snapshot()
            assert (state.connected, state.backlog) == (False, 5) and "nothing answers" in state.last_error
            assert state.words() == "MQTT: 5 waiting, not connected"
            downs = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(downs) == 1 and "nothing answers at fake:1" in downs[0].getMessage()
            peer.up.set()
            wait_until(lambda: len(peer.got) == 5, 5.0, what="the backlog")
            assert peer.got == ids
            wait_until(lambda: worker.snapshot().backlog == 0, 2.0, what="an empty backlog")
            assert worker.snapshot().connected and worker.snapshot().words() == "MQTT connected"
            wait_until(lambda: any("connected to fake:1" in r.getMessage() for r in caplog.records), 3.0,
                       what="the log line saying it is back")
            assert len([r for r in caplog.records if r.levelno >= logging.INFO]) == 2  # down once, up once
        finally:
            worker.stop()
            assert worker.join(5)
    assert store.outbox_backlog("mqtt") == 0 and peer.closed_clean == 1


def test_a_lost_acknowledgement_sends_that_result_again_then_the_rest_in_order(store):
    peer = FakePeer()
    peer.up.set()
    outputs = LineOutputs(store, factories={"mqtt": lambda cfg: peer}, backoff=fast)
    s = StationSettings()
    s.mqtt.enabled = True
    outputs.apply(s)
    try:
        ids = [store.add_record(rec(), outbox=("mqtt",)) for _ in range(3)]
        wait_until(lambda: len(peer.got) == 3, 5.0, what="three results")
        peer.fail_next_delivery = True
        more = [store.add_record(rec(), outbox=("mqtt",)) for _ in range(3)]
        wait_until(lambda: len(set(peer.got)) == 6 and store.outbox_backlog("mqtt") == 0, 5.0, what="the rest")
        assert peer.got == ids + [more[0]] + more  # at least once: the unacknowledged one twice, order kept
        (state,) = outputs.snapshot()
        assert state.delivered == 6 and state.connected
    finally:
        assert outputs.close()


def test_a_restarted_station_resumes_the_undelivered_rows(tmp_path):
    path = tmp_path / "results.db"
    peer = FakePeer()  # down the whole first run
    s = StationSettings()
    s.mqtt.enabled = True
    store = ResultsStore(path)
    outputs = LineOutputs(store, factories={"mqtt": lambda cfg: peer}, backoff=fast)
    outputs.apply(s)
    ids = [store.add_record(rec(), outbox=("mqtt",)) for _ in range(4)]
    wait_until(lambda: outputs.snapshot()[0].backlog == 4, 2.0, what="a backlog of 4")
    assert outputs.close()
    store.close()  # the station stops with 4 results undelivered

    peer2 = FakePeer()
    peer2.up.set()
    store = ResultsStore(path)
    try:
        outputs = LineOutputs(store, factories={"mqtt": lambda cfg: peer2}, backoff=fast)
        outputs.apply(s)
        ids.append(store.add_record(rec(), outbox=("mqtt",)))
        wait_until(lambda: len(peer2.got) == 5, 5.0, what="the resumed rows")
        assert peer2.got == ids and peer.got == []
        assert outputs.close()
    finally:
        store.close()


def test_line_outputs_follow_the_settings_and_report_what_keeps_one_from_starting(store):
    peers: list[FakePeer] = []

    def make(cfg):
        peers.append(FakePeer())
        peers[-1].up.set()
        return peers[-1]

    outputs = LineOutputs(store, factories={"mqtt": make, "modbus": make}, backoff=fast)
    s = StationSettings()
    outputs.apply(s)
    assert outputs.snapshot() == () and outputs.channels() == ()  # nothing on: nothing shown
    s.mqtt.enabled = True
    s.modbus.enabled = True  # no host: cannot start
    outputs.apply(s)
    states = outputs.snapshot()
    assert [x.channel for x in states] == ["mqtt", "modbus"]
    assert states[1] == ChannelState("modbus", "Modbus", ":502", running=False,
                                     last_error="Modbus: type the address of the PLC or I/O module.")
    assert states[1].words() == "Modbus: not started"
    outputs.apply(s)  # unchanged: the running worker stays
    assert len(peers) == 1
    s.mqtt.port = 1884  # changed: restarted
    outputs.apply(s)
    assert len(peers) == 2
    wait_until(lambda: peers[0].closed_clean == 1, 5.0, what="the old worker to stop")
    s.mqtt.enabled = False
    outputs.apply(s)
    assert [x.channel for x in outputs.snapshot()] == ["modbus"]
    assert outputs.close()
