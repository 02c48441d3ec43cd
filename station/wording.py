"""Verdicts in an operator's words: reason codes and engine notes -> short plain sentences.

Qt-free (tests and the report can use it too). ``headline`` says what to do, ``explain`` why.
"""
from __future__ import annotations

import re

from core.types import Decision, ModelState, Reason, Verdict

MODEL_NAMES = {"patchcore": "PatchCore", "gaussian": "the Gaussian model", "classifier": "the defect classifier"}
MODEL_LABELS = {"patchcore": "PatchCore", "gaussian": "Gaussian", "classifier": "Defect classifier"}

HEADLINES = {
    Decision.PASS: "PASS",
    Decision.FAIL: "FAIL",
    Decision.REVIEW: "REVIEW",
}

ACTIONS = {
    Decision.PASS: "Good part.",
    Decision.FAIL: "Defect found — put the part aside.",
    Decision.REVIEW: "Not sure — please check the part.",
}

# notes the fusion rules write from the reason codes: we say the same thing in our own words
_FUSION_NOTE = re.compile(r"^(.+ is near its threshold|.+ found a defect; .+ did not|"
                          r"the combined score is between its PASS and FAIL limits)$")


def model_name(model: str, capital: bool = False) -> str:
    name = MODEL_NAMES.get(model, model)
    return name[:1].upper() + name[1:] if capital else name


def model_label(model: str) -> str:
    """Short name for labels and chart titles."""
    return MODEL_LABELS.get(model, model)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def explain(verdict: Verdict) -> list[str]:
    """Plain sentences, most important first."""
    out: list[str] = []
    reasons = set(verdict.reasons)
    defect = [model_name(s.model) for s in verdict.scores if s.state is ModelState.DEFECT]
    normal = [model_name(s.model) for s in verdict.scores if s.state is ModelState.NORMAL]
    near = [s for s in verdict.scores if s.state is ModelState.UNCERTAIN]
    if Reason.UNFAMILIAR_INPUT in reasons:
        extra = [n for n in verdict.notes if not _FUSION_NOTE.match(n)]
        out.extend(extra or ["The image does not look like the product this recipe was trained on."])
    if Reason.MODELS_DISAGREE in reasons:
        out.append(
            f"The two models disagree: {_cap(_join(defect))} found a defect, "
            f"{_join(normal)} did not — please check."
        )
    if Reason.NEAR_THRESHOLD in reasons:
        lo = verdict.fused_band[0]
        out.append(
            f"The combined score ({verdict.fused:.2f} × FAIL limit) is between the PASS limit ({lo:.2f}) "
            "and the FAIL limit (1.00): too close to call — please check."
        )
        for s in near:
            out.append(f"{model_name(s.model, True)} is between its limits ({s.score:.2f} × FAIL limit, "
                       f"PASS below {s.band[0]:.2f}).")
    if Reason.AGREE_DEFECT in reasons:
        out.append("Both models found a defect; the outlined area is the most unusual one."
                   if len(verdict.scores) == 2 else "Every model found a defect; see the outlined area.")
    if Reason.AGREE_NORMAL in reasons:
        out.append("Both models see a good part." if len(verdict.scores) == 2 else "Every model sees a good part.")
    if not out:  # a reason code this station does not know yet: show the engine's own notes
        out.extend(verdict.notes or [ACTIONS[verdict.decision]])
    return out


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def headline(verdict: Verdict) -> str:
    return HEADLINES[verdict.decision]


def action(verdict: Verdict) -> str:
    return ACTIONS[verdict.decision]

