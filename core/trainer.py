"""Train a complete, calibrated recipe from good images (and optional labelled defects).

Stages (each reports progress and checks for cancellation):
 1. load the images (bad files are skipped and listed), choose the working size from their shape;
 2. fit the PCA projection on raw backbone features of up to 48 images, export the embedder graph;
 3. embed every image with that graph (the very features inspection will see);
 4. PatchCore memory bank by greedy coreset on all good patches;
 5. autoencoder on all good images, plus k fold models whose out-of-fold scores calibrate it;
 6. classifier, only with labelled defects (k-fold out-of-fold probabilities for its calibration);
 7. thresholds from held-out good scores only: PatchCore leave-one-image-out against the bank
    (each image scored without the bank entries it contributed), autoencoder on its held-out split;
 8. export the scorer graph (PatchCore distances, autoencoder, classifier); assemble the recipe
    (saving is the caller's choice).
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
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from . import onnx_runtime, preprocess
from .backbone import DEFAULT_BACKBONE, aggregate, load_extractor, upsample2x, weights_digest, working_shape
from .calibration import DEFAULT_BUDGET, fit_threshold, tradeoff
from .coreset import Cancelled
from .fitting import classifier_probabilities, train_autoencoder, train_classifier
from .images import ImageError, encode_png, load_image, to_rgb8
from .networks import Embedder, PatchCoreDistances, Scorer
from .patchcore import PatchCore
from .projection import fit_projection
from .recipe import Recipe, check_product_name, now_iso

log = logging.getLogger(__name__)

ImageLike = "str | os.PathLike | np.ndarray"
Progress = Callable[[str, float], None]

_STAGES = [  # (name, share of the total time, roughly as measured)
    ("Loading images", 0.10),
    ("Fitting feature projection", 0.10),
    ("Extracting features", 0.10),
    ("Selecting memory bank", 0.15),
    ("Training autoencoder", 0.40),
    ("Training classifier", 0.05),
    ("Calibrating thresholds", 0.05),
    ("Exporting models", 0.05),
]


class TrainingError(Exception):
    """Training cannot proceed; ``str()`` says why in plain words."""


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = DEFAULT_BACKBONE
    size: int = 256  # short side of the working image, pixels
    roi: tuple[int, int, int, int] | None = None  # x, y, w, h in the good images' pixels
    ignore_zones: tuple[tuple[int, int, int, int], ...] = ()
    pca_dim: int = 128  # projected feature channels (the autoencoder and classifier see all of them)
    patchcore_dims: int = 64  # leading components the memory bank keeps (nearest-neighbour cost)
    pca_images: int = 48  # images whose raw features fit the projection
    pca_samples: int = 32768  # patches sampled from them
    coreset_ratio: float = 0.005  # memory bank: this share of all good patches, clamped below
    coreset_min: int = 1024
    coreset_max: int = 2048
    false_reject_budget: float = DEFAULT_BUDGET
    ae_folds: int = 3  # autoencoder calibration: out-of-fold scores from this many fold models
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


def _reference_aspect(images: list[np.ndarray]) -> float:
    return float(np.median([im.shape[1] / im.shape[0] for im in images]))


def _thumbnail_png(image: np.ndarray, max_side: int = 1024) -> bytes:
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        image = cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
    return encode_png(image)


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
    aspect = _reference_aspect(goods)
    ref_idx = int(np.argmin([abs(math.log((im.shape[1] / im.shape[0]) / aspect)) for im in goods]))
    ref_h, ref_w = goods[ref_idx].shape[:2]
    kept_good, kept_names = [], []
    for im, name in zip(goods, good_names):
        if abs(math.log((im.shape[1] / im.shape[0]) / aspect)) > math.log(preprocess.ASPECT_TOLERANCE):
            skipped.append({"source": name, "error": "Its proportions differ from the other good images."})
        else:
            kept_good.append(im)
            kept_names.append(name)
    goods, good_names = kept_good, kept_names
    if len(goods) < config.min_good:
        raise TrainingError(f"Training needs at least {config.min_good} good images of the same framing.")
    roi = tuple(int(v) for v in config.roi) if config.roi else None
    if roi is not None:
        roi = preprocess.scale_box(roi, (ref_w, ref_h), (ref_w, ref_h))
        shape = working_shape(roi[2] / roi[3], config.size)
    else:
        shape = working_shape(ref_w / ref_h, config.size)
    wh = (shape.height, shape.width)

    def prepare(im: np.ndarray) -> np.ndarray:
        geo = preprocess.geometry(im.shape[:2], wh, roi, (ref_w, ref_h))
        return preprocess.crop_resize(im, geo)

    reference_png = _thumbnail_png(goods[ref_idx])
    good_w = np.stack([prepare(im) for im in goods])
    defect_w = np.stack([prepare(im) for im in defects]) if defects else None
    del goods, defects

    # 2. projection + embedder -------------------------------------------------------------
    clock.stage(1)
    extractor = load_extractor(config.backbone)
    use_ort = onnx_runtime.available()
    rng = np.random.default_rng(config.seed)
    if use_ort:
        run_raw = onnx_runtime.OrtModel(onnx_runtime.raw_extractor_graph(config.backbone, wh), config.threads)
    clock.tick(0.5)
    pca_idx = np.linspace(0, len(good_w) - 1, min(config.pca_images, len(good_w))).round().astype(int)
    per_image = max(64, config.pca_samples // len(pca_idx))  # patches kept per image for the PCA
    raw = []
    for i in range(0, len(pca_idx), 8):
        x = np.concatenate([preprocess.to_tensor(good_w[j]) for j in pca_idx[i : i + 8]])
        with torch.no_grad():
            if use_ort:
                taps = [run_raw(x[j : j + 1]) for j in range(len(x))]
                f4, t8, t16 = (torch.from_numpy(np.concatenate([t[k] for t in taps])) for k in range(3))
                f = torch.cat([f4, aggregate(t8), upsample2x(aggregate(t16))], dim=1).numpy()
            else:
                f = extractor(torch.from_numpy(x)).numpy()
        f = f.transpose(0, 2, 3, 1).reshape(len(x), -1, f.shape[1])
        for rows in f:
            raw.append(rows[rng.choice(len(rows), min(per_image, len(rows)), replace=False)])
        clock.tick(0.5 + 0.4 * (i + 8) / len(pca_idx))
    projection = fit_projection(np.concatenate(raw), config.pca_dim, max_samples=config.pca_samples, seed=config.seed)
    del raw
    embedder = Embedder(extractor, projection).eval()
    onnx_graphs: dict[str, bytes] = {}
    if use_ort:
        onnx_graphs["embedder"] = onnx_runtime.append_projection(
            onnx_runtime.raw_extractor_graph(config.backbone, wh), projection.mean, projection.components
        )
        run_embed = onnx_runtime.OrtModel(onnx_graphs["embedder"], config.threads)

        def embed(x: np.ndarray) -> np.ndarray:
            return np.concatenate([run_embed(x[j : j + 1])[0] for j in range(len(x))])
    else:
        def embed(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return embedder(torch.from_numpy(x)).numpy()

    # 3. features --------------------------------------------------------------------------
    clock.stage(2)

    def embed_all(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 8):
            out.append(embed(np.concatenate([preprocess.to_tensor(im) for im in images[i : i + 8]])))
            clock.tick((i + 8) / len(images))
        return np.concatenate(out)

    feats = embed_all(good_w)
    defect_feats = embed_all(defect_w) if defect_w is not None else None
    n, d, gh, gw = feats.shape
    geo_ref = preprocess.geometry((ref_h, ref_w), wh, roi, (ref_w, ref_h))
    ignore = preprocess.ignore_mask(list(config.ignore_zones), (ref_w, ref_h), geo_ref)

    # 4. PatchCore -------------------------------------------------------------------------
    clock.stage(3)
    pc_dims = int(min(config.patchcore_dims, d))
    patches = np.ascontiguousarray(feats[:, :pc_dims].transpose(0, 2, 3, 1).reshape(-1, pc_dims))
    image_ids = np.repeat(np.arange(n, dtype=np.int32), gh * gw)
    if ignore is not None:  # ignored cells never enter the bank
        keep = np.tile(~ignore.ravel(), n)
        patches, image_ids = patches[keep], image_ids[keep]
    patchcore = PatchCore.fit(
        patches, image_ids,
        ratio=config.coreset_ratio, minimum=config.coreset_min, maximum=config.coreset_max,
        seed=config.seed, cancel=clock.cancel, progress=clock.tick,
    )
    del patches, image_ids

    # 5. autoencoder -----------------------------------------------------------------------
    clock.stage(4)
    k = int(max(2, min(config.ae_folds, n // 3)))
    fold = rng.permutation(n) % k
    ae_scores = np.empty(n, dtype=np.float32)
    for f in range(k + 1):
        def tick(frac: float, f: int = f) -> None:
            clock.tick((f + frac) / (k + 1))

        if f < k:
            held = fold == f
            model = train_autoencoder(feats[~held], projection.variances, seed=config.seed + 1 + f,
                                      cancel=clock.cancel, progress=tick)
            with torch.no_grad():
                maps = model(torch.from_numpy(feats[held])).numpy()[:, 0]
            if ignore is not None:
                maps[:, ignore] = 0.0
            ae_scores[held] = maps.reshape(len(maps), -1).max(axis=1)
        else:
            ae = train_autoencoder(feats, projection.variances, seed=config.seed, cancel=clock.cancel, progress=tick)

    # 6. classifier ------------------------------------------------------------------------
    clock.stage(5)
    clf = None
    clf_summary = None
    if defect_feats is not None and len(defect_feats) >= 2:
        clf, clf_summary = _train_classifier(feats, defect_feats, projection.variances, config, clock)

    # 7. calibration -----------------------------------------------------------------------
    clock.stage(6)
    pc_scores = np.empty(n, dtype=np.float32)
    pc_typical = np.empty(n, dtype=np.float32)  # median patch distance: the unfamiliar-input check
    for i in range(n):
        grid = patchcore.distance_grid(feats[i], exclude_source=i)
        if ignore is not None:
            grid[ignore] = 0.0
        pc_scores[i] = grid.max()
        pc_typical[i] = np.median(grid if ignore is None else grid[~ignore])
    budget = config.false_reject_budget
    thresholds = {
        "patchcore": fit_threshold(pc_scores, budget, seed=config.seed),
        "autoencoder": fit_threshold(ae_scores, budget, seed=config.seed),
    }
    unfamiliar = fit_threshold(pc_typical, 1.0 / 1000.0, seed=config.seed)
    tensors = {
        "projection.mean": projection.mean,
        "projection.components": projection.components,
        "projection.variances": projection.variances,
        "patchcore.memory": patchcore.memory,
        "patchcore.source": patchcore.source,
        "calibration.typical": pc_typical,
        "calibration.patchcore": pc_scores,
        "calibration.autoencoder": ae_scores.astype(np.float32),
    }
    tensors.update({f"autoencoder.{k}": v.detach().numpy().copy() for k, v in ae.state_dict().items()})
    models = {"patchcore": {"bank_size": len(patchcore), "dim": patchcore.dim}, "autoencoder": ae.hparams}
    if clf is not None:
        thresholds["classifier"] = clf_summary.pop("threshold")
        tensors["calibration.classifier"] = clf_summary.pop("good_scores")
        tensors["calibration.classifier_defect"] = clf_summary.pop("defect_scores")
        tensors.update({f"classifier.{k}": v.detach().numpy().copy() for k, v in clf.state_dict().items()})
        models["classifier"] = clf.hparams

    # 8. export ----------------------------------------------------------------------------
    clock.stage(7)
    if use_ort:
        scorer = Scorer(PatchCoreDistances(patchcore.memory), ae, clf).eval()
        onnx_graphs["scorer"] = onnx_runtime.export(scorer, torch.from_numpy(feats[:1]), scorer.output_names)
    clock.finish()

    manifest = {
        "product": product,
        "created": now_iso(),
        "backbone": {"name": config.backbone, "weights_sha256": weights_digest(config.backbone)},
        "size": config.size,
        "working_shape": [shape.height, shape.width],
        "reference_size": [ref_w, ref_h],
        "roi": list(roi) if roi else None,
        "ignore_zones": [list(map(int, z)) for z in config.ignore_zones],
        "models": models,
        "thresholds": {k: v.to_dict() for k, v in thresholds.items()},
        "checks": {"unfamiliar": unfamiliar.to_dict()},
        "training": {
            "n_good": int(n),
            "n_defect": int(len(defect_feats)) if defect_feats is not None else 0,
            "autoencoder_folds": int(k),
            "skipped": skipped,
            "false_reject_budget": budget,
            "config": _jsonable(asdict(config)),
            "seconds": round(time.perf_counter() - t_start, 2),
            "stage_seconds": clock.timings,
            "parent_version": parent.version if parent is not None else None,
            "sources": sources or {},
            "classifier": clf_summary,
        },
    }
    return Recipe(manifest=manifest, tensors=tensors, onnx=onnx_graphs, reference_png=reference_png)


def _train_classifier(feats, defect_feats, variances, config: TrainConfig, clock: _Clock):
    """k-fold out-of-fold probabilities (for calibration), then the final head on everything."""
    rng = np.random.default_rng(config.seed + 1)
    k = int(min(5, len(defect_feats)))
    g_fold = rng.permutation(len(feats)) % k
    b_fold = rng.permutation(len(defect_feats)) % k
    g_oof = np.empty(len(feats), dtype=np.float32)
    b_oof = np.empty(len(defect_feats), dtype=np.float32)
    for f in range(k):
        m = train_classifier(feats[g_fold != f], defect_feats[b_fold != f], variances, seed=config.seed + f, cancel=clock.cancel)
        g_oof[g_fold == f] = classifier_probabilities(m, feats[g_fold == f])
        b_oof[b_fold == f] = classifier_probabilities(m, defect_feats[b_fold == f])
        clock.tick((f + 1) / (k + 1))
    clf = train_classifier(feats, defect_feats, variances, seed=config.seed, cancel=clock.cancel)
    thr = fit_threshold(np.maximum(g_oof, 1e-6), config.false_reject_budget, seed=config.seed)
    grid = sorted({float(v) for v in np.quantile(np.concatenate([g_oof, b_oof]), np.linspace(0, 1, 21))})
    summary = {
        "threshold": thr,
        "good_scores": g_oof,
        "defect_scores": b_oof,
        "folds": k,
        "recall_at_threshold": float(np.mean(b_oof >= thr.value)),
        "tradeoff": tradeoff(g_oof, b_oof, grid),
    }
    return clf, summary


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
