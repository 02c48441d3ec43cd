"""Writing a verdict down, once for every path: the live worker, the batch and ``station-cli inspect``.

:func:`record` keeps the part's evidence when the policy says so (:mod:`station.evidence`, one
format), writes its row to the results store and returns the typed record it wrote
(:class:`core.store.StoredInspection`), which the batch table, the reports and the CLI's CSV read.
It never raises for a full disk or a refused row: the outcome says what went wrong, in words for
the operator, and the line goes on. In a live mode the row is queued, in the same transaction,
for every line output switched on (``RecordPolicy.outbox``; delivered by ``station.outbox``).

The live worker calls it right after the verdict has been emitted to the window, so the operator
never waits for a disk. Why in the worker and not a separate writer thread: recording is bounded
by construction (one inspection in flight, no queue that can grow or drop records), rows land in
verdict order, and a 2-core bench PC has no spare core for a third busy thread. The cost: when
images are kept (REVIEW/FAIL parts, ~10 ms for a 256 px part) the next inspection starts that
much later.

The local API (``station.api_service``) answers a client that waits for the row's id, so it passes
an :class:`EvidenceWriter`: the same function stores the row first, without evidence paths, and
the writer (one thread, a bounded queue, a lower priority) writes the same files afterwards and
only then names them in the row (``ResultsStore.set_evidence``, once): a row never names a file
that does not exist. Measured on 900x900 bottle parts (2 cores): keeping a FAIL part's evidence
took ~21 ms (the overlay 10.5, its JPEG 3.6, the maps 3.3, the files and fsyncs ~3), the row
0.7 ms. Qt-free.
"""
from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from core.store import ResultsStore, StoredInspection, StoreError
from core.types import Inspection

from station.evidence import EvidenceFolder, evidence_stem
from station.line_settings import enabled_channels

log = logging.getLogger(__name__)

KEEP_CHOICES = ("all", "review_fail", "none")
LIVE_MODES = ("continuous", "triggered")


@dataclass(frozen=True)
class RecordPolicy:
    """What is recorded after each verdict (from ``StationSettings``, or the CLI's options)."""

    mode: str = "continuous"  # stored with each inspection: continuous / triggered / batch / cli
    queue_fails: bool = False  # FAIL parts go to the review queue too: keep their images
    keep_images: str = "review_fail"  # "all" | "review_fail" | "none"
    enabled: bool = True  # False: nothing is written (screenshots, benchmarks of the UI only)
    one_per_part: bool = True  # continuous mode: record a part once, when it settles (station.part_tracker)
    outbox: tuple[str, ...] = ()  # line outputs each record is queued for (station.outbox): live modes only

    def keeps_images(self, decision: str) -> bool:
        """REVIEW images are always kept (the review queue shows them); FAIL ones when queued."""
        decision = getattr(decision, "value", decision)
        if decision == "REVIEW" or (decision == "FAIL" and self.queue_fails):
            return True
        if self.keep_images == "all":
            return True
        return self.keep_images == "review_fail" and decision == "FAIL"

    @classmethod
    def from_settings(cls, settings, mode: str | None = None) -> "RecordPolicy":
        """The station's policy; ``mode``: the one to store (default the live mode of the settings)."""
        if mode is None:
            mode = settings.live_mode
        keep = settings.keep_images if settings.keep_images in KEEP_CHOICES else "review_fail"
        # the line hears of the parts on the line: a batch of files or the CLI sends nothing
        outbox = enabled_channels(settings) if mode in LIVE_MODES else ()
        return cls(mode=mode, queue_fails=bool(settings.queue_fails), keep_images=keep, outbox=outbox,
                   # a hardware-triggered camera sends one frame per part: each one is recorded
                   one_per_part=bool(getattr(settings, "one_record_per_part", True))
                   and not getattr(settings, "hardware_triggered", False))


@dataclass(frozen=True)
class RecordOutcome:
    record: StoredInspection  # what was written; ``record.id`` is None when the store refused it
    problem: str | None = None  # plain words for the operator, None when all went well

    @property
    def inspection_id(self) -> int | None:
        return self.record.id

    @property
    def image_path(self) -> str | None:
        return self.record.image_path

    @property
    def heatmap_path(self) -> str | None:
        return self.record.heatmap_path


def record(store: ResultsStore | None, evidence: EvidenceFolder | None, inspection: Inspection,
           image: np.ndarray, policy: RecordPolicy, *, source_file: str | None = None,
           original: bytes | None = None, blended: np.ndarray | None = None,
           index: int | None = None, writer: "EvidenceWriter | None" = None,
           part_id: str | None = None) -> RecordOutcome:
    """Keep the evidence (if the policy wants it and there is a folder), then store the row (if a store).

    ``source_file``: the file the part was read from (batch, CLI); the record points at it when no
    copy is kept. ``original``: that file's bytes, kept as they are. ``blended``: the overlay
    already made for the screen. ``index``: the file's position in a batch (names the evidence).
    ``part_id``: the line's id of the part (a trigger's, the API's), stored with the row (None: none).

    ``writer``: write the evidence afterwards, in that background writer (the local API answers as
    soon as the row exists): the row is stored first WITHOUT evidence paths, and the writer fills
    them in (:meth:`core.store.ResultsStore.set_evidence`, once, NULL -> path) only after every file
    is written, so a row never names a file that does not exist. Used only where nothing is queued
    for the line (``policy.outbox`` empty: a line message is built from the row as first written)
    and no ``source_file`` stands in for the evidence; otherwise this records synchronously."""
    keeps = evidence is not None and policy.keeps_images(inspection.decision.value)
    if (keeps and writer is not None and store is not None and not policy.outbox and source_file is None
            and evidence is not None and not evidence.paused):
        rec = StoredInspection.of(inspection, image_path=None, heatmap_path=None, mode=policy.mode,
                                  part_id=part_id)
        rec, problem = _store(store, rec)
        if rec.id is not None:
            writer.put(_Deferred(store, evidence, inspection, image, policy, rec.id, original, blended, index))
        return RecordOutcome(rec, problem)
    image_path, heatmap_path = source_file, None
    problems: list[str] = []
    if keeps:
        assert evidence is not None
        kept, problems = _keep(evidence, inspection, image, policy, original, blended, index)
        if kept is not None:
            image_path, heatmap_path = kept
    rec = StoredInspection.of(inspection, image_path=image_path, heatmap_path=heatmap_path, mode=policy.mode,
                              part_id=part_id)
    rec, problem = _store(store, rec, policy.outbox)
    return RecordOutcome(rec, " ".join(problems + ([problem] if problem else [])) or None)


