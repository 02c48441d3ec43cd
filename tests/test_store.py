import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from core.store import SCHEMA_VERSION, ResultsStore, StoredInspection, StoredScore, StoreError, utc_iso
from core.types import Decision, Inspection, ModelScore, ModelState, Reason, Verdict

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def make_inspection(decision=Decision.PASS, recipe="bottle", version=1, source="cam0"):
    scores = (
        ModelScore("patchcore", raw=2.5, score=0.8, band=(0.9, 1.1), state=ModelState.NORMAL),
        ModelScore("gaussian", raw=0.01, score=1.05, band=(0.85, 1.15),
                   state=ModelState.UNCERTAIN),
    )
    verdict = Verdict(
        decision=decision,
        reasons=(Reason.MODELS_DISAGREE, Reason.NEAR_THRESHOLD),
        scores=scores,
        fused=0.925,
        notes=("gaussian near its threshold",),
    )
    maps = {"patchcore": np.zeros((4, 4), np.float32), "gaussian": np.ones((4, 4), np.float32)}
    return Inspection(
        verdict=verdict, maps=maps, region=(1, 1, 2, 2), image_shape=(4, 4), latency_ms=12.5,
        recipe=recipe, recipe_version=version, source=source, frame_id=7,
    )


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "sub" / "dir" / "results.db") as s:
        yield s


def test_creates_parent_dirs_wal_and_schema_version(tmp_path):
    path = tmp_path / "a" / "b" / "results.db"
    with ResultsStore(path) as s:
        assert path.exists()
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a power cut loses no commit
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert "part_id" in {r[1] for r in raw.execute("PRAGMA table_info(inspections)")}  # a fresh store has it
    raw.close()


def test_utc_iso_format():
    assert utc_iso(T0) == "2024-05-01T12:00:00.123Z"
    assert utc_iso(datetime(2024, 5, 1, 12, 0)) == "2024-05-01T12:00:00.000Z"  # naive = UTC
    assert utc_iso("2024-05-01T14:00:00+02:00") == "2024-05-01T12:00:00.000Z"
    assert utc_iso("2024-05-01") == "2024-05-01T00:00:00.000Z"
    with pytest.raises(StoreError):
        utc_iso("yesterday")


def test_round_trip(store):
    iid = store.add_inspection(make_inspection(Decision.REVIEW), image_path="img/1.png",
                               heatmap_path="heat/1.png", mode="triggered", ts=T0)
    row = store.get_inspection(iid)
    assert row == StoredInspection(
        id=iid, ts="2024-05-01T12:00:00.123Z", source="cam0", recipe="bottle", recipe_version=1,
        decision=Decision.REVIEW, reasons=("models_disagree", "near_threshold"),
        notes=("gaussian near its threshold",),
        scores={"patchcore": StoredScore(2.5, 0.8, "normal", (0.9, 1.1)),
                "gaussian": StoredScore(0.01, 1.05, "uncertain", (0.85, 1.15))},
        fused=0.925, image_path="img/1.png", heatmap_path="heat/1.png", latency_ms=12.5, mode="triggered",
        error=None, review=None, review_note=None,
    )
    assert row.verdict == "REVIEW" and row.decision == "REVIEW"
    assert store.get_inspection(iid + 1) is None
    assert store.query_inspections() == [row]


def test_default_timestamp_is_now_utc_with_millis(store):
    before = utc_iso()
    row = store.get_inspection(store.add_inspection(make_inspection()))
    assert before <= row.ts <= utc_iso()
    assert len(row.ts) == len("2024-05-01T12:00:00.123Z") and row.ts.endswith("Z")
    assert row.mode == "cli" and row.heatmap_path is None and row.image_path is None


