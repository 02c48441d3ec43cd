"""Judging with fewer models: when one model of a recipe cannot be used, the others still judge,
but a part is never PASSed on what is left.

A model "cannot be used" when its score is not a number: damaged tensors, a numeric failure in its
graph, or a model the caller has found unusable before (the inspection service probes every model
on the recipe's own reference part when it loads a recipe, ``station.api_service``). The engine
(``core.engine.Inspector``) is left as it is: :func:`judge_without` takes its :class:`Inspection`
and judges it again with :func:`core.fusion.fuse`, the same rules, on the usable models alone.

* a model still sure of a defect FAILs the part, as it would have with both models;
* every other outcome, a clear PASS included, goes to REVIEW;
* the verdict carries ``Reason.MODEL_UNAVAILABLE`` and a note per unusable model, and the
  unusable models' scores and maps are left out (they mean nothing).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from .fusion import fuse
from .types import Decision, Inspection, Reason, Verdict

# the fusion rules' own notes (core.fusion.fuse): the others came from the unfamiliar-input checks
_RULE_NOTES = (" found a defect; ", "the combined score is between its PASS and FAIL limits")


class NoUsableModel(Exception):
    """Every model of the recipe is unusable: there is nothing left to judge with."""


def unusable_models(inspection: Inspection) -> dict[str, str]:
    """The models whose score in this inspection is not a number, with why (in words)."""
    return {s.model: "its score is not a number (its data may be damaged)"
            for s in inspection.verdict.scores if not (math.isfinite(s.raw) and math.isfinite(s.score))}


def judge_without(inspection: Inspection, unavailable: Mapping[str, str]) -> Inspection:
    """``inspection`` judged again without the ``unavailable`` models (model -> why); unchanged when
    none of its models is listed. Raises :class:`NoUsableModel` when no model is left."""
    v = inspection.verdict
    missing = [s.model for s in v.scores if s.model in unavailable]
    if not missing:
        return inspection
    kept = tuple(s for s in v.scores if s.model not in unavailable)
    if not kept:
        raise NoUsableModel("No model of this recipe can judge the part: " + "; ".join(
            f"{m}: {unavailable[m]}" for m in missing) + ".")
    unfamiliar = ([n for n in v.notes if not any(k in n for k in _RULE_NOTES)]
                  if Reason.UNFAMILIAR_INPUT in v.reasons else [])
    judged = fuse(kept, None, unfamiliar)  # no fused limits: each model against its own
    if len(kept) == 1:  # the "combined" score is that model's own, with its own REVIEW zone
        judged = replace(judged, fused=kept[0].score, fused_band=kept[0].band)
    notes = (*judged.notes, *(f"{m} could not be used: {unavailable[m]}" for m in missing))
    if judged.decision is Decision.PASS:
        verdict = Verdict(Decision.REVIEW, (Reason.MODEL_UNAVAILABLE,), judged.scores, judged.fused, notes,
                          judged.fused_band)
    else:
        verdict = replace(judged, reasons=(*judged.reasons, Reason.MODEL_UNAVAILABLE), notes=notes)
    maps = {m: a for m, a in inspection.maps.items() if m not in unavailable}
    region = None if "patchcore" in unavailable else inspection.region  # the region is PatchCore's
    return replace(inspection, verdict=verdict, maps=maps, region=region)
