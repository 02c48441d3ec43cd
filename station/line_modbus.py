"""The Modbus TCP line output (pymodbus 3.x): the station as a client writing to a PLC or remote I/O.

Per result, from the outbox, in order (``station.outbox``): the holding registers from
``register_base`` (part counter = the channel's running number mod 65536, verdict code
1 OK / 2 NG / 3 REVIEW, inspection id high word, low word), then the verdict's coil (OK, NG or
REVIEW) on for ``pulse_ms`` and off for as long, so the PLC sees every edge. A result is marked
delivered once the coil is off again; one cut off half-way goes out again (the id registers let
the PLC skip a repeat). Between results: ``ready`` and ``busy`` follow the station
(:meth:`set_outputs`), ``heartbeat`` toggles every ``heartbeat_s`` (a PLC watchdog sees a stuck
or gone station). On connecting the three verdict coils are switched off first (a pulse cut by a
lost connection is never left on); on a clean stop ready, busy and heartbeat go off.

The trigger (``ModbusSettings.trigger_enabled``, off by default): between results the worker reads
the trigger coil (function 1) or holding register (function 3) every ``trigger_poll_ms`` (a
sleep, never a hot loop); a rising edge (off -> on, 0 -> not 0) asks the station's trigger hook
for one inspection, once. With ``trigger_clear`` the station then writes it back to off / 0 (the
PLC sets it, the station clears it: the next set is the next edge); ``trigger_answer`` (a holding
register, -1 none) gets 1 accepted / 2 refused per edge. What the trigger reads at connect is the
baseline, not an edge (a request left over from before a lost connection does not inspect a part
that is long gone; with ``trigger_clear`` it is cleared and answered refused). Qt-free.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from core.store import OutboxItem
from station.line_message import VERDICT_CODES
from station.line_settings import ModbusSettings
from station.outbox import NO_TRIGGER, ChannelError, TriggerAnswer, TriggerHook, TriggerRequest

log = logging.getLogger(__name__)

_QUIETED: list[bool] = []


def quiet_pymodbus() -> None:
    """pymodbus logs an ERROR line for every failed connection attempt; the station logs each change
    of state itself (``station.outbox``), so pymodbus's own lines go only to debugging (once)."""
    if not _QUIETED:
        _QUIETED.append(True)
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusChannel:
    """See the module docstring; used by one delivery worker thread (``set_outputs``: any thread)."""

    name = "modbus"
    label = "Modbus"

    def __init__(self, cfg: ModbusSettings):
        try:
            import pymodbus.client  # noqa: F401 - fail here, in words, when it is missing
        except ImportError as exc:
            raise ChannelError("the Modbus library (pymodbus) is not installed") from exc
        self.cfg = cfg
        self.peer = cfg.peer
        self.on_lost: Callable[[], None] | None = None
        self.lost_reason = ""
        self._client: Any = None
        self._lock = threading.Lock()
        self._wanted = {"ready": False, "busy": False}
        self._written: dict[int, bool] = {}  # coil -> what this connection last wrote there
        self._heartbeat = False
        self._next_beat = 0.0
        self.verdict_coils = {"PASS": cfg.coil_ok, "FAIL": cfg.coil_ng, "REVIEW": cfg.coil_review}
        self._trigger: TriggerHook | None = None
        self._trigger_seen: int | None = None  # what the trigger read last (None: not read on this connection)
        self._next_poll = 0.0
        self.triggers = 0  # rising edges seen since start (for the tests and the log)

    def set_trigger(self, hook: TriggerHook | None) -> None:
        """The station's trigger hook (``LineOutputs.request_trigger``): what a rising edge asks."""
        self._trigger = hook

    @property
    def connected(self) -> bool:
        return self._client is not None

    def set_outputs(self, ready: bool, busy: bool) -> None:
        """The station's state, written to the ready and busy coils at the next tick."""
        with self._lock:
            self._wanted = {"ready": bool(ready), "busy": bool(busy)}

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        from pymodbus.client import ModbusTcpClient

        quiet_pymodbus()
        cfg = self.cfg
        client = ModbusTcpClient(cfg.host, port=int(cfg.port), timeout=float(cfg.timeout_s), retries=0)
        try:
            ok = client.connect()
        except Exception as exc:  # noqa: BLE001 - pymodbus raises little, but say it in words if it does
            client.close()
            raise ChannelError(f"the PLC {self.peer} cannot be reached ({exc})") from exc
        if not ok:
            client.close()
            raise ChannelError(f"nothing answers at {self.peer}: is the PLC or I/O module on and connected?")
        self._client = client
        self._written = {}
        self._next_beat = 0.0
        self._trigger_seen = None
        self._next_poll = 0.0
        for coil in self.verdict_coils.values():
            self._coil(coil, False)

    def close(self, clean: bool) -> None:
        client = self._client
        if client is None:
            return
        if clean:
            try:
                for coil in (self.cfg.coil_ready, self.cfg.coil_busy, self.cfg.coil_heartbeat):
                    self._coil(coil, False)
            except ChannelError:
                pass
        self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    # -- writes ----------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        from pymodbus.exceptions import ModbusException

        try:
            rr = fn(*args, device_id=int(self.cfg.unit))
        except ModbusException as exc:
            self._drop()
            raise ChannelError(f"the connection to the PLC {self.peer} was lost while writing {what} ({exc})") from exc
        except OSError as exc:
            self._drop()
            raise ChannelError(f"the connection to the PLC {self.peer} was lost while writing {what} "
                               f"({exc.strerror or exc})") from exc
        if rr.isError():
            code = getattr(rr, "exception_code", "?")
            raise ChannelError(f"the PLC {self.peer} refused {what} (Modbus exception {code}): check the "
                               "addresses and the unit id in Settings > Line outputs")

    def _coil(self, address: int, value: bool) -> None:
        client = self._client
        if client is None:
            raise ChannelError(self.lost_reason or f"not connected to the PLC {self.peer}")
        self._call(f"coil {address}", client.write_coil, int(address), bool(value))
        self._written[int(address)] = bool(value)

    def deliver(self, item: OutboxItem) -> None:
        client = self._client
        if client is None:
            raise ChannelError(f"not connected to the PLC {self.peer}")
        verdict = item.record.verdict
        iid = item.inspection_id
        registers = [item.seq & 0xFFFF, VERDICT_CODES.get(verdict, 0), (iid >> 16) & 0xFFFF, iid & 0xFFFF]
        base = int(self.cfg.register_base)
        self._call(f"registers {base}-{base + len(registers) - 1}", client.write_registers, base, registers)
        coil = self.verdict_coils.get(verdict)
        if coil is None:
            return
        pulse = max(0.02, self.cfg.pulse_ms / 1000.0)
        self._coil(coil, True)
        time.sleep(pulse)
        self._coil(coil, False)
        time.sleep(pulse)  # the PLC sees the coil off before the next result's edge

    def tick(self) -> float:
        if self._client is None:
            raise ChannelError(f"not connected to the PLC {self.peer}")
        with self._lock:
            wanted = dict(self._wanted)
        for key, coil in (("ready", self.cfg.coil_ready), ("busy", self.cfg.coil_busy)):
            if self._written.get(int(coil)) != wanted[key]:
                self._coil(coil, wanted[key])
        now = time.monotonic()
        period = max(0.1, float(self.cfg.heartbeat_s))
        if now >= self._next_beat:
            self._heartbeat = not self._heartbeat
            self._coil(self.cfg.coil_heartbeat, self._heartbeat)
            self._next_beat = now + period
        due = self._next_beat
        if self.cfg.trigger_enabled:
            if time.monotonic() >= self._next_poll:
                self._poll_trigger()
                self._next_poll = time.monotonic() + max(0.02, self.cfg.trigger_poll_ms / 1000.0)
            due = min(due, self._next_poll)
        return max(0.01, due - time.monotonic())

    # -- the trigger -----------------------------------------------------------------------
    def _read_trigger(self) -> int:
        from pymodbus.exceptions import ModbusException

        client = self._client
        if client is None:
            raise ChannelError(f"not connected to the PLC {self.peer}")
        cfg = self.cfg
        what = f"the trigger {cfg.trigger_kind} {cfg.trigger_address}"
        try:
            if cfg.trigger_kind == "register":
                rr = client.read_holding_registers(int(cfg.trigger_address), count=1, device_id=int(cfg.unit))
            else:
                rr = client.read_coils(int(cfg.trigger_address), count=1, device_id=int(cfg.unit))
        except (ModbusException, OSError) as exc:
            self._drop()
            raise ChannelError(f"the connection to the PLC {self.peer} was lost while reading {what} ({exc})") from exc
        if rr.isError():
            code = getattr(rr, "exception_code", "?")
            raise ChannelError(f"the PLC {self.peer} refused reading {what} (Modbus exception {code}): check the "
                               "address and the unit id in Settings > Line outputs")
        return int(rr.registers[0]) if cfg.trigger_kind == "register" else int(bool(rr.bits[0]))

    def _trigger_done(self, answer: TriggerAnswer) -> None:
        cfg = self.cfg
        client = self._client
        if client is None:
            raise ChannelError(f"not connected to the PLC {self.peer}")
        if cfg.trigger_answer >= 0:
            self._call(f"the answer register {cfg.trigger_answer}", client.write_register, int(cfg.trigger_answer),
                       1 if answer.accepted else 2)
        if cfg.trigger_clear:
            if cfg.trigger_kind == "register":
                self._call(f"the trigger register {cfg.trigger_address}", client.write_register,
                           int(cfg.trigger_address), 0)
            else:
                self._coil(cfg.trigger_address, False)
            self._trigger_seen = 0

    def _poll_trigger(self) -> None:
        value = self._read_trigger()
        before, self._trigger_seen = self._trigger_seen, value
        if not value:
            return
        if before is None:  # on at connect: the baseline, not an edge
            if self.cfg.trigger_clear:
                log.warning("Modbus: the trigger was on when the station connected; cleared without inspecting")
                self._trigger_done(TriggerAnswer(False, "the trigger was on before the station connected"))
            return
        if before:
            return  # still on: the same edge
        self.triggers += 1
        hook = self._trigger
        answer = hook(TriggerRequest("modbus")) if hook is not None else TriggerAnswer(False, NO_TRIGGER)
        if answer.accepted:
            log.info("Modbus trigger: accepted")
        else:
            log.warning("Modbus trigger refused: %s", answer.reason)
        self._trigger_done(answer)