def test_errors_have_no_decision(store):
    eid = store.add_error("bad.png", "cannot decode image", recipe="bottle", recipe_version=1,
                          ts=T0)
    row = store.get_inspection(eid)
    assert row.decision is None and row.error == "cannot decode image"
    assert row.mode == "batch" and row.source == "bad.png"
    assert row.reasons == () and row.notes == () and dict(row.scores) == {}
    assert store.query_inspections(decisions=["PASS", "FAIL", "REVIEW"]) == []


def test_filters(store):
    ids = {}
    plan = [
        ("a", 1, Decision.PASS, 0), ("a", 1, Decision.FAIL, 1), ("a", 2, Decision.REVIEW, 2),
        ("b", 1, Decision.PASS, 3), ("b", 1, Decision.FAIL, 4),
    ]
    for recipe, version, decision, day in plan:
        ids[(recipe, version, decision, day)] = store.add_inspection(
            make_inspection(decision, recipe, version), ts=T0 + timedelta(days=day))
    err = store.add_error("x.png", "boom", recipe="a", recipe_version=1,
                          ts=T0 + timedelta(days=5))

    def got(**kw):
        return [r.id for r in store.query_inspections(**kw)]

    all_ids = list(ids.values()) + [err]
    assert got() == all_ids[::-1]  # newest first
    assert got(newest_first=False) == all_ids
    # since inclusive, until exclusive; datetime and ISO strings both work
    assert got(since=T0 + timedelta(days=1), until="2024-05-04T12:00:00.123Z",
               newest_first=False) == all_ids[1:3]
    assert got(since=T0 + timedelta(days=1), until=T0 + timedelta(days=1, milliseconds=1)) \
        == [all_ids[1]]
    # 14:00:00.124+02:00 is 12:00:00.124Z, one millisecond after the day-2 row
    assert got(since="2024-05-03T14:00:00.124+02:00") == all_ids[:2:-1]
    assert got(since=datetime(2024, 5, 3, 14, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2)))) \
        == all_ids[:1:-1]
    assert got(recipe="a", newest_first=False) == all_ids[:3] + [err]
    assert got(recipe="a", recipe_version=1, newest_first=False) == all_ids[:2] + [err]
    assert got(recipe_version=2) == [all_ids[2]]
    assert got(decisions=["FAIL"], newest_first=False) == [all_ids[1], all_ids[4]]
    assert got(decisions={Decision.PASS, "REVIEW"}, newest_first=False) == [
        all_ids[0], all_ids[2], all_ids[3]]
    assert got(decisions=[]) == []
    assert got(recipe="b", decisions=["PASS"]) == [all_ids[3]]
    with pytest.raises(ValueError):
        store.query_inspections(decisions=["MAYBE"])
    # paging
    assert got(limit=2, newest_first=False) == all_ids[:2]
    assert got(limit=2, offset=2, newest_first=False) == all_ids[2:4]
    assert got(limit=None, offset=5, newest_first=False) == [err]


def test_counts_and_recipes(store):
    for d, r, day in [(Decision.PASS, "a", 0), (Decision.PASS, "a", 1), (Decision.FAIL, "a", 2),
                      (Decision.REVIEW, "b", 2)]:
        store.add_inspection(make_inspection(d, r, 3 if r == "b" else 1),
                             ts=T0 + timedelta(days=day))
    store.add_error("x.png", "boom", recipe="a", recipe_version=1, ts=T0 + timedelta(days=2))
    store.add_error("y.png", "boom", ts=T0)  # no recipe
    assert store.counts() == {"inspected": 4, "PASS": 2, "FAIL": 1, "REVIEW": 1, "errors": 2}
    assert store.counts(recipe="a") == {"inspected": 3, "PASS": 2, "FAIL": 1, "REVIEW": 0,
                                        "errors": 1}
    assert store.counts(since=T0 + timedelta(days=1)) == {
        "inspected": 3, "PASS": 1, "FAIL": 1, "REVIEW": 1, "errors": 1}
    assert store.counts(recipe="zzz") == {"inspected": 0, "PASS": 0, "FAIL": 0, "REVIEW": 0,
                                          "errors": 0}
    store.add_inspection(make_inspection(recipe="a", version=2))
    assert store.recipes() == [("a", 1), ("a", 2), ("b", 3)]


