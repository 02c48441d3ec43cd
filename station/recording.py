"""Writing a verdict down: the part's images (when kept) and its row in the results store.

Runs in the inference worker thread, right after the verdict has been emitted to the window, so
the operator never waits for a disk. Qt-free.

Why in the worker and not in a separate writer thread: recording is bounded by construction (one
inspection in flight, no queue that can grow or drop records), rows land in verdict order, and a
2-core bench PC has no spare core for a third busy thread. The cost: when images are kept
(REVIEW/FAIL parts, ~10 ms for a 256 px part) the next inspection starts that much later.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

import numpy as np

from core.store import StoreError
from core.types import Inspection

from station.mailbox import RecordPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordOutcome:
    inspection_id: int | None  # None: the store refused the row (see ``problem``)
    image_path: str | None
    heatmap_path: str | None
    problem: str | None  # plain words for the operator, None when all went well


class Recorder:
    """Saves artefacts via ``StationContext.save_artifacts`` and rows via its ``store``."""

    def __init__(self, context):
        self.context = context

    def record(self, inspection: Inspection, image: np.ndarray, policy: RecordPolicy) -> RecordOutcome:
        image_path = heatmap_path = None
        problems = []
        if policy.keeps_images(inspection.decision.value):
            try:
                image_path, heatmap_path = self.context.save_artifacts(inspection, image)
                heatmap_path = heatmap_path or None
            except OSError as exc:
                log.exception("Saving the images of frame %s failed", inspection.frame_id)
                problems.append(
                    f"The images of this part could not be saved ({exc.strerror or exc}). "
                    "Is the disk full or the data folder read-only?"
                )
        try:
            row = self.context.store.add_inspection(
                inspection, image_path=image_path, heatmap_path=heatmap_path, mode=policy.mode
            )
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.exception("Recording frame %s in the results store failed", inspection.frame_id)
            problems.append(f"The result could not be written to the results database ({exc}).")
            row = None
        return RecordOutcome(row, image_path, heatmap_path, " ".join(problems) or None)
