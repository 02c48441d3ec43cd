"""Teach-back: confirmed parts become training images, and a recipe is retrained with them.

``teach_back`` copies a reviewed part's image into the product's taught-in ``good`` or ``defect``
folder (``StationContext.product_images``), named by inspection id, written atomically; a changed
decision moves it. ``training_set`` gathers those images plus the images the recipe was trained on
when its ``training.sources`` folders still exist, and says in plain words what it found;
``retrain_job`` is the background function that trains (``parent=`` the current version) and saves
the next version. Qt-free.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

from core.atomic import copy_file_atomic
from core.images import ImageError, list_images
from core.recipe import Recipe
from core.store import StoredInspection
from core.trainer import TrainConfig, train_recipe
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


# -- retraining ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSet:
    good: list[Path]
    defect: list[Path]
    sources: dict
    summary: str  # plain words: what the new version is trained on


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


def training_set(context: StationContext, recipe: Recipe) -> TrainingSet:
    """Taught-in images of the recipe's product plus the recipe's own training folders if present."""
    product = recipe.product
    taught = {label: context.product_images(product, label) for label in ("good", "defect")}
    src = dict(recipe.training.get("sources") or {})
    found: dict[str, dict[str, Path]] = {"good": {}, "defect": {}}
    for label in ("good", "defect"):
        for p in images_in(taught[label]):
            found[label][os.path.realpath(p)] = p
    n_taught = {k: len(v) for k, v in found.items()}
    originals, missing = [], []
    for label in ("good", "defect"):
        folder = src.get(label) or ""
        if not folder:
            continue
        if not Path(folder).is_dir():
            missing.append(folder)
            continue
        before = len(found[label])
        for p in images_in(folder):
            found[label].setdefault(os.path.realpath(p), p)
        originals.append(f"{len(found[label]) - before} {label} images from {folder}")
    good, defect = list(found["good"].values()), list(found["defect"].values())
    words = f"{n_taught['good']} taught-in good and {n_taught['defect']} taught-in defect images"
    if originals:
        summary = f"Training on {words}, plus the original " + " and ".join(originals) + "."
    elif missing:
        summary = (f"The images {recipe.label} was trained on are no longer available "
                   f"({', '.join(missing)} not found): training on the {words} only.")
    else:
        summary = (f"{recipe.label} does not say where its training images are (for example, they "
                   f"were captured from the camera): training on the {words} only.")
    sources = {"good": str(src.get("good") or ""), "defect": str(src.get("defect") or ""),
               "taught_good": str(taught["good"]), "taught_defect": str(taught["defect"])}
    return TrainingSet(good, defect, sources, summary)


def retrain_job(context: StationContext, product: str):
    """The background function for Retrain: (progress, cancelled) -> (product, version, summary)."""
    def run(progress, cancelled):
        progress("Reading the current recipe", 0.0)
        parent = context.load_recipe(product)
        ts = training_set(context, parent)
        log.info("Retraining %s: %s", product, ts.summary)
        progress(ts.summary, 0.0)
        recipe = train_recipe(ts.good, ts.defect, product=product, config=config_from(parent),
                              progress=progress, cancel=cancelled, parent=parent, sources=ts.sources)
        if cancelled():
            return None
        progress("Saving", 1.0)
        recipe.save(context.recipes_root)
        return product, recipe.version, ts.summary
    return run