def test_reviews_latest_supersedes_and_both_rows_remain(store):
    iid = store.add_inspection(make_inspection(Decision.REVIEW))
    other = store.add_inspection(make_inspection(Decision.REVIEW))
    r1 = store.add_review(iid, "defect", note="scratch", operator="ann")
    r2 = store.add_review(iid, "good", note="dust, wiped", operator="bob")
    assert r2 > r1
    row = store.get_inspection(iid)
    assert (row.review, row.review_note) == ("good", "dust, wiped")
    assert row.decision == "REVIEW"  # the model's verdict is untouched
    by_id = {r.id: r for r in store.query_inspections()}
    assert by_id[iid].review == "good" and by_id[other].review is None
    hist = store.reviews_for(iid)
    assert [(h.id, h.decision, h.note, h.operator) for h in hist] == [
        (r1, "defect", "scratch", "ann"), (r2, "good", "dust, wiped", "bob")]
    assert all(h.inspection_id == iid and h.ts.endswith("Z") for h in hist)
    assert store.reviews_for(other) == []


def test_review_validation(store):
    iid = store.add_inspection(make_inspection())
    with pytest.raises(ValueError):
        store.add_review(iid, "bad")
    with pytest.raises(ValueError):
        store.add_review(iid, "GOOD")
    with pytest.raises(StoreError):
        store.add_review(iid + 100, "good")
    assert store.reviews_for(iid) == []
    assert store.reviews_for(iid + 100) == []
    store.add_review(iid, "good")  # the store is still usable after a refused review


def test_reviews_are_append_only_in_the_database(store):
    iid = store.add_inspection(make_inspection(Decision.REVIEW))
    rid = store.add_review(iid, "defect", note="crack")
    for conn in (store._conn, sqlite3.connect(store.path)):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE reviews SET decision = 'good' WHERE id = ?", (rid,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM reviews WHERE id = ?", (rid,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM reviews")
        if conn is not store._conn:
            conn.rollback()
            conn.close()
    # a review of a missing inspection is refused by the foreign key too (raw connection)
    raw = sqlite3.connect(store.path)
    raw.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO reviews (inspection_id, ts, decision) VALUES (999, 'x', 'good')")
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO reviews (inspection_id, ts, decision) VALUES (?, 'x', 'maybe')",
                    (iid,))
    raw.close()
    assert [r.id for r in store.reviews_for(iid)] == [rid]
    assert store.reviews_for(iid)[0].decision == "defect"


def test_pending_reviews(store):
    a = store.add_inspection(make_inspection(Decision.REVIEW, recipe="a"), ts=T0)
    store.add_inspection(make_inspection(Decision.FAIL, recipe="a"), ts=T0)
    b = store.add_inspection(make_inspection(Decision.REVIEW, recipe="b"),
                             ts=T0 + timedelta(seconds=1))
    c = store.add_inspection(make_inspection(Decision.REVIEW, recipe="a"),
                             ts=T0 + timedelta(seconds=2))
    assert [r.id for r in store.pending_reviews()] == [a, b, c]  # oldest first
    store.add_review(a, "good")
    assert [r.id for r in store.pending_reviews()] == [b, c]
    assert [r.id for r in store.pending_reviews(recipe="a")] == [c]
    store.add_review(c, "defect")
    assert store.pending_reviews(recipe="a") == []
    assert [r.id for r in store.pending_reviews()] == [b]


