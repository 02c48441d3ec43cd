"""Bounded evidence: a retention policy for kept images, and the disk it lives on. Qt-free.

Decisions and scores stay in the results store forever; the *evidence* (the part's image, its
heatmap and its maps, ``station.evidence``) is kept for ``days`` days and at most ``max_gb`` in
all, oldest removed first. Evidence of a part still waiting in the review queue is never removed
(the operator needs it); if that alone exceeds the limit the sweep says so.

:class:`Housekeeper` runs in its own thread: it measures the disk every ``check_s`` seconds and
sweeps at start, every ``sweep_s`` seconds and whenever the evidence grew past the limit. When
the disk is low (less than ``min_free_gb`` free) new evidence is not written at all (the
verdicts still are) until space is back; the station shows the disk state in its status bar.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from station.evidence import HEATMAP_SUFFIX, MAPS_SUFFIX, EvidenceFolder

log = logging.getLogger(__name__)

GB = 1024 ** 3


@dataclass(frozen=True)
class RetentionPolicy:
    days: float = 30.0  # evidence older than this is removed
    max_gb: float = 2.0  # ... and the oldest beyond this total
    min_free_gb: float = 1.0  # below this much free disk, no new evidence is written


@dataclass(frozen=True)
class SweepResult:
    removed_parts: int  # inspections whose evidence was removed
    freed_bytes: int
    kept_parts: int
    kept_bytes: int
    protected_over_limit: bool = False  # pending review evidence alone exceeds max_gb


@dataclass(frozen=True)
class DiskStatus:
    free_bytes: int
    total_bytes: int
    evidence_bytes: int
    low: bool  # below the policy's min_free_gb: evidence is not being written

    def words(self) -> str:
        free = f"Disk: {self.free_bytes / GB:.1f} GB free"
        return free + (" — LOW: images are not kept" if self.low else "")


def _group_key(path: Path) -> str | None:
    """The evidence stem a file belongs to (image, heatmap and maps share it), None for other files."""
    name = path.name
    if name.startswith("."):
        return None  # a temporary file of an atomic write in progress
    if name.endswith(HEATMAP_SUFFIX):
        return str(path.with_name(name[: -len(HEATMAP_SUFFIX)]))
    if name.endswith(MAPS_SUFFIX):
        return str(path.with_name(name[: -len(MAPS_SUFFIX)]))
    return str(path.with_suffix(""))


def evidence_groups(root: Path) -> dict[str, tuple[float, int, list[Path]]]:
    """stem -> (newest mtime, total bytes, files), for every evidence file under ``root``."""
    groups: dict[str, tuple[float, int, list[Path]]] = {}
    if not root.is_dir():
        return groups
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            key = _group_key(p)
            if key is None:
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            mtime, size, members = groups.get(key, (0.0, 0, []))
            members.append(p)
            groups[key] = (max(mtime, st.st_mtime), size + st.st_size, members)
    return groups


def sweep(root: str | os.PathLike, policy: RetentionPolicy, protected: Iterable[str] = (),
          now: float | None = None) -> SweepResult:
    """Remove evidence past the policy, oldest first; ``protected``: image paths to keep (pending reviews)."""
    root = Path(root)
    now = time.time() if now is None else now
    keep = {_group_key(Path(p)) for p in protected if p}
    groups = sorted(evidence_groups(root).items(), key=lambda kv: kv[1][0])  # oldest first
    total = sum(size for _k, (_t, size, _m) in groups)
    limit = int(policy.max_gb * GB)
    cutoff = now - policy.days * 86400.0
    removed = freed = 0
    for key, (mtime, size, members) in groups:
        if key in keep:
            continue
        if mtime >= cutoff and total <= limit:
            continue
        for p in members:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("Retention: could not remove %s: %s", p, exc)
        removed += 1
        freed += size
        total -= size
    for dirpath, dirs, files in os.walk(root, topdown=False):  # empty day folders go too
        if Path(dirpath) != root and not dirs and not files:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    kept = len(groups) - removed
    protected_bytes = sum(size for k, (_t, size, _m) in groups if k in keep)
    if removed:
        log.info("Retention: removed the evidence of %d parts (%.1f MB); %d kept (%.1f MB)",
                 removed, freed / 1e6, kept, total / 1e6)
    return SweepResult(removed, freed, kept, total, protected_bytes > limit)


def disk_status(root: str | os.PathLike, policy: RetentionPolicy, evidence_bytes: int = 0) -> DiskStatus:
    usage = shutil.disk_usage(root)
    return DiskStatus(usage.free, usage.total, evidence_bytes, usage.free < policy.min_free_gb * GB)


class Housekeeper:
    """The retention sweep and the disk check, on one background thread (the UI never waits for it).

    ``on_status(DiskStatus)`` is called in that thread after each check (the window passes a queued
    signal's ``emit``); ``protected()`` returns the image paths of pending reviews. While the disk is
    low it sets ``evidence.paused``, which :func:`station.recording.record` reads before writing.
    ``startup()``, when given, runs once in that thread before the first round (the station passes
    :func:`station.sweep.startup_sweep`: what a killed station left behind goes before it is counted)."""

    def __init__(self, evidence: EvidenceFolder, policy: Callable[[], RetentionPolicy],
                 protected: Callable[[], Iterable[str]], on_status: Callable[[DiskStatus], None],
                 check_s: float = 30.0, sweep_s: float = 3600.0, startup: Callable[[], object] | None = None):
        self.evidence = evidence
        self.root = evidence.root
        self._counted = evidence.written_bytes
        self._policy, self._protected, self._on_status = policy, protected, on_status
        self.check_s, self.sweep_s = float(check_s), float(sweep_s)
        self._startup = startup
        self.low = False
        self.last_sweep: SweepResult | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="housekeeper", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def poke(self) -> None:
        """Check now (e.g. after a setting changed)."""
        self._wake.set()

    def check(self, force_sweep: bool = False) -> DiskStatus:
        """One round: sweep when due (or over the limit), measure the disk; returns the status."""
        policy = self._policy()
        self.root.mkdir(parents=True, exist_ok=True)
        written, self._counted = self.evidence.written_bytes - self._counted, self.evidence.written_bytes
        due = force_sweep or self.last_sweep is None
        if not due and self.last_sweep is not None:
            s = self.last_sweep
            self.last_sweep = SweepResult(s.removed_parts, s.freed_bytes, s.kept_parts, s.kept_bytes + written,
                                          s.protected_over_limit)
            due = self.last_sweep.kept_bytes > policy.max_gb * GB
        if due:
            try:
                self.last_sweep = sweep(self.root, policy, self._protected())
            except Exception:  # noqa: BLE001 - housekeeping must never stop the station
                log.exception("Retention sweep failed")
        evidence = self.last_sweep.kept_bytes if self.last_sweep else 0
        status = disk_status(self.root, policy, evidence)
        if status.low != self.low:
            log.warning("Disk %s: %.2f GB free", "low, images are not kept" if status.low else "space back",
                        status.free_bytes / GB)
        self.low = status.low
        self.evidence.paused = (f"the disk is almost full ({status.free_bytes / GB:.1f} GB free, less than "
                                f"{policy.min_free_gb:g} GB)" if status.low else None)
        return status

    def _run(self) -> None:
        if self._startup is not None:
            try:
                self._startup()
            except Exception:  # noqa: BLE001 - housekeeping must never stop the station
                log.exception("Start-up sweep failed")
        last_sweep_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            force = now - last_sweep_at >= self.sweep_s
            try:
                status = self.check(force_sweep=force)
                if force:
                    last_sweep_at = now
                self._on_status(status)
            except Exception:  # noqa: BLE001
                log.exception("Disk check failed")
            self._wake.wait(self.check_s)
            self._wake.clear()
