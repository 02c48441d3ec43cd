"""Results store: every inspection and every operator review, in one SQLite file (WAL mode).

One connection per :class:`ResultsStore`, shared by the worker thread and the UI thread behind a
lock. Every write is its own committed transaction with ``synchronous=FULL`` (each commit is
fsynced), so neither a crash nor a power cut right after a call loses anything the call reported
as written (NORMAL in WAL mode can lose the last commits on a power cut). Reviews are append-only
and an inspection that has reviews cannot be deleted (both enforced by triggers in the database,
added to an older store when it is opened); the latest review of an inspection is its current
operator decision. ``part_id`` is the line's id of the part (sent with a trigger, or to the local
API), NULL when none came (schema version 2; a version-1 store gets the column when it is opened).

The outbox (``outbox`` table) holds what is still to be sent to the line (a PLC, an MQTT broker):
one row per (inspection, channel), written in the same transaction as the inspection itself, so a
result is either recorded *and* queued for every channel, or neither. A delivery worker
(``station.outbox``) reads the pending rows of its channel in order and marks each one delivered;
the message itself is built from the inspection row (rows never change, but for evidence paths filled
in once by :meth:`ResultsStore.set_evidence` on rows that go to no channel), so a retry sends the
same message. Each channel numbers its rows (``seq``: 1, 2, 3, ...), a consumer can spot a gap.

Timestamps are ISO-8601 UTC text with milliseconds (``2024-05-01T12:00:00.123Z``), so they sort
and compare as text. Naive datetimes given to this module are taken as UTC.
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from core.types import Decision, Inspection, frozen_mapping

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: inspections.part_id (the line's id of the part)
REVIEW_DECISIONS = ("good", "defect")
BUSY_TIMEOUT_MS = 5000

# Evidence of an operator's decision stays: retention removes images, never rows (station.retention).
_KEEP_REVIEWED = """
CREATE TRIGGER IF NOT EXISTS inspections_keep_reviewed BEFORE DELETE ON inspections
WHEN EXISTS (SELECT 1 FROM reviews WHERE inspection_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'an inspection with operator reviews cannot be deleted');
END
"""

# Results on their way to the line: one row per (inspection, channel), pending while ``delivered``
# is NULL. ``seq`` numbers a channel's rows 1, 2, 3, ... in the order they were recorded.
_OUTBOX = """
CREATE TABLE IF NOT EXISTS outbox (
    id            INTEGER PRIMARY KEY,
    inspection_id INTEGER NOT NULL REFERENCES inspections (id),
    channel       TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    created       TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    delivered     TEXT,
    UNIQUE (inspection_id, channel),
    UNIQUE (channel, seq)
)
"""
_OUTBOX_PENDING = """
CREATE INDEX IF NOT EXISTS idx_outbox_pending ON outbox (channel, id) WHERE delivered IS NULL
"""

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS inspections (
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
        part_id        TEXT,
        CHECK ((decision IS NULL) <> (error IS NULL))
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS idx_inspections_ts ON inspections (ts)
    """,
    """
    CREATE INDEX IF NOT EXISTS idx_inspections_recipe ON inspections (recipe, recipe_version)
    """,
    """
    CREATE INDEX IF NOT EXISTS idx_inspections_decision ON inspections (decision)
    """,
    """
    CREATE TABLE IF NOT EXISTS reviews (
        id            INTEGER PRIMARY KEY,
        inspection_id INTEGER NOT NULL REFERENCES inspections (id),
        ts            TEXT    NOT NULL,
        decision      TEXT    NOT NULL CHECK (decision IN ('good', 'defect')),
        note          TEXT    NOT NULL DEFAULT '',
        operator      TEXT    NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS idx_reviews_inspection ON reviews (inspection_id, id)
    """,
    """
    CREATE TRIGGER IF NOT EXISTS reviews_no_update BEFORE UPDATE ON reviews
    BEGIN
        SELECT RAISE(ABORT, 'reviews are append-only: UPDATE is not allowed');
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS reviews_no_delete BEFORE DELETE ON reviews
    BEGIN
        SELECT RAISE(ABORT, 'reviews are append-only: DELETE is not allowed');
    END
    """,
    _KEEP_REVIEWED,
    _OUTBOX,
    _OUTBOX_PENDING,
)
# Added without a schema version of their own (an older station still opens the store and ignores
# them): a store created before them gets them when it is opened, in this order.
_ADDED_LATER = {"inspections_keep_reviewed": _KEEP_REVIEWED, "outbox": _OUTBOX, "idx_outbox_pending": _OUTBOX_PENDING}