def test_writes_survive_a_crash_without_close(tmp_path):
    path = tmp_path / "results.db"
    crashed = ResultsStore(path)
    iid = crashed.add_inspection(make_inspection(Decision.FAIL), ts=T0)
    crashed.add_error("bad.png", "unreadable")
    rid = crashed.add_review(iid, "defect", note="confirmed")
    # no close(): the first store is simply abandoned, as after a crash
    with ResultsStore(path) as reopened:
        row = reopened.get_inspection(iid)
        assert row.decision == "FAIL" and row.review == "defect"
        assert reopened.counts() == {"inspected": 1, "PASS": 0, "FAIL": 1, "REVIEW": 0,
                                     "errors": 1}
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT decision FROM inspections WHERE id = ?", (iid,)).fetchone() == (
        "FAIL",)
    assert raw.execute("SELECT COUNT(*) FROM inspections").fetchone() == (2,)
    assert raw.execute("SELECT id, note FROM reviews").fetchall() == [(rid, "confirmed")]
    raw.close()
    crashed.close()


def test_writes_survive_a_killed_process(tmp_path):
    path = tmp_path / "results.db"
    script = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from core.store import ResultsStore\n"
        "s = ResultsStore(sys.argv[1])\n"
        "iid = s.add_error('a.png', 'unreadable')\n"
        "s.add_review(iid, 'defect')\n"
        "os._exit(0)  # no close, no atexit, no checkpoint\n"
    )
    repo = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", script, str(path), repo], check=True, timeout=30)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT source, error FROM inspections").fetchall() == [
        ("a.png", "unreadable")]
    assert raw.execute("SELECT decision FROM reviews").fetchall() == [("defect",)]
    raw.close()


def test_concurrent_writers_lose_nothing(store):
    n_threads, per_thread = 2, 200
    errors = []
    start = threading.Barrier(n_threads + 1)

    def worker(k):
        try:
            start.wait()
            for i in range(per_thread):
                iid = store.add_inspection(make_inspection(source=f"t{k}-{i}"))
                if i % 10 == 0:
                    store.add_review(iid, "good")
                    store.query_inspections(limit=5)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    assert errors == []
    rows = store.query_inspections(limit=None)
    assert len(rows) == n_threads * per_thread
    assert {r.source for r in rows} == {f"t{k}-{i}" for k in range(n_threads)
                                           for i in range(per_thread)}
    assert sum(r.review == "good" for r in rows) == n_threads * per_thread // 10
    assert store.counts()["inspected"] == n_threads * per_thread


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "results.db"
    ResultsStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ResultsStore(path)


def test_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "results.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        ResultsStore(path)


def test_closed_store_refuses_calls(tmp_path):
    s = ResultsStore(tmp_path / "r.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.add_inspection(make_inspection())
    with pytest.raises(StoreError, match="closed"):
        s.query_inspections()


def test_atomic_copy_is_complete_or_absent(tmp_path, monkeypatch):
    import os

    from core.atomic import copy_file_atomic

    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 10_000)
    dst = copy_file_atomic(src, tmp_path / "out" / "b.bin")
    assert dst.read_bytes() == src.read_bytes()

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        copy_file_atomic(src, tmp_path / "out" / "c.bin")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.bin"]  # no half file, no temporary


# -- the line's part id (schema version 2) ---------------------------------------------------------

# A version-1 store as the station wrote it before the part id had a column.
_V1_INSPECTIONS = """
CREATE TABLE inspections (
    id             INTEGER PRIMARY KEY,
    ts             TEXT    NOT NULL,
    source         TEXT    NOT NULL DEFAULT '',
    recipe         TEXT    NOT NULL DEFAULT '',
    recipe_version INTEGER NOT NULL DEFAULT 0,
    decision       TEXT    CHECK (decision IN ('PASS', 'FAIL', 'REVIEW')),
    reasons        TEXT    NOT NULL DEFAULT '[]',
    notes          TEXT    NOT NULL DEFAULT '[]',
    scores         TEXT    NOT NULL DEFAULT '{}',
    fused          REAL,
    image_path     TEXT,
    heatmap_path   TEXT,
    latency_ms     REAL,
    mode           TEXT    NOT NULL DEFAULT 'cli',
    error          TEXT,
    CHECK ((decision IS NULL) <> (error IS NULL))
)
"""
_V1_REVIEWS = """
CREATE TABLE reviews (
    id            INTEGER PRIMARY KEY,
    inspection_id INTEGER NOT NULL REFERENCES inspections (id),
    ts            TEXT    NOT NULL,
    decision      TEXT    NOT NULL CHECK (decision IN ('good', 'defect')),
    note          TEXT    NOT NULL DEFAULT '',
    operator      TEXT    NOT NULL DEFAULT ''
)
"""


