"""Settings of the line outputs: an MQTT broker and a Modbus TCP PLC / remote I/O module.

Both are OFF by default. They live in ``StationSettings`` (``mqtt`` and ``modbus``, saved as
nested objects in ``station.json``) and are edited in Settings > Line outputs. ``problems()``
says in words what keeps an enabled output from starting (an empty host, two outputs on one coil).
The MQTT password is kept out of every ``repr`` and log line (it is in ``station.json``, in the
user's own config folder). Qt-free.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

from station.settings_fields import Endpoint, coerced


CHANNELS = ("mqtt", "modbus", "opcua")  # outbox channel names, in the order the status bar shows them
LABELS = {"mqtt": "MQTT", "modbus": "Modbus", "opcua": "OPC UA"}
TRIGGER_KINDS = ("coil", "register")  # what the Modbus trigger polls on the PLC
TOPIC_LEVEL = re.compile(r"[^/+#\x00]+")  # one MQTT topic level: no separators, no wildcards
COILS = ("coil_ok", "coil_ng", "coil_review", "coil_busy", "coil_ready", "coil_heartbeat")
REGISTERS = 4  # from register_base: part counter, verdict code, inspection id high word, low word

def default_station_name() -> str:
    """This computer's name as one topic level (what an empty station name means)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-.")
    return name or "station"


