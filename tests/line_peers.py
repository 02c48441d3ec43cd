"""Real peers for the line-output tests, on loopback only: a Mosquitto broker (Debian's, started
with a temporary config on a free port) with a consumer that keeps every message, and a pymodbus
TCP server as the remote I/O module (``tests/modbus_io_server.py``, its own process, so a test can
kill it for real). Each can be killed (SIGKILL) and started again on the same port."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
IMAGE = np.zeros((32, 32, 3), np.uint8)
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    """The broker, or skip naming what is missing and how ``make test`` installs it."""
    exe = shutil.which("mosquitto", path=SBIN_PATH)
    if exe is None:
        pytest.skip("the Mosquitto MQTT broker is not installed (`make test` installs Debian's package "
                    "`mosquitto` when it runs as root with apt-get; or: apt-get install mosquitto)")
    return exe


def wait_until(cond, timeout: float, every: float = 0.02, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """``mosquitto -c <temp config>`` on 127.0.0.1:port; ``extra`` lines go into the config."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "", persistence: bool = False):
        self.exe = mosquitto_binary()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true" if "password_file" not in extra else "",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {self.folder}/", "log_dest stderr", "log_type error", "log_type warning",
                 # as root it would switch to the user mosquitto, who may not write the temporary folder
                 "user root" if hasattr(os, "geteuid") and os.geteuid() == 0 else "",
                 extra]
        self.conf.write_text("\n".join(x for x in lines if x) + "\n")
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("mosquitto did not open its port")
            time.sleep(0.02)
        return self

    def save(self) -> None:
        """Write the persistence database now (SIGUSR1), and wait until it is there."""
        assert self.proc is not None
        db = self.folder / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: db.exists() and db.stat().st_mtime_ns != before, 5.0, what="mosquitto.db")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a crash or a power cut of its machine."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Consumer:
    """A plant-side subscriber: keeps (topic, payload, retain) of everything on ``topic``, in arrival
    order. ``session``: a persistent session (clean_session off) under that client id."""

    def __init__(self, port: int, topic: str = "#", session: str | None = None, username: str = "",
                 password: str = "", **tls):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session or f"consumer-{os.getpid()}-{id(self)}",
                                  clean_session=session is None)
        if tls:
            self.client.tls_set(**tls)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10.0, what="the consumer's subscription")

    def _connected(self, client, _userdata, _flags, reason_code, _props) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _message(self, _client, _userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def results(self) -> list[dict]:
        return [json.loads(p) for p in self.on("/result")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    """What a new subscriber gets as the retained message of ``topic`` (None: nothing retained)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peek-{os.getpid()}-{time.monotonic_ns()}")

    def on_message(_c, _u, msg) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
            done.set()

    c.on_message = on_message
    c.on_subscribe = lambda *a: threading.Timer(0.5, done.set).start()  # nothing retained: no message
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    done.wait(timeout)
    c.disconnect()
    c.loop_stop()
    return got[0] if got else None


class ModbusIO:
    """The remote I/O module: ``tests/modbus_io_server.py`` in its own process, writing every write
    request it gets as a JSON line (function code, address, values) to ``writes.jsonl``."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.writes_file = self.folder / "writes.jsonl"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "ModbusIO":
        err = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "modbus_io_server.py"), str(self.port),
                                      str(self.writes_file)], stdout=err, stderr=err)
        err.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(f"the Modbus server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the Modbus server did not open its port")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    stop = kill

    def writes(self) -> list[dict]:
        if not self.writes_file.exists():
            return []
        out = []
        for line in self.writes_file.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by the kill
                pass
        return out


# -- the station side ----------------------------------------------------------------------------

DECISIONS = ("PASS", "FAIL", "REVIEW")


def fast():
    """A quick backoff for the tests (0.05 s up to 0.5 s)."""
    from station.outbox import Backoff

    return Backoff(initial=0.05, cap=0.5)


class Line:
    """Parts recorded as the live station records them (station.recording.record), one every
    ``every_s``, from a thread of their own, as long as it runs."""

    def __init__(self, store, policy, every_s: float = 0.01):
        self.store, self.policy, self.every_s = store, policy, every_s
        self.ids: list[int] = []
        self.verdicts: dict[int, str] = {}
        self._n = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def part(self) -> int:
        from station.recording import record
        from station_helpers import make_inspection

        decision = DECISIONS[next(self._n) % 3]
        out = record(self.store, None, make_inspection(decision), IMAGE, self.policy)
        assert out.problem is None and out.inspection_id is not None
        self.ids.append(out.inspection_id)
        self.verdicts[out.inspection_id] = decision
        return out.inspection_id

    def run(self) -> "Line":
        self._stop.clear()

        def loop():
            while not self._stop.is_set():
                self.part()
                time.sleep(self.every_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def more(self, n: int, timeout: float = 10.0) -> None:
        target = len(self.ids) + n
        wait_until(lambda: len(self.ids) >= target, timeout, what=f"{n} more parts")
