"""Fusing model opinions into a PASS / FAIL / REVIEW verdict.

Each model's raw score is compared with its own two limits (see ``core.calibration``): below the
PASS limit it is *normal*, at or above the FAIL limit it sees a *defect*, in between it is
*uncertain*. Its normalised score is raw / FAIL limit (1.0 = that model's FAIL limit).

The models are combined into one **fused score**: each raw score is standardised so that 1 is the
typical held-out good part and 2 the model's FAIL limit, and the standardised scores are averaged
with the recipe's weights (chosen at training time on synthetic defects, see ``core.trainer``).
The fused score has its own PASS and FAIL limits from the held-out good parts' fused scores. Then:

* the input does not look like the trained product   -> REVIEW (unfamiliar_input), whatever the
  scores say: they mean little outside what the models learned;
* fused below its PASS limit and no model at its FAIL limit -> PASS (agree_normal);
* fused at or above its FAIL limit and no model below its PASS limit -> FAIL (agree_defect);
* fused between its limits                            -> REVIEW (near_threshold);
* otherwise (one model sure of a defect, another sure of none) -> REVIEW (models_disagree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

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


@dataclass(frozen=True)
class Fusion:
    """How model scores combine: weights, each model's standardisation, the fused limits."""

    weights: Mapping[str, float]
    centres: Mapping[str, float]  # raw score of a typical held-out good part, per model
    scales: Mapping[str, float]  # raw distance from that centre to the model's FAIL limit
    threshold: Threshold | None = None  # limits on the fused score (None while calibrating)
    chosen_by: str = ""  # how the weights were chosen, in words
    candidates: tuple = field(default=())  # the weightings tried, with their synthetic-defect AUROC

    @classmethod
    def from_thresholds(cls, thresholds: Mapping[str, Threshold], weights: Mapping[str, float]) -> "Fusion":
        centres = {m: float(t.centre) for m, t in thresholds.items() if m in weights}
        scales = {m: max(float(t.value) - float(t.centre), 1e-9) for m, t in thresholds.items() if m in weights}
        return cls(dict(weights), centres, scales)

    def standardised(self, model: str, raw):
        """1 for a typical good part, 2 at the model's FAIL limit (every model on one scale)."""
        return 1.0 + (np.asarray(raw, dtype=np.float64) - self.centres[model]) / self.scales[model]

    def combine(self, raws: Mapping[str, object]):
        """Fused raw score(s) from per-model raw score(s) (floats or equal-length arrays)."""
        total = sum(float(self.weights[m]) for m in self.weights)
        out = sum(float(self.weights[m]) * self.standardised(m, raws[m]) for m in self.weights)
        out = out / max(total, 1e-12)
        return float(out) if np.ndim(out) == 0 else out

    def with_threshold(self, threshold: Threshold) -> "Fusion":
        return Fusion(self.weights, self.centres, self.scales, threshold, self.chosen_by, self.candidates)

    def to_dict(self) -> dict:
        return {
            "weights": dict(self.weights), "centres": dict(self.centres), "scales": dict(self.scales),
            "threshold": self.threshold.to_dict() if self.threshold is not None else None,
            "chosen_by": self.chosen_by, "candidates": [dict(c) for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Fusion":
        thr = d.get("threshold")
        return cls(
            {str(k): float(v) for k, v in d["weights"].items()},
            {str(k): float(v) for k, v in d["centres"].items()},
            {str(k): float(v) for k, v in d["scales"].items()},
            Threshold.from_dict(thr) if thr else None,
            str(d.get("chosen_by", "")),
            tuple(d.get("candidates", ())),
        )


def fuse(scores: Sequence[ModelScore], fusion: Fusion | None = None, unfamiliar: Sequence[str] = ()) -> Verdict:
    """Combine model scores (and any unfamiliar-input findings) into a Verdict.

    Without a ``fusion`` (or without its limits) the fused score is the mean normalised score and
    the verdict follows the models' states alone.
    """
    scores = tuple(scores)
    if not scores:
        raise ValueError("fuse() needs at least one model score")
    by_model = {s.model: s for s in scores}
    if fusion is not None and fusion.threshold is not None and all(m in by_model for m in fusion.weights):
        raw = fusion.combine({m: by_model[m].raw for m in fusion.weights})
        fused_state = model_score("fused", raw, fusion.threshold)
        fused, fused_band, overall = fused_state.score, fused_state.band, fused_state.state
    else:
        fused = float(np.mean([s.score for s in scores]))
        fused_band = (1.0, 1.0)
        states = {s.state for s in scores}
        overall = (ModelState.NORMAL if states == {ModelState.NORMAL}
                   else ModelState.DEFECT if states == {ModelState.DEFECT} else ModelState.UNCERTAIN)
    if not math.isfinite(fused):
        overall = ModelState.UNCERTAIN
    normal = [s.model for s in scores if s.state is ModelState.NORMAL]
    defect = [s.model for s in scores if s.state is ModelState.DEFECT]
    notes: list[str] = []
    reasons: list[Reason] = []
    if unfamiliar:
        reasons.append(Reason.UNFAMILIAR_INPUT)
        notes.extend(unfamiliar)
    if fused_band == (1.0, 1.0) and normal and defect and len(normal) + len(defect) == len(scores):
        # no fused limits: the models' own states, one sure of a defect, another sure of none
        reasons.append(Reason.MODELS_DISAGREE)
        notes.append(f"{', '.join(defect)} found a defect; {', '.join(normal)} did not")
    elif overall is ModelState.NORMAL and defect:
        reasons.append(Reason.MODELS_DISAGREE)
        notes.append(f"{', '.join(defect)} found a defect; {', '.join(normal) or 'the combined score'} did not")
    elif overall is ModelState.DEFECT and normal:
        reasons.append(Reason.MODELS_DISAGREE)
        notes.append(f"{', '.join(defect) or 'the combined score'} found a defect; {', '.join(normal)} did not")
    elif overall is ModelState.UNCERTAIN:
        reasons.append(Reason.NEAR_THRESHOLD)
        notes.append("the combined score is between its PASS and FAIL limits")
    if reasons:
        decision = Decision.REVIEW
    elif overall is ModelState.NORMAL:
        decision, reasons = Decision.PASS, [Reason.AGREE_NORMAL]
    else:
        decision, reasons = Decision.FAIL, [Reason.AGREE_DEFECT]
    return Verdict(decision=decision, reasons=tuple(reasons), scores=scores, fused=float(fused),
                   notes=tuple(notes), fused_band=(float(fused_band[0]), float(fused_band[1])))
