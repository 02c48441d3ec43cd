"""What operators read: model names, reasons, rates and times in plain words (Qt-free)."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Iterable

MODEL_NAMES = {"patchcore": "PatchCore", "gaussian": "Gaussian", "classifier": "Classifier", "fused": "Combined"}
ALL_MODELS = ("patchcore", "gaussian", "classifier")


REASON_TEXT = {
    "agree_normal": "Both checks see a normal part.",
    "agree_defect": "Both checks found a defect.",
    "models_disagree": "The checks disagree: one found a defect, the other did not.",
    "near_threshold": "The combined score is between the PASS and FAIL limits, so the station is not sure.",
    "unfamiliar_input": "The part does not look like the trained product "
                        "(wrong product, position or lighting?).",
}
# Notes the fusion writes for reasons that REASON_TEXT and the score line already explain.
_REDUNDANT_NOTES = (" is near its threshold", " found a defect; ", "the combined score is between")

STATE_WORDS = {"normal": "normal", "uncertain": "unsure", "defect": "defect"}


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def reasons_in_words(reasons: Iterable[str], notes: Iterable[str] = ()) -> list[str]:
    """Reason codes and fusion notes as sentences an operator can act on (no duplicates)."""
    out = [REASON_TEXT.get(str(r), str(r)) for r in reasons]
    for note in notes:
        note = str(note)
        if note and not any(k in note for k in _REDUNDANT_NOTES) and note not in out:
            out.append(note if note.endswith((".", "?", "!")) else note + ".")
    return out


def scores_in_words(scores: dict) -> str:
    """``{"patchcore": {"score": 1.02, "state": "uncertain"}, ...}`` -> one readable line."""
    parts = []
    for m in ALL_MODELS:
        s = scores.get(m)
        if s is None:
            continue
        state = STATE_WORDS.get(str(s.get("state", "")), str(s.get("state", "")))
        parts.append(f"{model_name(m)} {float(s['score']):.2f}× limit ({state})")
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