# Columns added to a table with a schema version (an older station refuses the store): a store of
# an older version gets them, in the transaction that raises its version.
_ADDED_COLUMNS = (("inspections", "part_id", "ALTER TABLE inspections ADD COLUMN part_id TEXT"),)

# Inspection columns plus the latest review (highest review id) of each inspection.
_SELECT = """
SELECT i.*, r.decision AS review, r.note AS review_note
FROM inspections AS i
LEFT JOIN reviews AS r
    ON r.id = (SELECT MAX(id) FROM reviews WHERE inspection_id = i.id)
"""


class StoreError(Exception):
    """The store cannot be opened or a request cannot be honoured."""


CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # an outbox channel: "mqtt", "modbus", ...


def utc_iso(when: datetime | str | None = None) -> str:
    """``when`` (default: now) as ISO-8601 UTC text with milliseconds and a ``Z`` suffix."""
    if when is None:
        when = datetime.now(timezone.utc)
    elif isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError as exc:
            raise StoreError(f"not an ISO-8601 timestamp: {when!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not (``os.fsdecode`` keeps its bytes as lone
    surrogates) gets its odd bytes written as ``\\xNN``, so it can be stored and reported."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _enum_value(x: Any) -> str:
    return str(getattr(x, "value", x))


@dataclass(frozen=True)
class StoredScore:
    """One model's score as stored: raw, normalised (1.0 = its FAIL limit), state, REVIEW band."""

    raw: float
    score: float
    state: str  # a core.types.ModelState value: normal / uncertain / defect
    band: tuple[float, float]  # (PASS limit, FAIL limit), normalised

    def encoded(self) -> dict:
        return {"raw": self.raw, "score": self.score, "state": self.state, "band": list(self.band)}

    @classmethod
    def decoded(cls, d: Mapping) -> "StoredScore":
        band = d.get("band") or (1.0, 1.0)
        return cls(float(d.get("raw", d.get("score", 0.0))), float(d.get("score", 0.0)), str(d.get("state", "")),
                   (float(band[0]), float(band[1])))


@dataclass(frozen=True)
class StoredInspection:
    """One row of the results store, typed: what every view, report and the CLI read.

    Built by the store from its rows, or by :meth:`of` from a fresh :class:`Inspection` with the
    very same encoding (so a live record and the row read back from the store are equal).
    ``decision`` is None (and ``error`` says why) for a file that could not be inspected.
    """

    id: int | None
    ts: str
    source: str
    recipe: str
    recipe_version: int
    decision: Decision | None
    reasons: tuple[str, ...] = ()  # core.types.Reason values
    notes: tuple[str, ...] = ()
    scores: Mapping[str, StoredScore] = field(default_factory=lambda: frozen_mapping({}))
    fused: float | None = None
    image_path: str | None = None
    heatmap_path: str | None = None
    latency_ms: float | None = None
    mode: str = "cli"
    error: str | None = None
    review: str | None = None  # the latest operator review: 'good' / 'defect', None when unreviewed
    review_note: str | None = None
    part_id: str | None = None  # the line's id of the part (a trigger's or the API's), None when none came

    def __post_init__(self) -> None:
        if not isinstance(self.scores, type(frozen_mapping({}))):
            object.__setattr__(self, "scores", frozen_mapping(self.scores))

    @property
    def verdict(self) -> str:
        """'PASS' / 'FAIL' / 'REVIEW', '' when the file could not be inspected."""
        return self.decision.value if self.decision is not None else ""

    @classmethod
    def of(cls, inspection: Inspection, *, image_path: str | Path | None = None,
           heatmap_path: str | Path | None = None, mode: str = "cli", ts: datetime | str | None = None,
           id: int | None = None, part_id: str | None = None) -> "StoredInspection":
        v = inspection.verdict
        return cls(
            id=id, ts=utc_iso(ts), source=printable(str(inspection.source)), recipe=inspection.recipe,
            recipe_version=int(inspection.recipe_version), decision=Decision(v.decision),
            reasons=tuple(_enum_value(r) for r in v.reasons), notes=tuple(str(n) for n in v.notes),
            scores={s.model: StoredScore(float(s.raw), float(s.score), _enum_value(s.state),
                                         (float(s.band[0]), float(s.band[1]))) for s in v.scores},
            fused=float(v.fused), image_path=None if image_path is None else printable(str(image_path)),
            heatmap_path=None if heatmap_path in (None, "") else printable(str(heatmap_path)),
            latency_ms=float(inspection.latency_ms), mode=mode,
            part_id=None if not part_id else printable(str(part_id)),
        )

    @classmethod
    def failed(cls, source: str, error: str, *, recipe: str = "", recipe_version: int = 0, mode: str = "batch",
               ts: datetime | str | None = None, id: int | None = None,
               part_id: str | None = None) -> "StoredInspection":
        return cls(id=id, ts=utc_iso(ts), source=printable(str(source)), recipe=recipe,
                   recipe_version=int(recipe_version), decision=None, mode=mode, error=printable(str(error)),
                   part_id=None if not part_id else printable(str(part_id)))

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "StoredInspection":
        d = dict(row)
        return cls(
            id=int(d["id"]), ts=d["ts"], source=d["source"], recipe=d["recipe"],
            recipe_version=int(d["recipe_version"]),
            decision=None if d["decision"] is None else Decision(d["decision"]),
            reasons=tuple(json.loads(d["reasons"])), notes=tuple(json.loads(d["notes"])),
            scores={m: StoredScore.decoded(s) for m, s in json.loads(d["scores"]).items()},
            fused=d["fused"], image_path=d["image_path"], heatmap_path=d["heatmap_path"],
            latency_ms=d["latency_ms"], mode=d["mode"], error=d["error"],
            review=d.get("review"), review_note=d.get("review_note"), part_id=d.get("part_id"),
        )


