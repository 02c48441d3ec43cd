"""The result message sent to the line: one JSON document per inspection, schema version 1.

Built from the stored inspection row (rows never change), so a retry sends the very same message.
``inspection_id`` is the message id: a consumer de-duplicates on (``station``, ``inspection_id``)
(delivery is at least once). ``seq`` is the channel's running number (1, 2, 3, ...): a gap means a
message is missing. ``part_id`` is the line's own id of the part when it sent one with the
trigger (or to the local API), else ``<station>-<inspection_id>``. The schema is documented in docs/LINE_INTEGRATION.md; a change that is not
purely additive raises ``SCHEMA``. Qt-free.
"""
from __future__ import annotations

import json
import math
from typing import Any

from core.store import OutboxItem, StoredInspection

SCHEMA = 1
VERDICT_CODES = {"PASS": 1, "FAIL": 2, "REVIEW": 3}  # the Modbus verdict register; 0 = none yet


def _number(x: float | None) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), 6)


def result_message(rec: StoredInspection, *, station: str, seq: int | None = None) -> dict[str, Any]:
    """The message for one stored inspection (``rec.id`` set). Scores are normalised: 1.0 is the
    model's FAIL limit, ``pass_limit`` the top of its PASS range (between them: REVIEW)."""
    if rec.id is None:
        raise ValueError("only a stored inspection (with its id) can be sent")
    models = {
        name: {"score": _number(s.score), "pass_limit": _number(s.band[0]), "fail_limit": _number(s.band[1]),
               "raw": _number(s.raw), "state": s.state}
        for name, s in rec.scores.items()
    }
    return {
        "schema": SCHEMA,
        "station": station,
        "inspection_id": int(rec.id),
        "seq": seq,
        "part_id": rec.part_id or f"{station}-{int(rec.id)}",  # the line's own id, when it sent one
        "source": rec.source,
        "time": rec.ts,
        "verdict": rec.verdict,
        "reasons": list(rec.reasons),
        "fused": {"score": _number(rec.fused), "fail_limit": 1.0},
        "models": models,
        "recipe": {"product": rec.recipe, "version": int(rec.recipe_version)},
        "mode": rec.mode,
    }


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (keys in the order built, so the same row always gives the same bytes)."""
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def item_payload(item: OutboxItem, station: str) -> bytes:
    """The bytes sent for one outbox row."""
    return encode(result_message(item.record, station=station, seq=item.seq))
