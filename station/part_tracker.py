"""One part, one record: which live verdicts are parts (continuous mode). Qt-free.

A camera in continuous mode sends 15-30 frames a second; a part lying under it for a minute is one
part, not a thousand. :class:`PartTracker` looks at a tiny grey thumbnail of each inspected frame
(its *signature*: 32 x 32 cells, each the mean of hundreds of pixels, so sensor noise averages out)
and follows the scene:

- **moving**: the frame differs from the previous one (a part arriving, leaving, a hand): nothing
  is recorded;
- **settled**: ``settle_frames`` frames in a row without motion. A settled scene that differs from
  the last settled scene is *new*: if the product is recognised (the verdict is not "unfamiliar")
  it is **one part**, judged once and recorded once; if it is not (an empty fixture, another
  product, the camera looking elsewhere) it is counted as a scene without a part and nothing is
  queued. A settled scene like the last one (the part still lies there) records nothing.

So a part that sits still is one inspection and at most one review item; a new recipe saved while
the camera shows another product gives one "no part" scene, not nine REVIEW items a second; and
parts that follow each other through an empty fixture, even identical ones at an identical pose,
are each recorded (the empty fixture between them is a scene of its own).

The thresholds are differences of the signature's mean absolute grey level (0-255). Measured on
the 256 px demo parts (39 consecutive pairs): sensor noise of sigma 3 moves a signature by 0.5, one
part against the next by 3.9 to 17.5 (median 9.4), a part against a flat empty fixture by 64. A
defective part against its own good twin at the very same pose differs by 0.6, which is why a part
is told from the next by its scene, not by its defect.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

from core.types import Inspection, Reason

SIGNATURE_SIDE = 32
MOTION_LEVEL = 1.5  # mean |grey difference| between consecutive frames above which the scene moves
CHANGE_LEVEL = 2.5  # ... between settled scenes above which the scene is a new one
SETTLE_FRAMES = 3  # consecutive still frames before a scene counts as settled


class PartEvent(enum.StrEnum):
    MOVING = "moving"  # something moves: wait
    SETTLING = "settling"  # still, not yet for long enough
    NEW_PART = "new_part"  # a new settled scene with the product in it: record this verdict
    SAME_PART = "same_part"  # the settled scene judged before: nothing new
    NO_PART = "no_part"  # a new settled scene without the product (empty fixture, other product)


def signature(image: np.ndarray) -> np.ndarray:
    """A 32 x 32 grey thumbnail, float32 (area-averaged: noise-free, pose-sensitive)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey.astype(np.float32), (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)


def difference(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None or a.shape != b.shape:
        return float("inf")
    return float(np.mean(np.abs(a - b)))


@dataclass(frozen=True)
class Observation:
    event: PartEvent
    motion: float  # difference to the previous frame
    change: float  # difference of the settled scene to the last settled scene (inf: none yet)


class PartTracker:
    """Thread-confined (the inference worker owns one); :meth:`reset` on a new recipe or mode."""

    def __init__(self, motion_level: float = MOTION_LEVEL, change_level: float = CHANGE_LEVEL,
                 settle_frames: int = SETTLE_FRAMES):
        self.motion_level = float(motion_level)
        self.change_level = float(change_level)
        self.settle_frames = max(1, int(settle_frames))
        self.parts = 0  # new parts seen since the last reset
        self.scenes_without_part = 0
        self.reset()

    def reset(self) -> None:
        """Forget the scene: the next settled scene is new (a new recipe judges the part again)."""
        self._previous: np.ndarray | None = None
        self._still = 0
        self._scene: np.ndarray | None = None  # the last settled scene
        self._judged = False  # the current settled scene has had its verdict

    def observe(self, image: np.ndarray, inspection: Inspection) -> Observation:
        """The event this verdict belongs to (call once per inspected frame, in order)."""
        sig = signature(image)
        motion = difference(sig, self._previous)
        self._previous = sig
        if motion > self.motion_level:
            self._still, self._judged = 0, False
            return Observation(PartEvent.MOVING, motion, float("nan"))
        self._still += 1
        if self._still < self.settle_frames:
            return Observation(PartEvent.SETTLING, motion, float("nan"))
        change = difference(sig, self._scene)
        if self._judged or change <= self.change_level:
            self._judged = True
            return Observation(PartEvent.SAME_PART, motion, change)
        self._scene, self._judged = sig, True
        if Reason.UNFAMILIAR_INPUT in inspection.verdict.reasons:
            self.scenes_without_part += 1
            return Observation(PartEvent.NO_PART, motion, change)
        self.parts += 1
        return Observation(PartEvent.NEW_PART, motion, change)