@dataclass
class MqttSettings(Endpoint):
    """One JSON message per inspection on ``<topic_prefix>/<station>/result`` (QoS 1); the
    retained state ``online`` / ``offline`` (last will) on ``<topic_prefix>/<station>/state``."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    topic_prefix: str = "inspection"
    station: str = ""  # "" = this computer's name
    username: str = ""
    password: str = field(default="", repr=False)  # never shown, never logged
    tls: bool = False
    ca_file: str = ""  # "" with TLS on: the system's certificate authorities
    cert_file: str = ""  # client certificate (optional, with its key)
    key_file: str = ""
    keepalive_s: int = 30
    commands: bool = False  # take "inspect" commands on <prefix>/<station>/cmd/inspect (answers on cmd/ack)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "MqttSettings":
        return coerced(cls, data)

    @property
    def station_name(self) -> str:
        return self.station.strip() or default_station_name()

    @property
    def result_topic(self) -> str:
        return f"{self.topic_prefix.strip('/')}/{self.station_name}/result"

    @property
    def state_topic(self) -> str:
        return f"{self.topic_prefix.strip('/')}/{self.station_name}/state"

    @property
    def command_topic(self) -> str:
        return f"{self.topic_prefix.strip('/')}/{self.station_name}/cmd/inspect"

    @property
    def ack_topic(self) -> str:
        return f"{self.topic_prefix.strip('/')}/{self.station_name}/cmd/ack"

    def problems(self) -> list[str]:
        out = self.address_problems("MQTT", "type the broker's address.")
        prefix = self.topic_prefix.strip("/")
        if not prefix or not all(TOPIC_LEVEL.fullmatch(level) for level in prefix.split("/")):
            out.append("MQTT: the topic prefix must be one or more topic levels without +, # or empty levels.")
        if self.station.strip() and not TOPIC_LEVEL.fullmatch(self.station.strip()):
            out.append("MQTT: the station name must be one topic level (no /, + or #).")
        if bool(self.cert_file) != bool(self.key_file):
            out.append("MQTT: a client certificate needs its key file, and the key its certificate.")
        if (self.ca_file or self.cert_file) and not self.tls:
            out.append("MQTT: certificate files are given but TLS is off.")
        if self.password and not self.username:
            out.append("MQTT: a password needs a user name.")
        return out


@dataclass
class ModbusSettings(Endpoint):
    """Coils and holding registers written to a PLC or remote I/O module (the station is the client).

    Per result, in order: the four registers from ``register_base`` (part counter, verdict code
    1 OK / 2 NG / 3 REVIEW, inspection id high and low word), then the verdict's coil pulsed for
    ``pulse_ms`` (followed by as long off). ``ready`` and ``busy`` follow the station; ``heartbeat``
    toggles every ``heartbeat_s`` while connected."""

    enabled: bool = False
    host: str = ""
    port: int = 502
    unit: int = 1  # the Modbus unit (device) id
    coil_ok: int = 0
    coil_ng: int = 1
    coil_review: int = 2
    coil_busy: int = 3
    coil_ready: int = 4
    coil_heartbeat: int = 5
    register_base: int = 0
    pulse_ms: int = 200
    heartbeat_s: float = 1.0
    timeout_s: float = 2.0
    # the trigger: the station polls a coil or a holding register of the PLC; a rising edge (off -> on,
    # 0 -> not 0) asks for one inspection. ``trigger_clear``: the station writes it back to off / 0
    # (the PLC's handshake); ``trigger_answer``: a holding register the station writes 1 (accepted) or
    # 2 (refused) per edge (-1: none)
    trigger_enabled: bool = False
    trigger_kind: str = "coil"
    trigger_address: int = 16
    trigger_poll_ms: int = 100
    trigger_clear: bool = True
    trigger_answer: int = -1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ModbusSettings":
        return coerced(cls, data)

    def problems(self) -> list[str]:
        out = self.address_problems("Modbus", "type the address of the PLC or I/O module.")
        if not 0 <= self.unit <= 247:
            out.append("Modbus: the unit id must be between 0 and 247.")
        coils = [getattr(self, c) for c in COILS]
        if any(not 0 <= a <= 65535 for a in coils):
            out.append("Modbus: coil addresses must be between 0 and 65535.")
        if len(set(coils)) != len(coils):
            out.append("Modbus: every output needs a coil of its own.")
        if not 0 <= self.register_base <= 65535 - REGISTERS + 1:
            out.append(f"Modbus: the first register must be between 0 and {65535 - REGISTERS + 1}.")
        if not 20 <= self.pulse_ms <= 10000:
            out.append("Modbus: the pulse must last between 20 and 10000 ms.")
        if not 0.1 <= self.heartbeat_s <= 60:
            out.append("Modbus: the heartbeat period must be between 0.1 and 60 s.")
        if self.trigger_enabled:
            if self.trigger_kind not in TRIGGER_KINDS:
                out.append("Modbus: the trigger is a coil or a holding register.")
            if not 0 <= self.trigger_address <= 65535:
                out.append("Modbus: the trigger address must be between 0 and 65535.")
            elif self.trigger_kind == "coil" and self.trigger_address in coils:
                out.append("Modbus: the trigger needs a coil of its own (not an output's).")
            elif self.trigger_kind == "register" and (
                    self.register_base <= self.trigger_address < self.register_base + REGISTERS):
                out.append("Modbus: the trigger register overlaps the result registers.")
            if not 20 <= self.trigger_poll_ms <= 10000:
                out.append("Modbus: the trigger is polled every 20 to 10000 ms.")
            if self.trigger_answer != -1 and not 0 <= self.trigger_answer <= 65535:
                out.append("Modbus: the answer register must be between 0 and 65535 (or -1: none).")
            elif self.trigger_answer >= 0 and (
                    self.register_base <= self.trigger_answer < self.register_base + REGISTERS
                    or (self.trigger_kind == "register" and self.trigger_answer == self.trigger_address)):
                out.append("Modbus: the answer register overlaps the trigger or the result registers.")
        return out


@dataclass
class OpcUaSettings(Endpoint):
    """The station as an OPC UA server (an ``InspectionStation`` object; docs/LINE_INTEGRATION.md).

    Secure by default: Basic256Sha256 with SignAndEncrypt and a user name and password; a
    self-signed server certificate is made on the first start in the config folder. Anonymous
    access and an unsecured endpoint only when switched on here."""

    enabled: bool = False
    host: str = "127.0.0.1"  # the interface the server listens on
    port: int = 4840
    username: str = ""
    password: str = field(default="", repr=False)  # never shown, never logged
    allow_anonymous: bool = False
    allow_unsecured: bool = False  # the None security policy (no signing, no encryption)
    cert_dir: str = ""  # "" = <config folder>/opcua (set by the station)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "OpcUaSettings":
        return coerced(cls, data)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/inspection/"

    def problems(self) -> list[str]:
        out = self.address_problems("OPC UA", "type the interface to listen on (127.0.0.1: this computer only).")
        if not self.allow_anonymous and not (self.username and self.password):
            out.append("OPC UA: give a user name and a password (or allow anonymous access).")
        if self.password and not self.username:
            out.append("OPC UA: a password needs a user name.")
        return out


def enabled_channels(settings: Any) -> tuple[str, ...]:
    """The outbox channels switched on in ``settings`` (a ``StationSettings``), in display order."""
    out = []
    for name in CHANNELS:
        cfg = getattr(settings, name, None)
        if cfg is not None and getattr(cfg, "enabled", False):
            out.append(name)
    return tuple(out)
