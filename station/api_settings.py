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

from station.settings_fields import Endpoint, coerced

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470


@dataclass
class ApiSettings(Endpoint):
    enabled: bool = False
    host: str = DEFAULT_HOST  # 127.0.0.1: this PC only; any other address needs the access token
    port: int = DEFAULT_PORT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ApiSettings":
        if data is not None and not isinstance(data, Mapping):
            log.warning("Setting api is not an object (%r); using the defaults", type(data).__name__)
        out = coerced(cls, data)  # types; then what a usable address is
        host = out.host.strip()
        if not host or len(host) > 255 or any(c.isspace() for c in host):
            log.warning("Setting api.host is unusable (%r); using %s", out.host, DEFAULT_HOST)
            host = DEFAULT_HOST
        out.host = host
        if not 1 <= out.port <= 65535:
            log.warning("Setting api.port is unusable (%r); using %d", out.port, DEFAULT_PORT)
            out.port = DEFAULT_PORT
        return out

    def problems(self) -> list[str]:
        return self.address_problems("Inspection API", "type the address to listen on (127.0.0.1: this PC only).")
