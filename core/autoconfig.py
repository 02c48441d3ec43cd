"""Settings a recipe chooses for itself, from its good images alone (never from test labels).

* **Framing**: fixed when most good images share size and proportions, else free
  (``preprocess.choose_framing``); the engineer can force either.
* **Lighting**: normalise each image's brightness and contrast when the good images' own vary
  (``preprocess.choose_normalise``).
* **Resolution**: the base working size (short side ``TrainConfig.size``, 256 px) suits most
  parts; small pits and hairline cracks on large images need more pixels. When the images are
  large enough for a finer working size (``TrainConfig.fine_size``, never above the images' own
  resolution) to differ, both are tried in a quick race: the models fitted on a few dozen good
  images, scored on synthetic defects pasted into the same images (held out, see
  ``core.selfcheck``). The finer one is kept only if it catches clearly more (``RACE_MARGIN``, about
  twice the race's own noise with this many synthetic defects): it costs about (fine / base)^2
  times the inspection time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import heldout, preprocess, selfcheck
from .backbone import working_shape
from .features import Embedding, FeatureExtractor
from .gaussian import block_size

RACE_IMAGES = 40  # good images in the resolution race (two synthetic defects each)
RACE_PCA_IMAGES = 12
RACE_MARGIN = 0.05  # synthetic-defect AUROC the finer resolution must gain to be kept (race noise ~0.025)
FINE_STEP = 1.4  # a finer candidate is tried only when it has this many times the base's pixels per side


class SettingsError(ValueError):
    """The settings asked for cannot work with these images; ``str()`` says why."""


@dataclass
class Plan:
    framing: preprocess.Framing
    outliers: list[int]  # good images left out: other size or proportions than the rest (fixed framing)
    reference_index: int  # the good image whose size is the recipe's reference
    why: dict = field(default_factory=dict)  # setting -> the reason, in words
    race: dict = field(default_factory=dict)  # the resolution race, when there was one


def _fixed_framing(shapes: np.ndarray, config) -> tuple[list[int], int, tuple[int, int], tuple | None]:
    aspect = shapes[:, 1] / shapes[:, 0]
    short = shapes.min(axis=1)
    med_a, med_s = float(np.median(aspect)), float(np.median(short))
    off = (np.abs(np.log(aspect / med_a)) > math.log(preprocess.ASPECT_TOLERANCE)) | (
        np.abs(np.log(short / med_s)) > math.log(preprocess.SIZE_TOLERANCE))
    ref = int(np.argmin(np.abs(np.log(aspect / med_a)) + np.abs(np.log(short / med_s))))
    ref_h, ref_w = (int(v) for v in shapes[ref])
    roi = None
    if config.roi:
        roi = preprocess.scale_box(tuple(int(v) for v in config.roi), (ref_w, ref_h), (ref_w, ref_h))
    return [int(i) for i in np.flatnonzero(off)], ref, (ref_w, ref_h), roi


def _framing_at(kind: str, short_px: int, region_wh, ref_wh, roi, normalise: bool) -> preprocess.Framing:
    if kind == preprocess.FIXED:
        shape = working_shape(region_wh[0] / region_wh[1], short_px)
        scale = shape.height / float(region_wh[1])
        return preprocess.Framing(kind, scale, (shape.height, shape.width), roi, ref_wh, normalise)
    return preprocess.Framing(kind, short_px / float(min(region_wh)), None, None, ref_wh, normalise)


def choose(goods: Sequence[np.ndarray], config, tick: Callable[[float], None] | None = None) -> Plan:
    """The framing, lighting and resolution for these good images (RGB arrays)."""
    shapes = np.array([im.shape[:2] for im in goods], dtype=np.int64)
    why: dict[str, str] = {}
    if config.framing == "auto":
        kind, why["framing"] = preprocess.choose_framing(shapes)
    else:
        kind, why["framing"] = config.framing, f"{config.framing} framing, set by the engineer"
    if kind == preprocess.FIXED:
        outliers, ref, ref_wh, roi = _fixed_framing(shapes, config)
        region_wh = (roi[2], roi[3]) if roi else ref_wh
    else:
        if config.roi or config.ignore_zones:
            raise SettingsError("A region of interest or ignore zones need fixed framing: these good images "
                                "vary in size or proportions. Crop them alike, or choose fixed framing.")
        outliers, roi = [], None
        short = shapes.min(axis=1)
        ref = int(np.argsort(short)[len(short) // 2])
        ref_wh = (int(shapes[ref][1]), int(shapes[ref][0]))
        region_wh = ref_wh
    keep = [im for i, im in enumerate(goods) if i not in set(outliers)]
    if config.normalise == "auto":
        normalise, why["lighting"] = preprocess.choose_normalise(keep)
    else:
        normalise = config.normalise == "on"
        why["lighting"] = "lighting normalisation " + ("on" if normalise else "off") + ", set by the engineer"

    short_side = int(min(region_wh))
    base = _framing_at(kind, config.size, region_wh, ref_wh, roi, normalise)
    fine_px = min(int(config.fine_size), short_side)
    fine = _framing_at(kind, fine_px, region_wh, ref_wh, roi, normalise) if fine_px >= FINE_STEP * config.size else None
    race: dict = {}
    if fine is None or config.resolution == "base":
        chosen = base
        why["resolution"] = (f"working size {_size_words(base)}" +
                             (", set by the engineer" if config.resolution == "base" and fine is not None
                              else f": the images ({short_side} px short side) gain nothing from a finer one"))
    elif config.resolution == "fine":
        chosen, why["resolution"] = fine, f"working size {_size_words(fine)}, set by the engineer"
    else:
        sample = np.linspace(0, len(keep) - 1, min(len(keep), RACE_IMAGES)).round().astype(int)
        images = [keep[i] for i in sample]
        results = []
        for j, fr in enumerate((base, fine)):
            lo = j / 2.0
            results.append(_race_one(images, fr, config, None if tick is None else (lambda f, lo=lo: tick(lo + f / 2))))
        gain = results[1]["synthetic_auroc"] - results[0]["synthetic_auroc"]
        chosen = fine if gain >= RACE_MARGIN else base
        race = {"candidates": results, "margin": RACE_MARGIN, "chosen": _size_words(chosen)}
        why["resolution"] = (
            f"working size {_size_words(chosen)}: on synthetic defects the finer {_size_words(fine)} scored "
            f"{results[1]['synthetic_auroc']:.3f} against {results[0]['synthetic_auroc']:.3f} for {_size_words(base)}"
            + (" (kept: it catches clearly more)" if chosen is fine else " (not worth its extra time)")
        )
    return Plan(chosen, outliers, ref, why, race)


def _size_words(f: preprocess.Framing) -> str:
    if f.working_hw is not None:
        return f"{f.working_hw[1]}x{f.working_hw[0]} px"
    return f"{f.scale:.2f} x the images' pixels"


def _race_one(images: Sequence[np.ndarray], framing: preprocess.Framing, config, tick) -> dict:
    """Synthetic-defect AUROC of a recipe fitted on ``images`` at ``framing`` (both models, equal weights)."""
    t0 = time.perf_counter()
    workings = [framing.prepare(im)[0] for im in images]
    extractor = FeatureExtractor(config.backbone, config.threads)
    projection = extractor.fit_projection(workings[: RACE_PCA_IMAGES], config.pca_dim, config.pca_samples, config.seed)
    embedding = Embedding(config.backbone, projection, config.threads)
    feats = embedding.many(workings)
    if tick:
        tick(0.4)
    weight = heldout.position_weight(framing.fixed, projection.variances, feats[0].shape[0], config.position_weight)
    pc = heldout.fit_patchcore(feats, None, weight, config, minimum=min(512, config.bank_min),
                               maximum=min(2048, config.bank_max))
    per_position = framing.fixed

    block = block_size(feats[0].shape[1:]) if per_position else 1
    folds = heldout.GaussianFolds.fit(feats, 4, per_position, block, config.seed)
    idx = np.arange(len(feats))
    grids = {"patchcore": heldout.patchcore_grids(pc, feats, idx), "gaussian": heldout.gaussian_grids(folds, feats, idx)}
    held, norms = heldout.model_scores(grids, None, per_position and config.position_norm)  # as the recipe will be
    if tick:
        tick(0.6)
    syn = selfcheck.synthetic_scores({int(i): im for i, im in enumerate(images)}, framing, embedding, pc, folds,
                                     None, None, per_image=2, seed=config.seed + 7, norms=norms)
    auroc = selfcheck.equal_weight_auroc(held, syn.scores)
    if tick:
        tick(1.0)
    return {"working": _size_words(framing), "scale": round(framing.scale, 4), "synthetic_auroc": round(auroc, 4),
            "seconds": round(time.perf_counter() - t0, 2)}
