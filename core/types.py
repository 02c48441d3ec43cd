"""Plain, frozen result types that cross thread boundaries.

Everything here is immutable: dataclasses are frozen, mappings are read-only views and arrays are
marked non-writeable, so a result emitted by a worker thread can be shown, stored and queued by
other threads without copies or locks.
"""
from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


class Decision(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    REVIEW = "REVIEW"


class ModelState(str, enum.Enum):
    NORMAL = "normal"
    UNCERTAIN = "uncertain"
    DEFECT = "defect"


class Reason(str, enum.Enum):
    """Reason codes attached to a verdict (stable strings: they are stored and exported)."""

    AGREE_NORMAL = "agree_normal"
    AGREE_DEFECT = "agree_defect"
    MODELS_DISAGREE = "models_disagree"
    NEAR_THRESHOLD = "near_threshold"
    UNFAMILIAR_INPUT = "unfamiliar_input"
    MODEL_UNAVAILABLE = "model_unavailable"  # a model could not judge: never PASSed on the others (core.degraded)


def frozen_array(a: np.ndarray) -> np.ndarray:
    """Return ``a`` marked read-only (no copy)."""
    a = np.asarray(a)
    a.flags.writeable = False
    return a


def frozen_mapping(d: Mapping) -> Mapping:
    return types.MappingProxyType(dict(d))


@dataclass(frozen=True)
class ModelScore:
    """One model's opinion. ``score`` is normalised so that 1.0 is that model's threshold."""

    model: str
    raw: float
    score: float
    band: tuple[float, float]  # normalised uncertainty band (low, high) around 1.0
    state: ModelState


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reasons: tuple[Reason, ...]
    scores: tuple[ModelScore, ...]
    fused: float  # the fused score, normalised: 1.0 is the fused FAIL limit (see core.fusion)
    notes: tuple[str, ...] = ()  # plain-language detail (which model, which check)
    fused_band: tuple[float, float] = (1.0, 1.0)  # the fused REVIEW zone (PASS limit, FAIL limit), normalised

    def score_of(self, model: str) -> ModelScore | None:
        for s in self.scores:
            if s.model == model:
                return s
        return None


@dataclass(frozen=True)
class Frame:
    """A captured image on its way to the inspection worker (RGB uint8, read-only)."""

    image: np.ndarray
    frame_id: int
    timestamp: float
    source: str

    def __post_init__(self) -> None:
        frozen_array(self.image)


@dataclass(frozen=True)
class Inspection:
    """The complete result for one image.

    ``maps`` hold one anomaly map per model at the input image's resolution, normalised like the
    scores (a pixel at 1.0 is as anomalous as an image at that model's threshold).
    ``region`` is the bounding box (x, y, w, h) of the most anomalous area in input coordinates,
    or None when nothing stands out.
    """

    verdict: Verdict
    maps: Mapping[str, np.ndarray]
    region: tuple[int, int, int, int] | None
    image_shape: tuple[int, int]
    latency_ms: float
    timings_ms: Mapping[str, float] = field(default_factory=lambda: frozen_mapping({}))
    recipe: str = ""
    recipe_version: int = 0
    source: str = ""
    frame_id: int = -1

    def __post_init__(self) -> None:
        for m in self.maps.values():
            frozen_array(m)
        if not isinstance(self.maps, types.MappingProxyType):
            object.__setattr__(self, "maps", frozen_mapping(self.maps))
        if not isinstance(self.timings_ms, types.MappingProxyType):
            object.__setattr__(self, "timings_ms", frozen_mapping(self.timings_ms))

    @property
    def decision(self) -> Decision:
        return self.verdict.decision
