"""Threshold what-if, the use case without a window (the dialog is ``station.qt.whatif_dialog``): other budgets, or one score's limits moved, and which stored parts would change.

For the chosen recipe version, every stored inspection's raw model scores are scored again with
``core.fusion.model_score`` and fused with ``core.fusion.fuse`` under new limits:

* **budgets**: the false-reject budget (good parts auto-FAILed) and the review budget (good parts
  sent to REVIEW) set every limit again from the recipe's held-out good scores, as training does;
* **factor**: the chosen score's PASS and FAIL limits (the combined score's, or one model's) scaled
  together (1.0 = as the budgets set them).

Shown: the verdict transitions (PASS→REVIEW: 3, ...) and, among parts an operator confirmed good,
how many would be rejected or sent to review (and among confirmed defects, how many would pass).
"Apply" saves a NEW recipe version; the old one is never changed.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from core.calibration import Threshold, expected_false_reject, fit_threshold
from core.fusion import Fusion, fuse, model_score
from core.recipe import Recipe
from core.store import StoredInspection
from core.types import Reason
from station.context import StationContext

log = logging.getLogger(__name__)

MIN_FACTOR, MAX_FACTOR = 0.5, 2.0
MAX_RECORDS = 50_000  # the newest stored inspections of the version are used (memory, speed)
DECISIONS = ("PASS", "REVIEW", "FAIL")


@dataclass(frozen=True)
class StoredScores:
    """What the what-if needs of one stored inspection."""

    id: int
    decision: str
    raw: dict
    review: str | None = None
    unfamiliar: bool = False

    @classmethod
    def from_record(cls, r: StoredInspection) -> "StoredScores | None":
        if r.error or r.decision is None or r.id is None:
            return None
        raw = {m: s.raw for m, s in r.scores.items()}
        return cls(r.id, r.verdict, raw, r.review, Reason.UNFAMILIAR_INPUT.value in r.reasons)


@dataclass
class WhatIfResult:
    factor: float
    total: int = 0
    skipped: int = 0  # stored without a score for every model of the recipe
    transitions: Counter = field(default_factory=Counter)  # (before, after) -> parts, before != after
    before: Counter = field(default_factory=Counter)
    after: Counter = field(default_factory=Counter)
    good_before: Counter = field(default_factory=Counter)  # verdicts of parts reviewed as good
    good_after: Counter = field(default_factory=Counter)
    defect_before: Counter = field(default_factory=Counter)
    defect_after: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())


def _expected_false_reject(good_scores: np.ndarray | None, high: float, fallback: float) -> float:
    """Fitted probability that a good part scores above ``high`` (same law as the calibration)."""
    if good_scores is None or np.asarray(good_scores).size < 3:
        return fallback
    return expected_false_reject(good_scores, high)


def scaled_threshold(thr: Threshold, factor: float, good_scores: np.ndarray | None = None,
                     from_version: int | None = None) -> Threshold:
    """The limits times ``factor`` (PASS and FAIL limits and the FAIL limit's band together)."""
    f = float(factor)
    note = f"manual x{f:.3f}" + (f" of v{from_version}" if from_version is not None else "")
    value = thr.value * f
    return replace(thr, value=value, low=thr.low * f, high=thr.high * f, pass_limit=thr.pass_limit * f,
                   method=f"{thr.method}; {note}",
                   expected_false_reject=_expected_false_reject(good_scores, value, thr.expected_false_reject))


def budget_limits(recipe: Recipe, budget: float, review_budget: float) -> tuple[dict[str, Threshold], Fusion | None]:
    """Every limit set again from the recipe's held-out good scores at these budgets."""
    thresholds = {}
    for m in recipe.models:
        good = recipe.calibration_scores(m)
        thresholds[m] = (fit_threshold(good, budget, review_budget) if good is not None and good.size >= 3
                         else recipe.threshold(m))
    fusion = recipe.fusion
    fused = recipe.calibration_scores("fused")
    if fusion is not None and fused is not None and fused.size >= 3:
        fusion = fusion.with_threshold(fit_threshold(fused, budget, review_budget))
    return thresholds, fusion


def scaled_limits(thresholds: dict[str, Threshold], fusion: Fusion | None, score: str, factor: float,
                  recipe: Recipe | None = None) -> tuple[dict[str, Threshold], Fusion | None]:
    """``score``'s limits ("fused" or a model) scaled by ``factor``; the rest unchanged."""
    if math.isclose(factor, 1.0):
        return thresholds, fusion
    good = recipe.calibration_scores(score) if recipe is not None else None
    version = recipe.version if recipe is not None else None
    if score == "fused":
        if fusion is None or fusion.threshold is None:
            return thresholds, fusion
        return thresholds, fusion.with_threshold(scaled_threshold(fusion.threshold, factor, good, version))
    changed = dict(thresholds)
    changed[score] = scaled_threshold(thresholds[score], factor, good, version)
    return changed, fusion


def simulate(records: list[StoredScores], thresholds: dict[str, Threshold], fusion: Fusion | None,
             factor: float = 1.0) -> WhatIfResult:
    """Re-run the verdict rules on stored raw scores under these limits (``factor``: for the report)."""
    out = WhatIfResult(factor=float(factor))
    for rec in records:
        if any(m not in rec.raw for m in thresholds):
            out.skipped += 1
            continue
        scores = [model_score(m, rec.raw[m], thresholds[m]) for m in thresholds]
        new = fuse(scores, fusion, ("unfamiliar input",) if rec.unfamiliar else ()).decision.value
        old = rec.decision
        out.total += 1
        out.before[old] += 1
        out.after[new] += 1
        if old != new:
            out.transitions[(old, new)] += 1
        if rec.review == "good":
            out.good_before[old] += 1
            out.good_after[new] += 1
        elif rec.review == "defect":
            out.defect_before[old] += 1
            out.defect_after[new] += 1
    return out


def load_job(context: StationContext, product: str, version: int | None):
    def run(progress, cancelled):
        recipe = context.load_recipe(product, version or None)
        records = context.store.query_inspections(recipe=recipe.product, recipe_version=recipe.version,
                                                  limit=MAX_RECORDS)
        stored = [s for s in (StoredScores.from_record(r) for r in records) if s is not None]
        return recipe, stored
    return run
