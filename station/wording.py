"""What operators read, in one place: verdicts, reasons, model names, rates and times in plain words.

Qt-free; the live view, the batch table, the history, the review queue, the part viewer and the
reports all use it, so a part is explained in the same words wherever it is shown. Explanations
are built from the structured verdict (reason codes, each model's state and score, the combined
score and its limits), live or stored, never by reading the engine's English notes; the only notes
shown are the engine's details of why an input is unfamiliar (size, brightness...), which have no
code of their own.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.store import StoredInspection, StoredScore
from core.types import Decision, Reason, Verdict

ALL_MODELS = ("patchcore", "gaussian", "classifier")
MODEL_LABELS = {"patchcore": "PatchCore", "gaussian": "Gaussian", "classifier": "Classifier", "fused": "Combined"}
_IN_A_SENTENCE = {"patchcore": "PatchCore", "gaussian": "the Gaussian model", "classifier": "the defect classifier",
                  "fused": "the combined score"}
STATE_WORDS = {"normal": "normal", "uncertain": "unsure", "defect": "defect"}

HEADLINES = {Decision.PASS: "PASS", Decision.FAIL: "FAIL", Decision.REVIEW: "REVIEW"}
ACTIONS = {
    Decision.PASS: "Good part.",
    Decision.FAIL: "Defect found — put the part aside.",
    Decision.REVIEW: "Not sure — please check the part.",
}
UNFAMILIAR = "The part does not look like the trained product (wrong product, position or lighting?)."
# the fusion rules' own notes: the reason codes and states already say this, in the words below
_RULE_NOTES = (" found a defect; ", "the combined score is between its PASS and FAIL limits")


def model_label(model: str) -> str:
    """Short name for labels, columns and chart titles."""
    return MODEL_LABELS.get(model, model)


def _named(model: str, capital: bool = False) -> str:
    name = _IN_A_SENTENCE.get(model, model)
    return name[:1].upper() + name[1:] if capital else name


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Explained:
    """What an explanation needs of a verdict, live or stored (states: model -> normal/uncertain/defect)."""

    reasons: tuple[str, ...]
    states: Mapping[str, str] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    pass_limits: Mapping[str, float] = field(default_factory=dict)  # each model's PASS limit, x FAIL limit
    fused: float | None = None
    fused_pass: float | None = None  # the combined score's PASS limit, x its FAIL limit
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, verdict: Verdict) -> "Explained":
        return cls(tuple(r.value for r in verdict.reasons), {s.model: s.state.value for s in verdict.scores},
                   {s.model: float(s.score) for s in verdict.scores},
                   {s.model: float(s.band[0]) for s in verdict.scores}, float(verdict.fused),
                   float(verdict.fused_band[0]), tuple(verdict.notes))

    @classmethod
    def of_record(cls, record: StoredInspection) -> "Explained":
        return cls(record.reasons, {m: s.state for m, s in record.scores.items() if s.state},
                   {m: s.score for m, s in record.scores.items()},
                   {m: s.band[0] for m, s in record.scores.items()}, record.fused, notes=record.notes)


def sentences(e: Explained, detail: bool = True) -> list[str]:
    """Plain sentences, most important first. ``detail=False``: one short sentence per reason (tables)."""
    out: list[str] = []
    defect = [m for m, s in e.states.items() if s == "defect"]
    normal = [m for m, s in e.states.items() if s == "normal"]
    for reason in e.reasons:
        if reason == Reason.UNFAMILIAR_INPUT.value:
            details = [n if n.endswith((".", "?", "!")) else n + "." for n in e.notes
                       if n and not any(k in n for k in _RULE_NOTES)]
            out.extend(details if detail and details else [UNFAMILIAR])
        elif reason == Reason.MODELS_DISAGREE.value:
            if e.states:
                found = [_named(m) for m in defect] or [_named("fused")]
                missed = [_named(m) for m in normal] or [_named("fused")]
                out.append(f"The models disagree: {_join(found)} found a defect, {_join(missed)} did not"
                           " — please check.")
            else:
                out.append("The models disagree: one found a defect, another did not — please check.")
        elif reason == Reason.NEAR_THRESHOLD.value:
            if detail and e.fused is not None and e.fused_pass is not None:
                out.append(f"The combined score ({e.fused:.2f} × FAIL limit) is between the PASS limit "
                           f"({e.fused_pass:.2f}) and the FAIL limit (1.00): too close to call — please check.")
            else:
                out.append("The combined score is between the PASS and FAIL limits: too close to call"
                           " — please check.")
            if detail:
                for m, s in e.states.items():
                    if s == "uncertain" and m in e.scores:
                        limit = f", PASS below {e.pass_limits[m]:.2f}" if m in e.pass_limits else ""
                        out.append(f"{_named(m, True)} is between its limits ({e.scores[m]:.2f} × FAIL limit{limit}).")
        elif reason == Reason.MODEL_UNAVAILABLE.value:
            judged = [_named(m) for m in e.states]
            out.append((f"Only {_join(judged)} could judge this part" if judged else "A model could not judge this part")
                       + " (a model of the recipe is unavailable): no part is passed without every model.")
        elif reason == Reason.AGREE_DEFECT.value and len(e.states) == 1:
            out.append(f"{_named(next(iter(e.states)), True)} found a defect"
                       + ("; see the outlined area." if detail else "."))
        elif reason == Reason.AGREE_DEFECT.value:
            if len(e.states) > 2:
                out.append("Every model found a defect" + ("; see the outlined area." if detail else "."))
            else:
                out.append("Both models found a defect" + ("; the outlined area is the most unusual one."
                                                           if detail else "."))
        elif reason == Reason.AGREE_NORMAL.value:
            out.append("Every model sees a good part." if len(e.states) > 2 else "Both models see a good part.")
        else:  # a code this station does not know yet: say it as it is
            out.append(str(reason))
    return out


def explain(verdict: Verdict) -> list[str]:
    """A live verdict in plain sentences, most important first."""
    return sentences(Explained.of(verdict)) or list(verdict.notes) or [ACTIONS[verdict.decision]]


def record_in_words(record: StoredInspection, detail: bool = True) -> list[str]:
    """A stored result's reasons in the same words as the live view (the error, for a file not inspected)."""
    if record.error:
        return [record.error]
    return sentences(Explained.of_record(record), detail=detail)


