"""Settings of the local inspection API when the station itself serves it (Settings > Inspection API).

OFF by default. Kept in ``StationSettings.api`` (a nested object in ``station.json``); a hand-edited
value of the wrong type or out of range falls back to its default (logged), so a bad file never
stops the station. What the service does: docs/API.md; the station starts and stops it
(:mod:`station.api_station`). Qt-free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470


@dataclass
class ApiSettings:
    enabled: bool = False
    host: str = DEFAULT_HOST  # 127.0.0.1: this PC only; any other address needs the access token
    port: int = DEFAULT_PORT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ApiSettings":
        out = cls()
        if not isinstance(data, Mapping):
            if data is not None:
                log.warning("Setting api is not an object (%r); using the defaults", type(data).__name__)
            return out
        enabled, host, port = data.get("enabled", out.enabled), data.get("host", out.host), data.get("port", out.port)
        if isinstance(enabled, bool):
            out.enabled = enabled
        else:
            log.warning("Setting api.enabled is not true/false (%r); the API stays off", enabled)
        if isinstance(host, str) and host.strip() and len(host) <= 255 and not any(c.isspace() for c in host.strip()):
            out.host = host.strip()
        else:
            log.warning("Setting api.host is unusable (%r); using %s", host, DEFAULT_HOST)
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
            out.port = port
        else:
            log.warning("Setting api.port is unusable (%r); using %d", port, DEFAULT_PORT)
        return out

    def problems(self) -> list[str]:
        out = []
        if not self.host.strip() or any(c.isspace() for c in self.host.strip()):
            out.append("Inspection API: type the address to listen on (127.0.0.1: this PC only).")
        if not 1 <= int(self.port) <= 65535:
            out.append("Inspection API: the port must be between 1 and 65535.")
        return out
