"""Operator review decisions, without a window: stored (append-only) and taught back, in order, off the UI thread.

:func:`record_decision` is the one way a Good / Defect decision is written: the review row goes to
the store (``ResultsStore.add_review``, durable before it returns), then the part's image is taught
back (``station.teach_back``). :class:`DecisionWriter` runs it on one background thread, so a
decision never makes the window wait for the disk, and decisions made in quick succession are
written in the order they were made (the latest one for a part wins, also in the taught-in folders).
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from core.store import StoredInspection, StoreError
from station.context import StationContext
from station.teach_back import teach_back

log = logging.getLogger(__name__)

LABELS = {"good": "Good", "defect": "Defect"}


@dataclass(frozen=True)
class Decided:
    """What became of one decision."""

    inspection_id: int
    label: str
    saved: bool  # False: the store refused it (nothing was written); the part still waits
    message: str  # for the operator
    kind: str  # "ok", "warn" (saved, not taught in) or "error" (not saved)


def record_decision(context: StationContext, record: StoredInspection, label: str, note: str = "", operator: str = "",
                    changed: bool = False) -> Decided:
    """Store the decision, then teach the part back. Never raises for a bad disk or store: says so."""
    if label not in LABELS:
        raise ValueError(f"unknown decision {label!r} (expected one of {sorted(LABELS)})")
    if record.id is None:
        raise ValueError("only a stored inspection can be reviewed")
    iid = int(record.id)
    try:
        context.store.add_review(iid, label, note, operator=operator)
    except (StoreError, sqlite3.Error, ValueError, OSError) as exc:
        log.error("Review of inspection %s not stored: %s", iid, exc)
        return Decided(iid, label, False, f"The decision for part {iid} was NOT saved: {exc}", "error")
    log.info("Inspection %s reviewed as %s%s", iid, label, f" ({note})" if note else "")
    message = f"Saved: part {iid} is {LABELS[label].upper()}" + (" (changed)" if changed else "") + "."
    try:
        teach_back(context, record, label)
    except (OSError, ValueError) as exc:
        log.warning("Teach-back of inspection %s failed: %s", iid, exc)
        return Decided(iid, label, True, message + f" It was not taught in: {exc}", "warn")
    return Decided(iid, label, True, message, "ok")


class DecisionWriter:
    """One background thread that writes decisions in the order they were submitted.

    ``on_done(Decided)`` is called in that thread after each one (the window passes a queued
    signal's ``emit``). ``close()`` writes what is still waiting, then stops the thread.
    """

    def __init__(self, context: StationContext, on_done: Callable[[Decided], None]):
        self.context = context
        self._on_done = on_done
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="review-writer", daemon=True)
        self._thread.start()

    def submit(self, record: StoredInspection, label: str, note: str = "", operator: str = "", changed: bool = False) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the decision writer is closed")
        with self._lock:
            self._waiting += 1
        self._queue.put((record, label, note, operator, changed))

    def pending(self) -> int:
        """Decisions submitted but not yet written."""
        with self._lock:
            return self._waiting

    def close(self, timeout_s: float = 30.0) -> bool:
        """Write what is waiting and stop; False if that took longer than ``timeout_s``."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                done = record_decision(self.context, *job)
            except Exception as exc:  # noqa: BLE001 - never let the writer die: say what happened
                log.exception("Review decision failed")
                done = Decided(int(job[0]["id"]), job[1], False, f"The decision was NOT saved: {exc}", "error")
            with self._lock:
                self._waiting -= 1
            try:
                self._on_done(done)
            except Exception:  # noqa: BLE001 - a closed window must not stop later writes
                log.exception("Review decision callback failed")
