"""Fusing model opinions into a PASS / FAIL / REVIEW verdict.

Each model's raw score is normalised by its threshold (1.0 = threshold) and classed as normal
(below its uncertainty band), defect (above it) or uncertain (inside it). Then:

* every model normal                 -> PASS   (agree_normal)
* every model defect                 -> FAIL   (agree_defect)
* any model uncertain                -> REVIEW (near_threshold)
* some normal and some defect        -> REVIEW (models_disagree)
* the input does not look like the product the recipe was trained on -> REVIEW (unfamiliar_input),
  whatever the models say: their scores mean little outside what they learned.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .calibration import Threshold
from .types import Decision, ModelScore, ModelState, Reason, Verdict


def model_score(name: str, raw: float, threshold: Threshold) -> ModelScore:
    score = threshold.normalise(raw)
    lo, hi = threshold.band
    if not np.isfinite(score):
        state = ModelState.UNCERTAIN
    elif score < lo:
        state = ModelState.NORMAL
    elif score >= hi:
        state = ModelState.DEFECT
    else:
        state = ModelState.UNCERTAIN
    return ModelScore(model=name, raw=float(raw), score=float(score), band=(float(lo), float(hi)), state=state)


def fuse(scores: Sequence[ModelScore], unfamiliar: Sequence[str] = ()) -> Verdict:
    """Combine model scores (and any unfamiliar-input findings) into a Verdict."""
    scores = tuple(scores)
    if not scores:
        raise ValueError("fuse() needs at least one model score")
    fused = float(np.mean([s.score for s in scores]))
    states = {s.state for s in scores}
    notes: list[str] = []
    reasons: list[Reason] = []
    if unfamiliar:
        reasons.append(Reason.UNFAMILIAR_INPUT)
        notes.extend(unfamiliar)
    uncertain = [s.model for s in scores if s.state is ModelState.UNCERTAIN]
    if uncertain:
        reasons.append(Reason.NEAR_THRESHOLD)
        notes.extend(f"{m} is near its threshold" for m in uncertain)
    if ModelState.NORMAL in states and ModelState.DEFECT in states:
        reasons.append(Reason.MODELS_DISAGREE)
        bad = [s.model for s in scores if s.state is ModelState.DEFECT]
        good = [s.model for s in scores if s.state is ModelState.NORMAL]
        notes.append(f"{', '.join(bad)} found a defect; {', '.join(good)} did not")
    if reasons:
        decision = Decision.REVIEW
    elif states == {ModelState.NORMAL}:
        decision, reasons = Decision.PASS, [Reason.AGREE_NORMAL]
    else:
        decision, reasons = Decision.FAIL, [Reason.AGREE_DEFECT]
    return Verdict(decision=decision, reasons=tuple(reasons), scores=scores, fused=fused, notes=tuple(notes))
