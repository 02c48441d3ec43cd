"""The Modbus TCP line output against a real pymodbus TCP server on loopback (the remote I/O
module, its own process): each result is its registers and then a pulse of its verdict's coil; a
PLC that reads the inspection id from the registers on each rising edge sees every result once
(after de-duplication), in order, across server crashes (SIGKILL) while parts keep being recorded
and across a station restart; ready, busy and heartbeat; a refused address in words."""
from __future__ import annotations

import pytest

pytest.importorskip("pymodbus", reason="pymodbus is not installed (requirements.txt pins it: run `make test`)")

from core.store import ResultsStore  # noqa: E402
from station.context import StationSettings  # noqa: E402
from station.line_modbus import ModbusChannel  # noqa: E402
from station.line_settings import ModbusSettings  # noqa: E402
from station.outbox import ChannelError, LineOutputs  # noqa: E402
from station.recording import RecordPolicy  # noqa: E402

from line_peers import Line, ModbusIO, fast, free_port, wait_until  # noqa: E402

COILS = dict(coil_ok=8, coil_ng=9, coil_review=10, coil_busy=11, coil_ready=12, coil_heartbeat=13)
BASE = 20
CODES = {1: "PASS", 2: "FAIL", 3: "REVIEW"}


def modbus_settings(port: int, **changes) -> StationSettings:
    s = StationSettings()
    s.modbus = ModbusSettings(enabled=True, host="127.0.0.1", port=port, unit=1, register_base=BASE, pulse_ms=20,
                              heartbeat_s=0.2, timeout_s=1.0, **{**COILS, **changes})
    return s


def plc_view(writes: list[dict]) -> list[tuple[int, str, int, int]]:
    """What a PLC sees: on each rising edge of a verdict coil, (inspection id, verdict of the coil,
    verdict code and part counter in the registers)."""
    regs = [0, 0, 0, 0]
    coil_verdict = {COILS["coil_ok"]: "PASS", COILS["coil_ng"]: "FAIL", COILS["coil_review"]: "REVIEW"}
    state: dict[int, int] = {}
    seen = []
    for w in writes:
        if w["fc"] == 16 and w["address"] == BASE:
            regs = w["values"]
        elif w["fc"] == 5:
            coil, value = w["address"], w["values"][0]
            if coil in coil_verdict and value and not state.get(coil):
                seen.append(((regs[2] << 16) | regs[3], coil_verdict[coil], regs[1], regs[0]))
            state[coil] = value
    return seen


def test_every_result_is_pulsed_once_per_id_in_order_across_server_crashes_and_a_station_restart(tmp_path):
    io = ModbusIO(tmp_path / "io").start()
    try:
        settings = modbus_settings(io.port)
        policy = RecordPolicy.from_settings(settings)
        assert policy.outbox == ("modbus",)
        path = tmp_path / "results.db"
        store = ResultsStore(path)
        outputs = LineOutputs(store, backoff=fast)
        outputs.apply(settings)
        line = Line(store, policy, every_s=0.1).run()  # a result takes 2 x 20 ms of pulse and 3 writes

        def pulsed():
            return {s[0] for s in plc_view(io.writes())}

        wait_until(lambda: len(pulsed()) >= 5, 20, what="the first pulses")
        io.kill()  # mid-run, most likely mid-pulse
        wait_until(lambda: not outputs.snapshot()[0].connected, 10, what="the station to notice")
        line.more(10)
        assert outputs.snapshot()[0].backlog >= 5
        io.start()
        line.more(5)
        wait_until(lambda: set(line.ids[:-3]) <= pulsed(), 30, what="the backlog after the I/O came back")

        io.kill()  # down again, and the station stops with results waiting
        line.more(5)
        line.halt()
        assert outputs.close()
        store.close()

        store = ResultsStore(path)
        assert store.outbox_backlog("modbus") >= 5
        outputs = LineOutputs(store, backoff=fast)
        outputs.apply(settings)
        io.start()
        line.store = store
        for _ in range(3):
            line.part()
        wait_until(lambda: set(line.ids) <= pulsed(), 30, what="every result after the restart")
        wait_until(lambda: store.outbox_backlog("modbus") == 0, 5, what="an empty outbox")
        assert outputs.close()
        store.close()

        seen = plc_view(io.writes())
        unique = list(dict.fromkeys(s[0] for s in seen))
        assert unique == line.ids == sorted(line.ids)  # once each, in order
        first = {}
        for iid, coil_verdict, code, counter in seen:
            first.setdefault(iid, (coil_verdict, code, counter))
            assert (coil_verdict, CODES[code]) == (line.verdicts[iid],) * 2  # the coil matches the register
        assert [first[i][2] for i in unique] == list(range(1, len(unique) + 1))  # the part counter, no gap
    finally:
        io.kill()


def test_ready_busy_and_heartbeat_follow_the_station_and_go_off_on_a_clean_stop(tmp_path):
    io = ModbusIO(tmp_path / "io").start()
    try:
        with ResultsStore(tmp_path / "results.db") as store:
            outputs = LineOutputs(store, backoff=fast)
            outputs.apply(modbus_settings(io.port))

            def last(coil):
                values = [w["values"][0] for w in io.writes() if w["fc"] == 5 and w["address"] == coil]
                return values[-1] if values else None

            def beats():
                return [w["values"][0] for w in io.writes() if w["fc"] == 5 and w["address"] == COILS["coil_heartbeat"]]

            wait_until(lambda: len(beats()) >= 4, 10, what="the heartbeat")
            assert beats()[:4] == [1, 0, 1, 0]
            assert last(COILS["coil_ready"]) == 0 and last(COILS["coil_busy"]) == 0
            outputs.set_outputs(ready=True, busy=True)
            wait_until(lambda: last(COILS["coil_ready"]) == 1 and last(COILS["coil_busy"]) == 1, 5,
                       what="ready and busy on")
            outputs.set_outputs(ready=True, busy=False)
            wait_until(lambda: last(COILS["coil_busy"]) == 0, 5, what="busy off")
            assert outputs.snapshot()[0].words() == "Modbus connected"
            assert outputs.close()
            assert (last(COILS["coil_ready"]), last(COILS["coil_heartbeat"])) == (0, 0)  # the PLC sees it go
    finally:
        io.kill()


def test_a_refused_address_and_a_missing_module_are_said_in_words(tmp_path):
    port = free_port()
    channel = ModbusChannel(modbus_settings(port).modbus)
    with pytest.raises(ChannelError, match=f"nothing answers at 127.0.0.1:{port}"):
        channel.connect()
    io = ModbusIO(tmp_path / "io").start()
    try:
        channel = ModbusChannel(modbus_settings(io.port, coil_heartbeat=500).modbus)  # beyond the module's 64 coils
        channel.connect()
        with pytest.raises(ChannelError, match="refused coil 500"):
            channel.tick()
        channel.close(clean=False)
        assert not channel.connected
    finally:
        io.kill()