def headline(verdict: Verdict) -> str:
    return HEADLINES[verdict.decision]


def action(verdict: Verdict) -> str:
    return ACTIONS[verdict.decision]


def scores_in_words(scores: Mapping[str, StoredScore]) -> str:
    """A record's scores -> one readable line ("PatchCore 1.02× limit (unsure)   ·   ...")."""
    parts = []
    for m in ALL_MODELS:
        s = scores.get(m)
        if s is None:
            continue
        state = STATE_WORDS.get(s.state, s.state)
        parts.append(f"{model_label(m)} {s.score:.2f}× limit ({state})")
    return "   ·   ".join(parts)


def one_in(p: float) -> str:
    """0.005 -> '200'; rounded so that it reads like a person would say it."""
    if not (p > 0) or not math.isfinite(p):
        return "many thousand"
    n = 1.0 / p
    if n < 20:
        return f"{n:.0f}"
    if n < 1000:
        return f"{round(n / 10) * 10:.0f}" if n >= 100 else f"{round(n):.0f}"
    if n > 1e6:
        return "more than a million"
    digits = int(math.floor(math.log10(n))) - 1
    return f"{round(n, -digits):,.0f}"


def one_in_words(p: float, what: str = "will be sent to review or rejected") -> str:
    """0.005 -> 'about 1 good part in 200 <what>'; large rates as a percentage."""
    if p >= 0.1:
        return f"about {min(p, 1.0):.0%} of good parts {what}"
    return f"about 1 good part in {one_in(p)} {what}"


def local_time(ts: str) -> str:
    """Store timestamp (ISO UTC) -> local 'YYYY-MM-DD HH:MM:SS'."""
    try:
        t = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return str(ts)
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")
