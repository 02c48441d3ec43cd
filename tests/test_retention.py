"""Bounded evidence (station.retention): the policy's sweep, the disk check, and the recorder pausing
images (never verdicts) while the disk is low."""
from __future__ import annotations

import os
import time

import numpy as np

from station.evidence import EvidenceFolder
from station.recording import RecordPolicy, record
from station.retention import GB, Housekeeper, RetentionPolicy, evidence_groups, sweep

from station_helpers import make_inspection


def _part(folder: EvidenceFolder, stem: str, age_days: float, kb: int = 10) -> list[str]:
    day = folder.root / "2026-01-01"
    day.mkdir(parents=True, exist_ok=True)
    files = [day / f"{stem}.png", day / f"{stem}_heatmap.jpg", day / f"{stem}.maps.npz"]
    when = time.time() - age_days * 86400
    for f in files:
        f.write_bytes(b"x" * kb * 1024)
        os.utime(f, (when, when))
    return [str(f) for f in files]


def test_old_evidence_goes_pending_reviews_stay_and_empty_day_folders_are_removed(tmp_path):
    ev = EvidenceFolder(tmp_path / "images")
    old = _part(ev, "old", 40)
    pending = _part(ev, "pending", 45)
    new = _part(ev, "new", 1)
    (ev.root / "2026-01-01" / ".half-written.tmp").write_bytes(b"...")  # an atomic write in progress
    other_day = ev.root / "2025-12-01"
    other_day.mkdir()
    result = sweep(ev.root, RetentionPolicy(days=30, max_gb=1.0), protected=[pending[0]])
    assert result.removed_parts == 1 and result.kept_parts == 2
    assert not any(os.path.exists(p) for p in old)
    assert all(os.path.exists(p) for p in pending + new)
    assert (ev.root / "2026-01-01" / ".half-written.tmp").exists() and not other_day.exists()
    assert set(evidence_groups(ev.root)) == {str(ev.root / "2026-01-01" / s) for s in ("pending", "new")}


def test_over_the_size_limit_the_oldest_evidence_goes_first(tmp_path):
    ev = EvidenceFolder(tmp_path / "images")
    parts = {name: _part(ev, name, age, kb=100) for name, age in (("a", 5), ("b", 4), ("c", 3), ("d", 2))}
    limit_gb = 700 * 1024 / GB  # room for two parts of 300 KB
    result = sweep(ev.root, RetentionPolicy(days=30, max_gb=limit_gb))
    assert result.removed_parts == 2 and result.kept_bytes <= limit_gb * GB
    assert [n for n, files in parts.items() if os.path.exists(files[0])] == ["c", "d"]


def test_a_low_disk_pauses_images_but_every_verdict_is_still_recorded(ctx):
    statuses = []
    keeper = Housekeeper(ctx.evidence, lambda: RetentionPolicy(min_free_gb=10 ** 6), lambda: [], statuses.append)
    status = keeper.check()
    assert status.low and ctx.evidence.paused and "almost full" in status.words().lower() + ctx.evidence.paused
    out = record(ctx.store, ctx.evidence, make_inspection("REVIEW"), np.zeros((32, 32, 3), np.uint8), RecordPolicy())
    assert out.record.id is not None and out.record.image_path is None
    assert out.problem and "not kept" in out.problem and "almost full" in out.problem
    keeper._policy = lambda: RetentionPolicy(min_free_gb=0.0)
    assert not keeper.check().low and ctx.evidence.paused is None
    out = record(ctx.store, ctx.evidence, make_inspection("REVIEW"), np.zeros((32, 32, 3), np.uint8), RecordPolicy())
    assert out.problem is None and out.record.image_path


def test_the_housekeeper_sweeps_when_written_evidence_passes_the_limit(ctx):
    policy = RetentionPolicy(days=30, max_gb=300 * 1024 / GB, min_free_gb=0.0)
    keeper = Housekeeper(ctx.evidence, lambda: policy, lambda: [], lambda s: None)
    keeper.check()
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for _ in range(8):
        record(ctx.store, ctx.evidence, make_inspection("FAIL", shape=(256, 256)), image, RecordPolicy())
    assert sum(size for _t, size, _f in evidence_groups(ctx.evidence.root).values()) > policy.max_gb * GB
    keeper.check()  # no forced sweep: the counted bytes alone make it due
    assert sum(size for _t, size, _f in evidence_groups(ctx.evidence.root).values()) <= policy.max_gb * GB
    assert len(ctx.store.query_inspections(limit=None)) == 8  # the verdicts all stay
