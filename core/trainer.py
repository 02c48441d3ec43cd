"""Train a complete, calibrated recipe from good images (and optional labelled defects).

Stages (each reports progress and checks for cancellation):
 1. load the images (bad files are skipped and listed);
 2. choose the settings from the good images alone (``core.autoconfig``): fixed or free framing,
    whether to normalise lighting, and the working resolution (a quick synthetic-defect race
    between the base and a finer resolution when the images are large enough to matter);
 3. fit the PCA projection on raw backbone features of up to 48 images, export the embedder graph;
 4. embed every image with that graph (the very features inspection will see);
 5. PatchCore memory bank by greedy coreset on the good patches;
 6. Gaussian model, kept per fold for held-out scores;
 7. classifier, only with labelled defects (k-fold out-of-fold probabilities for its calibration);
 8. calibration from held-out good scores only (``core.heldout``), and the synthetic-defect check:
    defects pasted into held-out good images choose the fusion weights and estimate how well the
    recipe catches defects of each size (``core.selfcheck``);
 9. assemble the recipe (saving is the caller's choice); inference graphs are built from its
    tensors when it is loaded (``core.engine``), so a recipe holds data only.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from . import autoconfig, heldout, preprocess, selfcheck
from .backbone import DEFAULT_BACKBONE, weights_digest
from .calibration import DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET, check_budgets, fit_threshold
from .coreset import Cancelled
from .features import Embedding, FeatureExtractor
from .fitting import fit_classifier
from .networks import DefectClassifier
from .gaussian import block_size
from .images import ImageError, encode_png, load_image, to_rgb8
from .patchcore import POSITION_WEIGHT
from .recipe import SCHEMA_VERSION, Recipe, TensorKey, check_product_name, now_iso

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

_STAGES = [  # (name, share of the total time, roughly as measured)
    ("Loading images", 0.08),
    ("Choosing settings", 0.12),
    ("Fitting feature projection", 0.08),
    ("Extracting features", 0.22),
    ("Selecting memory bank", 0.18),
    ("Fitting Gaussian model", 0.04),
    ("Training classifier", 0.04),
    ("Calibrating limits", 0.20),
    ("Finishing", 0.01),
]


class TrainingError(Exception):
    """Training cannot proceed; ``str()`` says why in plain words."""


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = DEFAULT_BACKBONE
    size: int = 256  # base working resolution: short side, pixels
    fine_size: int = 512  # the finer candidate's short side (never above the images' own)
    resolution: str = "auto"  # "auto" (a synthetic-defect race decides), "base" or "fine"
    framing: str = "auto"  # "auto", "fixed" or "free"
    normalise: str = "auto"  # lighting normalisation: "auto", "on" or "off"
    roi: tuple[int, int, int, int] | None = None  # x, y, w, h in the good images' pixels (fixed framing)
    ignore_zones: tuple[tuple[int, int, int, int], ...] = ()
    pca_dim: int = 64  # projected feature channels: every model sees these
    pca_images: int = 48  # images whose raw features fit the projection
    pca_samples: int = 32768  # patches sampled from them
    bank_ratio: float = 0.02  # memory bank: this share of all good patches, clamped below
    bank_min: int = 1024
    bank_max: int = 8192
    bank_pool: int = 16  # the greedy bank search looks at most at bank x this many random patches
    position_weight: float = POSITION_WEIGHT  # fixed framing: PatchCore prefers matches from the same place
    position_norm: bool = True  # fixed framing: maps normalised by each position's good level (core.position_norm)
    gaussian_folds: int = 10  # held-out Gaussian scores from this many folds (each model sees 90 %)
    calibration_images: int = 256  # at most this many good images get held-out scores ...
    calibration_patches: int = 1_000_000  # ... and at most about this many patches in all
    synthetic_images: int = 48  # held-out good images that get synthetic defects
    synthetic_per_image: int = 2  # one only on large working images (``selfcheck.SYNTHETIC_BIG``)
    false_reject_budget: float = DEFAULT_BUDGET
    review_budget: float = DEFAULT_REVIEW_BUDGET
    min_good: int = 10
    seed: int = 0
    threads: int | None = None


@dataclass
class _Clock:
    progress: Progress | None
    cancel: Callable[[], bool]
    timings: dict = field(default_factory=dict)
    _i: int = -1
    _t: float = 0.0

    def stage(self, index: int) -> None:
        now = time.perf_counter()
        if self._i >= 0:
            self.timings[_STAGES[self._i][0]] = round(now - self._t, 3)
        self._i, self._t = index, now
        self.tick(0.0)

    def tick(self, fraction: float) -> None:
        if self.cancel():
            raise Cancelled()
        if self.progress is not None and self._i >= 0:
            done = sum(s for _, s in _STAGES[: self._i])
            self.progress(_STAGES[self._i][0], min(1.0, done + _STAGES[self._i][1] * max(0.0, min(1.0, fraction))))

    def part(self, lo: float, hi: float) -> Callable[[float], None]:
        return lambda f: self.tick(lo + (hi - lo) * f)

    def finish(self) -> None:
        self.stage(len(_STAGES) - 1)
        self.timings[_STAGES[-1][0]] = round(time.perf_counter() - self._t, 3)
        if self.progress is not None:
            self.progress("Done", 1.0)


def _cancel_fn(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _load_all(items: Sequence, clock: _Clock, what: str) -> tuple[list[np.ndarray], list[str], list[dict]]:
    """Decode images in parallel; returns (images, names, skipped[{source, error}])."""
    def one(item):
        if isinstance(item, np.ndarray):
            return to_rgb8(item, order="rgb")
        return load_image(item)

    images, names, skipped = [], [], []
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, it) for it in items]
        for i, (item, fut) in enumerate(zip(items, futures)):
            name = f"<{what} array {i}>" if isinstance(item, np.ndarray) else str(item)
            try:
                images.append(fut.result())
                names.append(name)
            except ImageError as exc:
                skipped.append({"source": name, "error": exc.message})
            clock.tick((i + 1) / max(1, len(items)))
    return images, names, skipped


def _thumbnail_png(image: np.ndarray, max_side: int = 1024) -> bytes:
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        image = cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
    return encode_png(image)


def _check_config(config: TrainConfig) -> None:
    for name, value, allowed in (("resolution", config.resolution, ("auto", "base", "fine")),
                                 ("framing", config.framing, ("auto", "fixed", "free")),
                                 ("normalise", config.normalise, ("auto", "on", "off"))):
        if value not in allowed:
            raise TrainingError(f"'{name}' must be one of {', '.join(allowed)} (got {value!r}).")
    try:
        check_budgets(config.false_reject_budget, config.review_budget)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def train_recipe(
    good: Sequence,
    defect: Sequence = (),
    *,
    product: str = "product",
    config: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
    cancel=None,
    parent: Recipe | None = None,
    sources: dict | None = None,
) -> Recipe:
    """Train and calibrate a recipe. ``good``/``defect``: image paths or RGB arrays."""
    product = check_product_name(product)
    _check_config(config)
    clock = _Clock(progress, _cancel_fn(cancel))
    t_start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(int(config.threads))

    # 1. images ---------------------------------------------------------------------------
    clock.stage(0)
    goods, good_names, skipped = _load_all(list(good), clock, "good")
    defects, defect_names, skipped_d = _load_all(list(defect), clock, "defect")
    skipped += skipped_d
    if len(goods) < config.min_good:
        raise TrainingError(
            f"Training needs at least {config.min_good} good images that can be read; got {len(goods)}"
            + (f" ({len(skipped)} could not be read)." if skipped else ".")
        )

    # 2. settings from the good images ------------------------------------------------------
    clock.stage(1)
    try:
        plan = autoconfig.choose(goods, config, tick=clock.tick)
    except autoconfig.SettingsError as exc:
        raise TrainingError(str(exc)) from exc
    for i in sorted(plan.outliers, reverse=True):
        skipped.append({"source": good_names[i], "error": "Its size or proportions differ from the other good images."})
        del goods[i], good_names[i]
    if len(goods) < config.min_good:
        raise TrainingError(f"Training needs at least {config.min_good} good images of the same framing.")
    framing = plan.framing
    ref_wh = framing.reference_wh
    if ref_wh is None:  # the plan always measures the good images
        raise TrainingError("the framing plan has no reference size")
    n = len(goods)
    reference_png = _thumbnail_png(goods[plan.reference_index])
    syn_idx = np.linspace(0, n - 1, min(n, config.synthetic_images)).round().astype(int)
    syn_originals = {int(i): goods[int(i)] for i in syn_idx}
    good_w = [framing.prepare(im)[0] for im in goods]
    defect_w = [framing.prepare(im)[0] for im in defects]
    del goods, defects
    geo_ref = framing.geometry((ref_wh[1], ref_wh[0])) if framing.fixed else None
    ignore = (preprocess.ignore_mask(list(config.ignore_zones), ref_wh, geo_ref)
              if geo_ref is not None else None)

    # 3. projection + embedder ---------------------------------------------------------------
    clock.stage(2)
    extractor = FeatureExtractor(config.backbone, config.threads)
    pca_idx = np.linspace(0, n - 1, min(config.pca_images, n)).round().astype(int)
    projection = extractor.fit_projection([good_w[i] for i in pca_idx], config.pca_dim, config.pca_samples,
                                          config.seed, tick=clock.tick)
    embedding = Embedding(config.backbone, projection, config.threads)

    # 4. features ---------------------------------------------------------------------------
    clock.stage(3)
    feats = embedding.many(good_w, tick=clock.part(0.0, 0.9))
    defect_feats = embedding.many(defect_w, tick=clock.part(0.9, 1.0)) if defect_w else []
    d = feats[0].shape[0]

    # 5. PatchCore --------------------------------------------------------------------------
    clock.stage(4)
    pos_weight = heldout.position_weight(framing.fixed, projection.variances, d, config.position_weight)
    patchcore = heldout.fit_patchcore(feats, ignore, pos_weight, config, cancel=clock.cancel, progress=clock.tick)

    # 6. Gaussian ---------------------------------------------------------------------------
    clock.stage(5)
    per_position = framing.fixed
    block = block_size(feats[0].shape[1:]) if per_position else 1
    folds = heldout.GaussianFolds.fit(feats, config.gaussian_folds, per_position, block, config.seed,
                                      tick=clock.tick)
    gaussian = folds.model()

    # 7. classifier -------------------------------------------------------------------------
    clock.stage(6)
    clf: DefectClassifier | None = None
    clf_summary: dict[str, Any] = {}
    if len(defect_feats) >= 2:
        clf, clf_summary = fit_classifier(feats, defect_feats, projection.variances, seed=config.seed,
                                          false_reject_budget=config.false_reject_budget,
                                          review_budget=config.review_budget, tick=clock.tick, cancel=clock.cancel)

    # 8. calibration and the synthetic-defect check -------------------------------------------
    clock.stage(7)
    per_image = int(feats[0].shape[1] * feats[0].shape[2])
    n_cal = min(n, config.calibration_images, max(64, config.calibration_patches // max(1, per_image)))
    cal_idx = np.linspace(0, n - 1, n_cal).round().astype(int)
    cal_feats = [feats[i] for i in cal_idx]
    grids = {"patchcore": heldout.patchcore_grids(patchcore, cal_feats, cal_idx)}
    clock.tick(0.3)
    grids["gaussian"] = heldout.gaussian_grids(folds, cal_feats, cal_idx)
    # fixed framing: each position's own normal level (core.position_norm); held-out scores leave-one-out
    held, norms = heldout.model_scores(grids, ignore, framing.fixed and config.position_norm)
    pc_typical = heldout.typical(grids["patchcore"], ignore)
    if clf is not None:
        held["classifier"] = np.maximum(clf_summary.pop("good_scores")[cal_idx], 1e-6)
    budget, review = config.false_reject_budget, config.review_budget
    thresholds = {m: fit_threshold(s, budget, review, seed=config.seed) for m, s in held.items()}
    unfamiliar = fit_threshold(pc_typical, 1.0 / 1000.0, None, seed=config.seed)
    clock.tick(0.4)
    check = selfcheck.run(
        syn_originals, framing, embedding, patchcore, folds, clf, ignore, config, thresholds, held, norms,
        tick=clock.part(0.4, 0.95),
    )
    fusion = check.fusion
    fused_held = fusion.combine(held)
    fusion = fusion.with_threshold(fit_threshold(fused_held, budget, review, seed=config.seed))
    summary = check.summary(fusion, thresholds)
    clock.tick(1.0)

    K = TensorKey
    tensors = {
        K.PROJECTION_MEAN: projection.mean,
        K.PROJECTION_COMPONENTS: projection.components,
        K.PROJECTION_VARIANCES: projection.variances,
        K.PATCHCORE_MEMORY: patchcore.memory,
        K.PATCHCORE_SOURCE: patchcore.source,
        K.GAUSSIAN_MEAN: gaussian.mean,
        K.GAUSSIAN_WHITEN: gaussian.whiten,
        K.TYPICAL: pc_typical.astype(np.float32),
        K.calibration("fused"): np.asarray(fused_held, dtype=np.float32),
    }
    for m, s in held.items():
        tensors[K.calibration(m)] = np.asarray(s, dtype=np.float32)
    for m, norm in norms.items():
        tensors[K.position_norm(m, "mean")] = norm.mean
        tensors[K.position_norm(m, "scale")] = norm.scale
    models: dict[str, dict[str, Any]] = {
        "patchcore": {"bank_size": len(patchcore), "dim": patchcore.dim, "position_weight": patchcore.position_weight},
        "gaussian": {"dim": gaussian.dim, "per_position": gaussian.per_position,
                     "grid": list(gaussian.grid), "block": gaussian.block},
    }
    for m in norms:
        models[m]["position_norm"] = True
    if clf is not None:
        tensors[K.CLASSIFIER_DEFECT] = clf_summary.pop("defect_scores")
        tensors.update({K.CLASSIFIER_PREFIX + k: v.detach().numpy().copy() for k, v in clf.state_dict().items()})
        models["classifier"] = clf.hparams

    # 9. finish (inference graphs are built from the tensors when a recipe is loaded) ---------
    clock.stage(8)
    clock.finish()

    wh = framing.working_hw or preprocess.free_working_hw(
        (ref_wh[1], ref_wh[0]), framing.scale)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "product": product,
        "created": now_iso(),
        "backbone": {"name": config.backbone, "weights_sha256": weights_digest(config.backbone)},
        "size": config.size,
        "working_shape": [int(wh[0]), int(wh[1])],
        "reference_size": list(ref_wh),
        "roi": list(framing.roi) if framing.roi else None,
        "ignore_zones": [list(map(int, z)) for z in config.ignore_zones],
        "framing": {"kind": framing.kind, "scale": framing.scale, "normalise": framing.normalise,
                    "why": plan.why},
        "models": models,
        "thresholds": {k: v.to_dict() for k, v in thresholds.items()},
        "fusion": fusion.to_dict(),
        "checks": {"unfamiliar": unfamiliar.to_dict()},
        "training": {
            "n_good": int(n),
            "n_defect": int(len(defect_feats)),
            "gaussian_folds": int(len(folds.sums)),
            "calibration_images": int(len(cal_idx)),
            "skipped": skipped,
            "false_reject_budget": budget,
            "review_budget": review,
            "config": _jsonable(asdict(config)),
            "resolution": plan.race,
            "synthetic": summary,
            "seconds": round(time.perf_counter() - t_start, 2),
            "stage_seconds": clock.timings,
            "parent_version": parent.version if parent is not None else None,
            "sources": sources or {},
            "classifier": clf_summary or None,
        },
    }
    return Recipe(manifest=manifest, tensors=tensors, onnx={}, reference_png=reference_png)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
