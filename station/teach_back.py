"""Teach-back: confirmed parts become training images.

``teach_back`` copies a reviewed part's image into the product's taught-in ``good`` or ``defect``
folder (``StationContext.product_images``), named by inspection id, written atomically; a changed
decision moves it. ``config_from`` (the settings a recipe was trained with) and ``images_in`` serve
the retrain, which lives in ``station.retrain`` (plan, copies of the original training folders,
training, saving on acceptance). Qt-free.
"""
from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path

from core.atomic import copy_file_atomic
from core.images import ImageError, list_images
from core.recipe import Recipe
from core.store import StoredInspection
from core.trainer import TrainConfig
from station.context import StationContext

log = logging.getLogger(__name__)


# -- teach-back ----------------------------------------------------------------------------------
def taught_name(record: StoredInspection) -> str:
    suffix = Path(record.image_path or "x.png").suffix.lower() or ".png"
    return f"inspection_{int(record.id or 0):07d}{suffix}"


def teach_back(context: StationContext, record: StoredInspection, label: str) -> Path:
    """Copy the part's image into the product's ``label`` folder (atomically); returns the copy.

    A copy left in the other label's folder by an earlier decision is removed, so the taught-in
    sets always follow the latest decision. Raises OSError / ValueError with a plain message.
    """
    product = record.recipe
    src = record.image_path or ""
    if not product:
        raise ValueError("This part was inspected without a recipe, so it cannot be taught in.")
    if not src or not os.path.isfile(src):
        raise FileNotFoundError("The image of this part was not kept, so it cannot be taught in.")
    folder = context.product_images(product, label)
    other = context.product_images(product, "defect" if label == "good" else "good")
    name = taught_name(record)
    target = copy_file_atomic(src, folder / name)
    stale = other / name
    if stale.exists():
        stale.unlink()
    return target


# -- what a retrain reuses (station.retrain) -------------------------------------------------
def config_from(recipe: Recipe) -> TrainConfig:
    """The TrainConfig a recipe was trained with (so a retrained version keeps size, ROI, budget)."""
    stored = dict(recipe.training.get("config") or {})
    known = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in stored.items() if k in known}
    if kw.get("roi") is not None:
        kw["roi"] = tuple(int(v) for v in kw["roi"])
    kw["ignore_zones"] = tuple(tuple(int(v) for v in z) for z in kw.get("ignore_zones") or ())
    return TrainConfig(**kw)


def images_in(folder) -> list[Path]:
    try:
        return list_images([folder]) if folder and Path(folder).is_dir() else []
    except ImageError:
        return []
