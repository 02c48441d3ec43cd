"""Shift counters: inspected, PASS, FAIL, REVIEW and yield since the shift started.

The shift's start time is kept in ``<config>/shift.json`` so a restart mid-shift resumes the
counts (they are re-read from the results store once, off the UI thread, by ``counts_since``).
Qt-free.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.store import utc_iso

log = logging.getLogger(__name__)

SHIFT_FILE = "shift.json"


@dataclass(frozen=True)
class ShiftSnapshot:
    started: str  # ISO-8601 UTC
    inspected: int = 0
    passed: int = 0
    failed: int = 0
    review: int = 0

    @property
    def yield_pct(self) -> float | None:
        """PASS share of the inspected parts, in percent (None before the first part)."""
        return 100.0 * self.passed / self.inspected if self.inspected else None

    @property
    def started_local(self) -> str:
        try:
            return datetime.fromisoformat(self.started.replace("Z", "+00:00")).astimezone().strftime("%H:%M")
        except ValueError:
            return "?"


class ShiftCounters:
    def __init__(self, config_dir: Path | None = None):
        self._path = Path(config_dir) / SHIFT_FILE if config_dir is not None else None
        self.started = self._load_start() or utc_iso()
        self._base = {"inspected": 0, "PASS": 0, "FAIL": 0, "REVIEW": 0}
        self._live = dict(self._base)
        if self._path is not None and not self._path.exists():
            self._save_start()

    def _load_start(self) -> str | None:
        if self._path is None:
            return None
        try:
            return str(json.loads(self._path.read_text(encoding="utf-8"))["started"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_start(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text(json.dumps({"started": self.started}), encoding="utf-8")
        except OSError as exc:
            log.warning("Could not save the shift start (%s)", exc)

    def counts_in_store(self, store) -> dict:
        """Counts already in the store for this shift. Slow on a big store: call it off the UI
        thread before inspection starts, then hand the result to ``restore``."""
        return store.counts(since=self.started)

    def restore(self, counts: dict) -> None:
        self._base = {k: int(counts.get(k, 0)) for k in self._base}

    def add(self, decision) -> None:
        decision = getattr(decision, "value", decision)
        self._live["inspected"] += 1
        if decision in self._live:
            self._live[decision] += 1

    def reset(self) -> None:
        self.started = utc_iso()
        self._base = {k: 0 for k in self._base}
        self._live = dict(self._base)
        self._save_start()

    def snapshot(self) -> ShiftSnapshot:
        c = {k: self._base[k] + self._live[k] for k in self._base}
        return ShiftSnapshot(self.started, c["inspected"], c["PASS"], c["FAIL"], c["REVIEW"])