def _keep(evidence: EvidenceFolder, inspection: Inspection, image: np.ndarray, policy: RecordPolicy,
          original: bytes | None, blended: np.ndarray | None,
          index: int | None) -> tuple[tuple[str, str | None] | None, list[str]]:
    """Write the part's evidence files: ((image path, heatmap path) or None, problems in words)."""
    if evidence.paused:
        return None, [f"The images of this part were not kept: {evidence.paused}"]
    try:
        files = evidence.save(inspection, image, evidence_stem(inspection, policy.mode, index),
                              original=original, blended=blended)
        return (files.image, files.heatmap), []
    except OSError as exc:
        log.exception("Saving the images of %s failed", inspection.source or inspection.frame_id)
        return None, [f"The images of this part could not be saved ({exc.strerror or exc}). "
                      "Is the disk full or the data folder read-only?"]


@dataclass(frozen=True)
class _Deferred:
    store: ResultsStore
    evidence: EvidenceFolder
    inspection: Inspection
    image: np.ndarray
    policy: RecordPolicy
    inspection_id: int
    original: bytes | None
    blended: np.ndarray | None
    index: int | None


def _lower_priority(nice: int = 10) -> None:
    """This thread yields the cores to inspections (Linux: threads have a nice value of their own);
    the bounded queue of the writer keeps it from falling behind for good."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not allowed: the writer runs as it is
        pass


class EvidenceWriter:
    """Writes the evidence of stored rows in one background thread, then names it in the row.

    Bounded: at most ``capacity`` parts wait (their decoded images with them); a full writer makes
    :func:`record` wait for room, so evidence is never dropped and memory stays bounded. ``flush``
    waits until everything handed over is written; ``stop`` writes what waits, then ends."""

    def __init__(self, capacity: int = 2):
        self._queue: queue.Queue[_Deferred | None] = queue.Queue(maxsize=max(1, int(capacity)))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.problem: str | None = None  # the last evidence that could not be kept, in words

    def start(self) -> "EvidenceWriter":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="evidence-writer", daemon=True)
                self._thread.start()
        return self

    def put(self, job: _Deferred) -> None:
        if self._thread is None:  # not running: write it now, as record() would
            self._write(job)
            return
        self._queue.put(job)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every part handed over is written (True) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)

    def _run(self) -> None:
        _lower_priority()
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._write(job)
            finally:
                self._queue.task_done()

    def _write(self, job: _Deferred) -> None:
        try:
            kept, problems = _keep(job.evidence, job.inspection, job.image, job.policy, job.original, job.blended,
                                   job.index)
            if kept is not None:
                job.store.set_evidence(job.inspection_id, kept[0], kept[1])
            self.problem = " ".join(problems) or None
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.exception("Naming the evidence of inspection %s in the results store failed", job.inspection_id)
            self.problem = f"The evidence could not be named in the results database ({exc})."
        except Exception:  # noqa: BLE001 - the writer goes on with the next part; the log has the trace
            log.exception("Keeping the evidence of inspection %s failed", job.inspection_id)


def record_failure(store: ResultsStore | None, source: str, error: str, *, recipe: str = "",
                   recipe_version: int = 0, mode: str = "batch", part_id: str | None = None) -> RecordOutcome:
    """A file that could not be inspected: its row says why (decision NULL)."""
    rec, problem = _store(store, StoredInspection.failed(source, error, recipe=recipe, recipe_version=recipe_version,
                                                         mode=mode, part_id=part_id))
    return RecordOutcome(rec, problem)


def _store(store: ResultsStore | None, rec: StoredInspection,
           outbox: tuple[str, ...] = ()) -> tuple[StoredInspection, str | None]:
    """The row, and the line outputs' outbox rows with it (one transaction: both or neither)."""
    if store is None:
        return rec, None
    try:
        return replace(rec, id=store.add_record(rec, outbox=outbox)), None
    except (StoreError, sqlite3.Error, OSError) as exc:
        log.exception("Recording %s in the results store failed", rec.source)
        return rec, f"The result could not be written to the results database ({exc})."


class Recorder:
    """:func:`record` bound to one station's store and evidence folder (the live worker holds one)."""

    def __init__(self, context):
        self.context = context

    def record(self, inspection: Inspection, image: np.ndarray, policy: RecordPolicy,
               blended: np.ndarray | None = None, part_id: str | None = None) -> RecordOutcome:
        return record(self.context.store, self.context.evidence, inspection, image, policy, blended=blended,
                      part_id=part_id)