@dataclass(frozen=True)
class StoredReview:
    """One operator review, as appended (reviews are never changed)."""

    id: int
    inspection_id: int
    ts: str
    decision: str  # 'good' / 'defect'
    note: str = ""
    operator: str = ""


@dataclass(frozen=True)
class OutboxItem:
    """One pending outbox row with the inspection it carries (what a delivery worker sends)."""

    id: int
    channel: str
    seq: int  # this channel's running number: 1, 2, 3, ...
    created: str
    attempts: int  # deliveries tried and failed so far
    last_error: str | None
    record: StoredInspection  # the inspection, as stored (its ``id`` is the message id)

    @property
    def inspection_id(self) -> int:
        assert self.record.id is not None  # read from the store: always set
        return self.record.id


def _rowid(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:  # an INSERT always sets it
        raise StoreError("the database did not say which row it wrote")
    return int(cursor.lastrowid)


class ResultsStore:
    """Inspections and reviews in one SQLite file. Thread-safe; use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of results store {self.path}: "
                             f"{exc.strerror or exc}") from exc
        self._lock = threading.Lock()
        try:
            conn = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store {self.path}: {exc}") from exc
        try:
            self._setup(conn)
        except StoreError as exc:
            conn.close()
            raise StoreError(f"{exc} ({self.path})") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._outbox_listeners: list[Callable[[tuple[str, ...]], None]] = []

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"results store has schema version {version}, newer than this program "
                    f"supports ({SCHEMA_VERSION}); use a newer version of the station"
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch the results store to WAL mode (got {mode!r})")
            # FULL: every commit is fsynced, so a power cut loses no row the store reported as
            # written. Measured on the 2-core dev VM: 500 single-row commits 0.05-0.12 s with
            # NORMAL, 0.2-0.5 s with FULL (0.4-1 ms a row: little next to an inspection's ~40 ms)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # REPLACE deletes the old row first: with recursive triggers that delete fires the
            # append-only trigger too, so INSERT OR REPLACE cannot overwrite a review
            conn.execute("PRAGMA recursive_triggers = ON")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    ResultsStore._add_columns(conn)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            else:
                ResultsStore._add_later_objects(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store: {exc}") from exc

    @staticmethod
    def _add_columns(conn: sqlite3.Connection) -> None:
        """Inside the transaction that raises the schema version: add the columns a store of an older
        version lacks (read in the transaction, so a second station opening it meanwhile adds none twice)."""
        for table, column, sql in _ADDED_COLUMNS:
            if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(sql)

    @staticmethod
    def _add_later_objects(conn: sqlite3.Connection) -> None:
        """Give a store created before them the triggers, tables and indexes added since (a no-op
        when they are there)."""
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        missing = [sql for name, sql in _ADDED_LATER.items() if name not in have]
        if not missing:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in missing:
                conn.execute(sql)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("results store is closed")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock for one write transaction; commit on success, roll back on error."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _fetch(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._connection().execute(sql, tuple(params)).fetchall()

    # -- writes -----------------------------------------------------------------------------

    def add_inspection(
        self,
        inspection: Inspection | StoredInspection,
        *,
        image_path: str | Path | None = None,
        heatmap_path: str | Path | None = None,
        mode: str = "cli",
        ts: datetime | str | None = None,
    ) -> int:
        """Store one inspection result (live, or already as its record); return its id. ``ts`` defaults to now."""
        rec = inspection if isinstance(inspection, StoredInspection) else StoredInspection.of(
            inspection, image_path=image_path, heatmap_path=heatmap_path, mode=mode, ts=ts)
        return self.add_record(rec)

    def add_record(self, rec: StoredInspection, *, outbox: Iterable[str] = ()) -> int:
        """Store a record as it is (its ``id`` and review fields are ignored); return the new id.

        ``outbox``: the channels the result goes out on (``"mqtt"``, ``"modbus"``): one pending
        outbox row each, in the same transaction (recorded and queued, or neither). The outbox
        listeners hear of it once the transaction is committed."""
        if (rec.decision is None) == (rec.error is None):
            raise StoreError("a record has either a decision or an error, not both or neither")
        channels = tuple(dict.fromkeys(str(c) for c in outbox))
        for c in channels:
            if not CHANNEL_NAME.fullmatch(c):
                raise StoreError(f"not an outbox channel name: {c!r}")
        with self._transaction() as conn:
            iid = _rowid(conn.execute(
                "INSERT INTO inspections (ts, source, recipe, recipe_version, decision, reasons,"
                " notes, scores, fused, image_path, heatmap_path, latency_ms, mode, error, part_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    utc_iso(rec.ts), rec.source, rec.recipe, int(rec.recipe_version),
                    None if rec.decision is None else Decision(rec.decision).value,
                    json.dumps(list(rec.reasons)), json.dumps(list(rec.notes)),
                    json.dumps({m: s.encoded() for m, s in rec.scores.items()}),
                    rec.fused, rec.image_path, rec.heatmap_path, rec.latency_ms, rec.mode, rec.error,
                    rec.part_id or None,
                ),
            ))
            now = utc_iso()
            for c in channels:
                conn.execute(
                    "INSERT INTO outbox (inspection_id, channel, seq, created) VALUES"
                    " (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox WHERE channel = ?), ?)",
                    (iid, c, c, now))
        if channels:
            self._tell_outbox_listeners(channels)
        return iid

    def set_evidence(self, inspection_id: int, image_path: str | Path | None,
                     heatmap_path: str | Path | None) -> bool:
        """Name the evidence of a row stored without any (written after the row: ``station.recording``'s
        background writer), once: a row that already names evidence is left as it is (False). The
        caller writes the files first, so a row never names a file that does not exist."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE inspections SET image_path = ?, heatmap_path = ? WHERE id = ?"
                " AND image_path IS NULL AND heatmap_path IS NULL",
                (None if image_path is None else str(image_path),
                 None if heatmap_path is None else str(heatmap_path), int(inspection_id)))
            return cur.rowcount == 1

    def add_error(
        self,
        source: str,
        error: str,
        *,
        recipe: str = "",
        recipe_version: int = 0,
        mode: str = "batch",
        ts: datetime | str | None = None,
    ) -> int:
        """Record a file that could not be inspected (decision NULL); return its id."""
        return self.add_record(StoredInspection.failed(source, error, recipe=recipe, recipe_version=recipe_version,
                                                       mode=mode, ts=ts))

    def add_review(
        self, inspection_id: int, decision: str, note: str = "", operator: str = ""
    ) -> int:
        """Append an operator review ('good' or 'defect'); it supersedes earlier ones."""
        if decision not in REVIEW_DECISIONS:
            raise ValueError(f"review decision must be one of {REVIEW_DECISIONS}, got {decision!r}")
        with self._transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM inspections WHERE id = ?", (int(inspection_id),)
            ).fetchone() is None:
                raise StoreError(f"no inspection with id {inspection_id}")
            return _rowid(conn.execute(
                "INSERT INTO reviews (inspection_id, ts, decision, note, operator)"
                " VALUES (?, ?, ?, ?, ?)",
                (int(inspection_id), utc_iso(), decision, note, operator),
            ))

    # -- reads ------------------------------------------------------------------------------

    def get_inspection(self, inspection_id: int) -> StoredInspection | None:
        rows = self._fetch(_SELECT + " WHERE i.id = ?", (int(inspection_id),))
        return StoredInspection._from_row(rows[0]) if rows else None

    def query_inspections(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        recipe: str | None = None,
        recipe_version: int | None = None,
        decisions: Iterable[str | Decision] | None = None,
        limit: int | None = 500,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[StoredInspection]:
        """Inspections with ``since <= ts < until`` and the other filters, as typed records.

        Each carries ``review`` and ``review_note`` from its latest review (None when unreviewed).
        ``limit=None``: no limit.
        """
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("i.ts >= ?")
            params.append(utc_iso(since))
        if until is not None:
            where.append("i.ts < ?")
            params.append(utc_iso(until))
        if recipe is not None:
            where.append("i.recipe = ?")
            params.append(recipe)
        if recipe_version is not None:
            where.append("i.recipe_version = ?")
            params.append(int(recipe_version))
        if decisions is not None:
            wanted = sorted({Decision(_enum_value(d)).value for d in decisions})
            if not wanted:
                return []
            where.append(f"i.decision IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        sql = _SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY i.ts {order}, i.id {order} LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]
        return [StoredInspection._from_row(r) for r in self._fetch(sql, params)]

    def judged_sources(self, recipe: str, recipe_version: int, mode: str = "batch") -> dict[str, StoredInspection]:
        """The newest record of each source already judged (decision set) by this recipe version in ``mode``."""
        rows = self._fetch(
            _SELECT + " WHERE i.id IN (SELECT MAX(id) FROM inspections WHERE recipe = ? AND recipe_version = ?"
            " AND mode = ? AND decision IS NOT NULL GROUP BY source)", (recipe, int(recipe_version), mode))
        return {r["source"]: StoredInspection._from_row(r) for r in rows}

    def reviews_for(self, inspection_id: int) -> list[StoredReview]:
        """All reviews of one inspection, oldest first."""
        rows = self._fetch(
            "SELECT * FROM reviews WHERE inspection_id = ? ORDER BY id", (int(inspection_id),)
        )
        return [StoredReview(**dict(r)) for r in rows]

    def pending_reviews(self, recipe: str | None = None) -> list[StoredInspection]:
        """REVIEW inspections that no operator has reviewed yet, oldest first."""
        sql = (
            _SELECT + " WHERE i.decision = 'REVIEW'"
            " AND NOT EXISTS (SELECT 1 FROM reviews WHERE inspection_id = i.id)"
        )
        params: list = []
        if recipe is not None:
            sql += " AND i.recipe = ?"
            params.append(recipe)
        sql += " ORDER BY i.ts, i.id"
        return [StoredInspection._from_row(r) for r in self._fetch(sql, params)]

    def counts(self, since: datetime | str | None = None, recipe: str | None = None) -> dict:
        """``{"inspected", "PASS", "FAIL", "REVIEW", "errors"}``; inspected excludes errors."""
        sql = (
            "SELECT COUNT(decision), SUM(decision = 'PASS'), SUM(decision = 'FAIL'),"
            " SUM(decision = 'REVIEW'), COUNT(error) FROM inspections WHERE 1"
        )
        params: list = []
        if since is not None:
            sql += " AND ts >= ?"
            params.append(utc_iso(since))
        if recipe is not None:
            sql += " AND recipe = ?"
            params.append(recipe)
        row = self._fetch(sql, params)[0]
        keys = ("inspected", "PASS", "FAIL", "REVIEW", "errors")
        return {k: int(v or 0) for k, v in zip(keys, tuple(row))}

    def recipes(self) -> list[tuple[str, int]]:
        """Distinct (recipe, recipe_version) pairs with a non-empty recipe name, sorted."""
        rows = self._fetch(
            "SELECT DISTINCT recipe, recipe_version FROM inspections WHERE recipe <> ''"
            " ORDER BY recipe, recipe_version"
        )
        return [(r[0], int(r[1])) for r in rows]

    def evidence_paths(self, after_id: int = 0, limit: int = 5000) -> list[tuple[int, str, str | None]]:
        """``(id, image_path, heatmap_path)`` of the rows that point at an image, ``id > after_id``, in id
        order and at most ``limit`` of them: a long store is read in chunks, never holding the lock long."""
        rows = self._fetch("SELECT id, image_path, heatmap_path FROM inspections"
                           " WHERE id > ? AND image_path IS NOT NULL ORDER BY id LIMIT ?",
                           (int(after_id), int(limit)))
        return [(int(r[0]), r[1], r[2]) for r in rows]

    # -- outbox -----------------------------------------------------------------------------

    def add_outbox_listener(self, listener: Callable[[tuple[str, ...]], None]) -> None:
        """``listener(channels)`` is called after each committed record that queued rows on
        ``channels``, in the writing thread: it must only take note (set an event), never block."""
        with self._lock:
            self._outbox_listeners.append(listener)

    def remove_outbox_listener(self, listener: Callable[[tuple[str, ...]], None]) -> None:
        with self._lock:
            if listener in self._outbox_listeners:
                self._outbox_listeners.remove(listener)

    def _tell_outbox_listeners(self, channels: tuple[str, ...]) -> None:
        with self._lock:
            listeners = list(self._outbox_listeners)
        for listener in listeners:
            try:
                listener(channels)
            except Exception:  # noqa: BLE001 - a listener's trouble must not undo a stored row
                log.exception("An outbox listener failed")

    def outbox_pending(self, channel: str, limit: int = 100, after_id: int = 0) -> list[OutboxItem]:
        """The channel's undelivered rows with ``id > after_id``, oldest first, at most ``limit``."""
        rows = self._fetch(
            "SELECT o.id AS o_id, o.channel AS o_channel, o.seq AS o_seq, o.created AS o_created,"
            " o.attempts AS o_attempts, o.last_error AS o_last_error, i.*, NULL AS review, NULL AS review_note"
            " FROM outbox AS o JOIN inspections AS i ON i.id = o.inspection_id"
            " WHERE o.channel = ? AND o.delivered IS NULL AND o.id > ? ORDER BY o.id LIMIT ?",
            (channel, int(after_id), int(limit)))
        return [OutboxItem(int(r["o_id"]), r["o_channel"], int(r["o_seq"]), r["o_created"], int(r["o_attempts"]),
                           r["o_last_error"], StoredInspection._from_row(r)) for r in rows]

    def outbox_delivered(self, item_id: int) -> bool:
        """Mark a row delivered (now); False when it already was (or does not exist)."""
        with self._transaction() as conn:
            cur = conn.execute("UPDATE outbox SET delivered = ? WHERE id = ? AND delivered IS NULL",
                               (utc_iso(), int(item_id)))
            return cur.rowcount == 1

    def outbox_failed(self, item_id: int, error: str) -> None:
        """Count a failed delivery of a row and keep the reason (plain words, no secrets)."""
        with self._transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                         (printable(str(error))[:500], int(item_id)))

    def outbox_backlog(self, channel: str) -> int:
        """How many rows of the channel wait for delivery."""
        return int(self._fetch("SELECT COUNT(*) FROM outbox WHERE channel = ? AND delivered IS NULL",
                               (channel,))[0][0])

    def outbox_delivered_count(self, channel: str) -> int:
        return int(self._fetch("SELECT COUNT(*) FROM outbox WHERE channel = ? AND delivered IS NOT NULL",
                               (channel,))[0][0])

    def outbox_prune(self, before: datetime | str) -> int:
        """Delete rows delivered before ``before`` (never a pending one, never a channel's newest row,
        which keeps its running number); return how many went."""
        with self._transaction() as conn:
            cur = conn.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?"
                " AND seq < (SELECT MAX(seq) FROM outbox AS o2 WHERE o2.channel = outbox.channel)",
                (utc_iso(before),))
            return cur.rowcount
