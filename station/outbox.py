"""Delivering the outbox: one plain thread per enabled line output, nothing lost, nothing out of order.

A result is queued for every enabled channel in the same transaction that records it
(``core.store.ResultsStore.add_record(..., outbox=...)``, called by ``station.recording``). Here a
:class:`DeliveryWorker` per channel takes the channel's pending rows oldest first, hands each to
its :class:`Channel` (``station.line_mqtt``, ``station.line_modbus``), and marks it delivered
once the peer has acknowledged it. When the peer cannot be reached the worker waits, with a
capped exponential backoff (never a hot loop), and tries again; the rows wait in the store, so a
station restart resumes them. Delivery is at least once: a row whose acknowledgement was lost
(or whose "delivered" mark did not reach the disk) goes out again, with the same message id.

The log gets one line per change of state (connected, lost and why, a different reason), never
one per retry. :meth:`LineOutputs.snapshot` gives the state of every channel as frozen
:class:`ChannelState` values for the status bar; it copies what the workers noted, under a lock
they never hold during network or store calls, so the UI thread never waits. Qt-free.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from core.store import OutboxItem, ResultsStore, StoreError
from station.line_settings import CHANNELS, LABELS

log = logging.getLogger(__name__)

KEEP_DELIVERED_DAYS = 30.0  # delivered outbox rows older than this are pruned when a worker starts
BATCH = 50  # rows read from the store at a time
POLL_S = 2.0  # look at the store at least this often while connected (rows another process wrote)


@dataclass(frozen=True)
class TriggerRequest:
    """A request from the line for one inspection (MQTT command, Modbus trigger, OPC UA ``Inspect``)."""

    source: str  # the channel that asked: "mqtt", "modbus", "opcua"
    part_id: str = ""  # the line's own id for the part, when it sent one (echoed in the answer)


@dataclass(frozen=True)
class TriggerAnswer:
    """Whether the station took the trigger; ``reason`` says why not, in words."""

    accepted: bool
    reason: str = ""


TriggerHook = Callable[[TriggerRequest], TriggerAnswer]  # thread-safe; returns within a few seconds
NO_TRIGGER = "this station takes no triggers from the line (no live station is running)"


class ChannelError(Exception):
    """The peer cannot be reached, or refused: plain words for the operator (never a password)."""


class Channel(Protocol):
    """One line output, used by one worker thread only (``set_outputs`` excepted)."""

    name: str  # the outbox channel: "mqtt", "modbus"
    label: str  # for people: "MQTT", "Modbus"
    peer: str  # "host:port"
    on_lost: Callable[[], None] | None  # the worker's wake-up: call it when the connection drops

    def connect(self) -> None: ...  # raises ChannelError

    def deliver(self, item: OutboxItem) -> None: ...  # returns once acknowledged; raises ChannelError

    def tick(self) -> float: ...  # periodic duties while connected; seconds until the next; raises ChannelError

    @property
    def connected(self) -> bool: ...  # False once the channel noticed the connection drop

    def close(self, clean: bool) -> None: ...  # never raises; clean: say goodbye to the peer


@dataclass
class Backoff:
    """Capped exponential backoff with a little jitter: initial, x factor, ... up to cap seconds."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1  # +- this fraction
    _next: float = 0.0

    def next(self) -> float:
        base = self._next or self.initial
        self._next = min(self.cap, base * self.factor)
        return base * (1.0 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._next = 0.0


@dataclass(frozen=True)
class ChannelState:
    """What the status bar shows for one channel."""

    channel: str
    label: str
    peer: str = ""
    connected: bool = False
    backlog: int = 0  # results waiting
    last_error: str = ""  # why it is not connected (or the last delivery failed), in words
    delivered: int = 0  # results delivered since the station started
    running: bool = True  # False: enabled but not started (``last_error`` says why)

    def words(self) -> str:
        """Short, for the status bar: "MQTT connected", "Modbus: 12 waiting, not connected"."""
        if not self.running:
            return f"{self.label}: not started"
        if self.connected:
            return f"{self.label} connected" + (f", sending {self.backlog}" if self.backlog else "")
        return f"{self.label}: {self.backlog} waiting, not connected" if self.backlog else f"{self.label}: not connected"

    def details(self) -> str:
        """The whole story, for a tooltip."""
        head = f"{self.label} ({self.peer})" if self.peer else self.label
        if not self.running:
            return f"{head}: not started. {self.last_error}"
        state = "connected" if self.connected else "not connected"
        text = f"{head}: {state}; {self.backlog} result(s) waiting, {self.delivered} delivered since start."
        if self.last_error:
            text += f" Last problem: {self.last_error}"
        return text


class DeliveryWorker:
    """The delivery thread of one channel; see the module docstring."""

    def __init__(self, store: ResultsStore, channel: Channel, backoff: Backoff | None = None,
                 after: "DeliveryWorker | None" = None, poll_s: float = POLL_S):
        self.store = store
        self.channel = channel
        self.name = channel.name
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self._after = after  # a worker of the same channel that is stopping: it finishes first
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._state = ChannelState(channel.name, channel.label, channel.peer)
        self._told: tuple[bool, str] | None = None  # the state last written to the log
        self._queued_meanwhile = 0  # results queued while the backlog was being counted
        self._thread = threading.Thread(target=self._run, name=f"outbox-{channel.name}", daemon=True)
        channel.on_lost = self.wake

    # -- control (any thread) ----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it says goodbye to the peer); returns at once."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def note_queued(self, count: int = 1) -> None:
        """A result was queued for this channel (a store listener): count it, deliver it soon."""
        with self._lock:
            self._state = dataclasses.replace(self._state, backlog=self._state.backlog + count)
            self._queued_meanwhile += count
        self._wake.set()

    def snapshot(self) -> ChannelState:
        with self._lock:
            return self._state

    # -- the thread ------------------------------------------------------------------------
    def _note(self, **changes: Any) -> ChannelState:
        with self._lock:
            self._state = dataclasses.replace(self._state, **changes)
            return self._state

    def _run(self) -> None:
        if self._after is not None:
            self._after.join()  # the previous worker of this channel delivers nothing any more
            self._after = None
        try:
            self._prune()
            while not self._stop.is_set():
                if not self.channel.connected:
                    self._count_backlog()  # what waits, also while the peer is away
                if not self.channel.connected and not self._connect():
                    self._stop.wait(self.backoff.next())
                    continue
                try:
                    self._deliver_pending()
                except ChannelError as exc:
                    self.channel.close(clean=False)
                    self._down(str(exc))
                    self._stop.wait(self.backoff.next())
                except (StoreError, sqlite3.Error) as exc:
                    self._problem(f"the results database cannot be read or written ({exc})")
                    self._stop.wait(self.backoff.next())
        except Exception:  # noqa: BLE001 - the loop itself broke: say so; the rows stay in the store
            log.exception("%s: the delivery thread stopped; results wait in the outbox", self.channel.label)
            self._note(connected=False, last_error="stopped after an unexpected error (see the log)")
        finally:
            self.channel.close(clean=True)
            self._note(connected=False)

    def _prune(self) -> None:
        try:
            gone = self.store.outbox_prune(datetime.now(timezone.utc) - timedelta(days=KEEP_DELIVERED_DAYS))
            if gone:
                log.info("%s: %d delivered outbox row(s) older than %.0f days pruned", self.channel.label, gone,
                         KEEP_DELIVERED_DAYS)
        except (StoreError, sqlite3.Error) as exc:
            log.warning("%s: pruning the outbox failed (%s)", self.channel.label, exc)

    def _count_backlog(self) -> None:
        """The backlog from the store, plus what was queued while it was counted (a row committed
        just before the count may be counted twice until the next count: never one too few)."""
        with self._lock:
            self._queued_meanwhile = 0
        try:
            n = self.store.outbox_backlog(self.name)
        except (StoreError, sqlite3.Error) as exc:
            self._problem(f"the results database cannot be read ({exc})")
            return
        with self._lock:
            self._state = dataclasses.replace(self._state, backlog=n + self._queued_meanwhile)

    def _connect(self) -> bool:
        try:
            self.channel.connect()
        except ChannelError as exc:
            self.channel.close(clean=False)
            self._down(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a library's surprise is a failed attempt, not a dead thread
            log.debug("%s: connecting failed", self.channel.label, exc_info=True)
            self.channel.close(clean=False)
            self._down(f"{type(exc).__name__}: {exc}")
            return False
        self._note(connected=True, last_error="")
        return True

    def _confirmed(self) -> None:
        """A delivery went through, or the connection held through a wait: it works. The backoff
        starts again from the beginning, and the log hears of it once (a peer that accepts the
        connection and then refuses every result does not make a line per attempt)."""
        self.backoff.reset()
        if self._told != (True, ""):
            self._told = (True, "")
            state = self.snapshot()
            log.info("%s: connected to %s; %d result(s) waiting", state.label, state.peer, state.backlog)

    def _down(self, words: str) -> None:
        state = self._note(connected=False, last_error=words)
        if self._told != (False, words):
            self._told = (False, words)
            stop = "" if words.endswith((".", "?", "!")) else "."
            log.warning("%s: %s%s Results wait in the outbox (%d now) and go out when it is back; retrying "
                        "at most every %.3g s.", state.label, words, stop, state.backlog, self.backoff.cap)
        else:
            log.debug("%s: still not connected (%s)", state.label, words)

    def _problem(self, words: str) -> None:
        self._note(last_error=words)
        if self._told != (self.channel.connected, words):
            self._told = (self.channel.connected, words)
            log.warning("%s: %s", self.channel.label, words)

    def _deliver_pending(self) -> None:
        """Deliver what waits, oldest first; then wait for more (or the next tick)."""
        self._wake.clear()  # a row queued from now on wakes the wait below
        wait = self.channel.tick()
        with self._lock:
            self._queued_meanwhile = 0
        items = self.store.outbox_pending(self.name, limit=BATCH)
        if len(items) < BATCH:
            with self._lock:
                self._state = dataclasses.replace(self._state, backlog=len(items) + self._queued_meanwhile)
        for item in items:
            if self._stop.is_set():
                return
            try:
                try:
                    self.channel.deliver(item)
                except ChannelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a library's surprise: this row is tried again, in order
                    log.debug("%s: delivering row %d failed", self.channel.label, item.id, exc_info=True)
                    raise ChannelError(f"result {item.inspection_id} could not be sent ({type(exc).__name__}: "
                                       f"{exc})") from exc
            except ChannelError as exc:
                try:
                    self.store.outbox_failed(item.id, str(exc))
                except (StoreError, sqlite3.Error):
                    log.debug("noting a failed delivery failed", exc_info=True)
                raise
            self.store.outbox_delivered(item.id)
            with self._lock:
                self._state = dataclasses.replace(self._state, backlog=max(0, self._state.backlog - 1),
                                                  delivered=self._state.delivered + 1)
            self._confirmed()
            self.channel.tick()  # a long backlog keeps the heartbeat going
        if items:
            if len(items) == BATCH:
                self._count_backlog()
            return  # more may wait: look again at once
        if not self.channel.connected:
            raise ChannelError(getattr(self.channel, "lost_reason", "") or f"the connection to {self.channel.peer} was lost")
        if self._stop.is_set():
            return
        self._wake.wait(max(0.01, min(wait, self.poll_s)))
        if self.channel.connected:
            self._confirmed()


ChannelFactory = Callable[[Any], Channel]  # settings section (MqttSettings, ModbusSettings) -> channel


def _mqtt(cfg) -> Channel:
    from station.line_mqtt import MqttChannel

    return MqttChannel(cfg)


def _modbus(cfg) -> Channel:
    from station.line_modbus import ModbusChannel

    return ModbusChannel(cfg)


def _opcua(cfg) -> Channel:
    from station.line_opcua import OpcUaChannel

    return OpcUaChannel(cfg)


FACTORIES: dict[str, ChannelFactory] = {"mqtt": _mqtt, "modbus": _modbus, "opcua": _opcua}


class LineOutputs:
    """The station's line outputs: a worker per enabled channel, started, restarted and stopped
    from the settings (:meth:`apply`, never blocking), and their states (:meth:`snapshot`).

    ``on_trigger``: the one hook through which the line asks for an inspection (any thread; see
    :class:`TriggerRequest`); channels that take triggers get :meth:`request_trigger`."""

    def __init__(self, store: ResultsStore, factories: Mapping[str, ChannelFactory] | None = None,
                 backoff: Callable[[], Backoff] = Backoff, on_trigger: TriggerHook | None = None,
                 config_dir: str | Path | None = None):
        self.store = store
        self.config_dir = Path(config_dir) if config_dir is not None else None  # OPC UA's certificate lives here
        self.on_trigger = on_trigger
        self.factories = dict(FACTORIES if factories is None else factories)
        self._backoff = backoff
        self._lock = threading.Lock()
        self._workers: dict[str, DeliveryWorker] = {}
        self._configs: dict[str, dict] = {}
        self._not_started: dict[str, ChannelState] = {}
        self._stopping: list[DeliveryWorker] = []
        self._outputs: dict[str, bool] = {"ready": False, "busy": False}
        self._closed = False
        store.add_outbox_listener(self._queued)

    def apply(self, settings: Any) -> None:
        """Start the channels switched on in ``settings`` (a ``StationSettings``), restart those whose
        settings changed, stop the others. Returns at once (a stopping worker ends on its own)."""
        with self._lock:
            if self._closed:
                return
            for name in CHANNELS:
                cfg: Any = getattr(settings, name, None)  # MqttSettings / ModbusSettings
                enabled = cfg is not None and bool(getattr(cfg, "enabled", False)) and name in self.factories
                config = dataclasses.asdict(cfg) if enabled else None
                if name in self._workers and self._configs.get(name) == config:
                    continue
                old = self._workers.pop(name, None)
                self._configs.pop(name, None)
                self._not_started.pop(name, None)
                if old is not None:
                    old.stop()
                    self._stopping.append(old)
                if not enabled:
                    continue
                problems = cfg.problems() if hasattr(cfg, "problems") else []
                if problems:
                    self._not_started[name] = ChannelState(name, LABELS.get(name, name), getattr(cfg, "peer", ""),
                                                           running=False, last_error=" ".join(problems))
                    log.warning("%s output not started: %s", LABELS.get(name, name), " ".join(problems))
                    continue
                if getattr(cfg, "cert_dir", None) == "" and self.config_dir is not None:
                    cfg = dataclasses.replace(cfg, cert_dir=str(self.config_dir / "opcua"))
                try:
                    channel = self.factories[name](cfg)
                except ChannelError as exc:
                    self._not_started[name] = ChannelState(name, LABELS.get(name, name), getattr(cfg, "peer", ""),
                                                           running=False, last_error=str(exc))
                    log.warning("%s output not started: %s", LABELS.get(name, name), exc)
                    continue
                if hasattr(channel, "set_outputs"):
                    channel.set_outputs(**self._outputs)
                if hasattr(channel, "set_trigger"):
                    channel.set_trigger(self.request_trigger)
                worker = DeliveryWorker(self.store, channel, self._backoff(), after=old)
                self._workers[name] = worker
                self._configs[name] = config  # type: ignore[assignment]
                worker.start()
            self._stopping = [w for w in self._stopping if w.is_alive()]

    def request_trigger(self, request: TriggerRequest) -> TriggerAnswer:
        """Ask the station for one inspection (any thread): the hook's answer, or refused in words
        when there is no hook or it failed (a trigger is never dropped without an answer)."""
        hook = self.on_trigger
        if hook is None:
            return TriggerAnswer(False, NO_TRIGGER)
        try:
            answer = hook(request)
        except Exception as exc:  # noqa: BLE001 - the line gets an answer whatever happened
            log.exception("A trigger from %s failed", request.source)
            return TriggerAnswer(False, f"the station could not take the trigger ({type(exc).__name__}: {exc})")
        if not isinstance(answer, TriggerAnswer):
            return TriggerAnswer(bool(answer), "" if answer else "refused")
        return answer

    def channels(self) -> tuple[str, ...]:
        """The channels running now."""
        with self._lock:
            return tuple(self._workers)

    def snapshot(self) -> tuple[ChannelState, ...]:
        """The state of every enabled channel, in display order (empty: no line output switched on)."""
        with self._lock:
            workers, idle = dict(self._workers), dict(self._not_started)
        out = []
        for name in CHANNELS:
            if name in workers:
                out.append(workers[name].snapshot())
            elif name in idle:
                out.append(idle[name])
        return tuple(out)

    def set_outputs(self, ready: bool, busy: bool) -> None:
        """The station's state for the outputs that show it (the Modbus ready and busy coils)."""
        with self._lock:
            self._outputs = {"ready": bool(ready), "busy": bool(busy)}
            workers = list(self._workers.values())
        for w in workers:
            if hasattr(w.channel, "set_outputs"):
                w.channel.set_outputs(ready=bool(ready), busy=bool(busy))
                w.wake()

    def _queued(self, channels: tuple[str, ...]) -> None:
        with self._lock:
            workers = [self._workers[c] for c in channels if c in self._workers]
        for w in workers:
            w.note_queued()

    def close(self, timeout: float = 5.0) -> bool:
        """Stop every worker and wait up to ``timeout`` seconds for them (each says goodbye to its peer)."""
        with self._lock:
            self._closed = True
            workers = [*self._workers.values(), *self._stopping]
            self._workers.clear()
            self._stopping.clear()
        self.store.remove_outbox_listener(self._queued)
        for w in workers:
            w.stop()
        deadline = time.monotonic() + timeout
        ended = True
        for w in workers:
            ended = w.join(max(0.0, deadline - time.monotonic())) and ended
        if not ended:
            log.warning("A line output did not stop within %.0f s", timeout)
        return ended