def _version_1_store(path: Path, *, with_column: bool = False) -> None:
    raw = sqlite3.connect(path)
    raw.execute(_V1_INSPECTIONS)
    raw.execute(_V1_REVIEWS)
    if with_column:  # another station added it, and was stopped before it raised the version
        raw.execute("ALTER TABLE inspections ADD COLUMN part_id TEXT")
    raw.execute("INSERT INTO inspections (ts, source, recipe, recipe_version, decision, mode)"
                " VALUES ('2024-05-01T12:00:00.000Z', 'cam0', 'bottle', 1, 'REVIEW', 'triggered')")
    raw.execute("INSERT INTO inspections (ts, source, mode, error)"
                " VALUES ('2024-05-01T12:00:01.000Z', 'bad.png', 'batch', 'not an image')")
    raw.execute("INSERT INTO reviews (inspection_id, ts, decision, note) VALUES (1, '2024-05-01T12:01:00.000Z',"
                " 'good', 'ok')")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()


@pytest.mark.parametrize("with_column", [False, True])
def test_a_version_1_store_is_migrated_in_place_and_its_rows_read_back_without_a_part_id(tmp_path, with_column):
    path = tmp_path / "results.db"
    _version_1_store(path, with_column=with_column)
    with ResultsStore(path) as s:
        old = s.query_inspections(newest_first=False)
        assert [(r.id, r.source, r.part_id) for r in old] == [(1, "cam0", None), (2, "bad.png", None)]
        assert (old[0].review, old[0].review_note, old[1].error) == ("good", "ok", "not an image")
        new = s.add_record(StoredInspection.of(make_inspection(), mode="triggered", part_id="P-1"))
        assert s.get_inspection(new).part_id == "P-1"
        s.add_record(StoredInspection.of(make_inspection(Decision.REVIEW)), outbox=("mqtt",))
        assert s.outbox_pending("mqtt")[0].record.part_id is None  # the outbox came too; Space: no part id
    raw = sqlite3.connect(path)
    columns = [r[1] for r in raw.execute("PRAGMA table_info(inspections)")]
    assert columns.count("part_id") == 1 and columns[-1] == "part_id"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    raw.close()
    with ResultsStore(path) as s:  # opened again: nothing more to do
        assert [r.part_id for r in s.query_inspections(newest_first=False)] == [None, None, "P-1", None]


def test_a_part_id_round_trips_through_every_typed_read(store):
    iid = store.add_inspection(StoredInspection.of(make_inspection(Decision.REVIEW), mode="batch", ts=T0,
                                                   part_id="A-000123"))
    store.add_record(StoredInspection.of(make_inspection(Decision.PASS, source="cam1"), part_id=""))
    row = store.get_inspection(iid)
    assert row is not None and row.part_id == "A-000123"
    assert row == StoredInspection.of(make_inspection(Decision.REVIEW), mode="batch", ts=T0, id=iid,
                                      part_id="A-000123")  # what was written is what is read
    assert [r.part_id for r in store.query_inspections(newest_first=False)] == ["A-000123", None]  # "" is none
    assert [r.part_id for r in store.pending_reviews()] == ["A-000123"]
    assert store.judged_sources("bottle", 1, mode="batch")["cam0"].part_id == "A-000123"
    failed = store.add_record(StoredInspection.failed("x.png", "not an image", part_id="B-7"))
    assert store.get_inspection(failed).part_id == "B-7"
