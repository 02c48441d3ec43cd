"""What the nested settings objects share (``StationSettings.mqtt``, ``.modbus``, ``.opcua``, ``.api``).

* :func:`coerced`: an object from a hand-edited JSON object: unknown keys dropped, a value of the
  wrong type replaced by its default (logged, a password never shown), so a bad file never stops
  the station.
* :class:`Endpoint`: a host and a port: ``peer`` for messages and the checks every address gets.

Qt-free.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def coerced(cls: type[_T], data: Mapping[str, Any] | None) -> _T:
    """``cls`` (a dataclass with defaults for every field) from a JSON object, see the module docstring."""
    out: dict[str, Any] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not isinstance(data, Mapping) or f.name not in data:
            continue
        value, default = data[f.name], getattr(defaults, f.name)
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError("not true/false")
            elif isinstance(default, (int, float)):
                if isinstance(value, bool):
                    raise TypeError("not a number")
                value = type(default)(value)
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise TypeError("not text")
        except (TypeError, ValueError) as exc:
            log.warning("Setting %s.%s is unusable (%s); using %r", cls.__name__, f.name, exc,
                        "***" if f.name == "password" else default)
            continue
        out[f.name] = value
    return cls(**out)


class Endpoint:
    """A mixin for settings with ``host`` and ``port`` fields."""

    host: str
    port: int

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    def address_problems(self, label: str, no_host: str) -> list[str]:
        """``no_host``: what to tell the engineer when the host is empty (or holds spaces)."""
        out = []
        host = self.host.strip()
        if not host or any(c.isspace() for c in host):
            out.append(f"{label}: {no_host}")
        if not 1 <= int(self.port) <= 65535:
            out.append(f"{label}: the port must be between 1 and 65535.")
        return out
