"""Evaluate a recipe on an MVTec AD-style category folder.

    <category>/train/good/*.png            good images to train from (unless a recipe is given)
    <category>/test/<type>/*.png           'good' and one folder per defect type
    <category>/ground_truth/<type>/<stem>_mask.png   pixel masks (optional)

Limits come from good images only (the recipe's calibration); the test labels are used only to
score the result, except with ``train_defects``: K labelled defect images per type (drawn with a
fixed seed) move from the test set into training, so the classifier joins, as teach-back does at
the bench; they are then left out of the figures. Pixel metrics are computed at the recipe's
working resolution (maps and masks brought to it), as is customary for MVTec AD; sets without
masks report image figures only.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.batch import batch_inspector, inspect_files
from core.engine import Inspector
from core.images import list_images, load_image
from core.recipe import MODELS, load_recipe
from core.runtime import tune_for_inference
from core.trainer import TrainConfig, train_recipe
from training import metrics
from training.benchmark import latency as measure_latency

LATENCY_IMAGES = 16  # test images the latency is measured on (each inspected in turn, after warm-up)
LATENCY_RUNS = 60


class DatasetError(Exception):
    pass


def is_dataset(path: Path) -> bool:
    """An MVTec AD-style category: train/good and test/ with at least one sub-folder."""
    return (path / "train" / "good").is_dir() and (path / "test").is_dir()


def find_datasets(root) -> list[Path]:
    """Every MVTec AD-style category folder under ``root`` (sorted)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_dir() and is_dataset(p))


def _test_files(root: Path) -> list[tuple[Path, str]]:
    test = root / "test"
    if not test.is_dir():
        raise DatasetError(f"'{root}' has no test/ folder (expected an MVTec AD-style layout).")
    out = []
    for sub in sorted(p for p in test.iterdir() if p.is_dir()):
        for f in list_images([sub]):
            out.append((f, sub.name))
    if not out:
        raise DatasetError(f"'{test}' holds no images.")
    return out


def _mask_for(root: Path, path: Path, defect_type: str, shape_hw) -> np.ndarray | None:
    if defect_type == "good":
        return np.zeros(shape_hw, dtype=bool)
    m = root / "ground_truth" / defect_type / f"{path.stem}_mask.png"
    if not m.is_file():
        return None
    mask = load_image(m)[:, :, 0]
    small = cv2.resize(mask.astype(np.float32) / 255.0, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def split_train_defects(files: list[tuple[Path, str]], k: int, seed: int = 0):
    """(test files left, defect images for training): ``k`` per defect type, drawn with ``seed``."""
    if k <= 0:
        return files, []
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for i, (_, t) in enumerate(files):
        if t != "good":
            by_type.setdefault(t, []).append(i)
    moved: set[int] = set()
    for t, idx in sorted(by_type.items()):
        take: Any = rng.choice(len(idx), min(k, max(0, len(idx) - 1)), replace=False) if len(idx) > 1 else []
        moved.update(idx[j] for j in take)
    return [f for i, f in enumerate(files) if i not in moved], [files[i][0] for i in sorted(moved)]


def evaluate(dataset, recipe=None, *, config: TrainConfig | None = None, train_defects: int = 0, seed: int = 0,
             backend="auto", threads=None, save_recipe=None, progress=None) -> dict:
    root = Path(dataset)
    files = _test_files(root)
    files, defect_train = split_train_defects(files, train_defects, seed)
    train_info = None
    if recipe is None:
        good = list_images([root / "train" / "good"])
        config = config or TrainConfig(threads=threads)
        t0 = time.perf_counter()
        rec = train_recipe(good, defect_train, product=root.name or "product", config=config, progress=progress)
        t = rec.training
        train_info = {"seconds": round(time.perf_counter() - t0, 2), "n_good": len(good),
                      "n_defect": len(defect_train), "stage_seconds": t["stage_seconds"],
                      "synthetic": t.get("synthetic"), "resolution": t.get("resolution"),
                      "why": rec.framing_why}
        if save_recipe:
            path = rec.save(Path(save_recipe).parent)
            train_info["saved_to"] = str(path)
    else:
        rec = load_recipe(recipe)
    tune_for_inference(threads)  # an evaluation owns its process (station-cli evaluate, bench-accuracy)
    inspector = batch_inspector(rec, backend=backend)
    wh = rec.working_shape

    images: list[dict[str, Any]] = []
    labels: list[int] = []
    masks_all: list[np.ndarray] = []
    maps_all: dict[str, list[np.ndarray]] = {m: [] for m in MODELS}
    have_masks = True
    for item in inspect_files(inspector, [f for f, _ in files], full_maps=True):
        path, dtype = files[item.index]
        r = item.inspection
        if r is None:
            raise DatasetError(f"{path}: {item.error}")
        v = r.verdict
        label = "good" if dtype == "good" else "defect"
        found = {m: v.score_of(m) for m in MODELS}
        scores: dict[str, float | None] = {m: (s.score if s else None) for m, s in found.items()}
        scores["fused"] = v.fused
        images.append({"path": str(path), "label": label, "defect_type": None if dtype == "good" else dtype,
                       "scores": scores, "raw": {m: (s.raw if s else None) for m, s in found.items()},
                       "verdict": v.decision.value, "reasons": [x.value for x in v.reasons],
                       "latency_ms": round(r.latency_ms, 2)})
        labels.append(1 if label == "defect" else 0)
        mask = _mask_for(root, path, dtype, wh) if have_masks else None
        if mask is None:
            have_masks = False
        else:
            masks_all.append(mask)
            for m, amap in r.maps.items():
                maps_all[m].append(cv2.resize(amap, (wh[1], wh[0]), interpolation=cv2.INTER_AREA))

    labels_arr = np.array(labels)
    per_model = {}
    for m in (*MODELS, "fused"):
        vals = [im["scores"][m] for im in images]
        if any(x is None for x in vals):
            continue
        entry = {"image_auroc": metrics.image_auroc(labels_arr, np.array(vals))}
        if have_masks and maps_all.get(m) and m != "classifier":
            entry["pixel_auroc"] = metrics.pixel_auroc(np.stack(masks_all), np.stack(maps_all[m]))
            entry["pro"] = metrics.pro_score(np.stack(masks_all), np.stack(maps_all[m]))
        per_model[m] = entry
    quality = metrics.verdict_quality([im["label"] for im in images], [im["verdict"] for im in images])
    single = Inspector(rec, backend=backend, threads=threads or 2)
    sample = [load_image(f) for f, _ in files[:: max(1, len(files) // LATENCY_IMAGES)][:LATENCY_IMAGES]]
    lat = measure_latency(single, sample, LATENCY_RUNS)
    best = max(("patchcore", "gaussian"), key=lambda m: per_model[m]["image_auroc"])
    summary = {
        "primary_model": "patchcore",
        "image_auroc": per_model["patchcore"]["image_auroc"],
        "pixel_auroc": per_model["patchcore"].get("pixel_auroc"),
        "pro": per_model["patchcore"].get("pro"),
        "fused_image_auroc": per_model["fused"]["image_auroc"],
        "best_single_model": best,
        "per_model": per_model,
        "has_masks": have_masks,
        **quality,
        "escape_rate": quality["escapes"] / max(1, quality["n_defect"]),
        "false_reject_rate": quality["false_rejects"] / max(1, quality["n_good"]),
        "by_defect_type": _by_type(images),
        "recipe": {"product": rec.product, "version": rec.version, "working_shape": list(wh),
                   "framing": rec.manifest.get("framing"), "thresholds": rec.manifest["thresholds"],
                   "fusion": rec.manifest.get("fusion"), "backbone": rec.backbone,
                   "bytes": rec.size_bytes()},
        "training": train_info,
        "backend": single.backend,
        "latency_ms_p50": lat["p50_ms"],
        "latency_ms_p95": lat["p95_ms"],
        "latency_note": f"one image at a time, {threads or 2} threads, {LATENCY_RUNS} runs over {len(sample)} test images",
        "pixel_metrics_resolution": list(wh),
        "n_images": len(images),
        "train_defects_per_type": int(train_defects),
    }
    return {"summary": summary, "images": images}


def _by_type(images: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for im in images:
        t = im["defect_type"] or "good"
        d = out.setdefault(t, {"n": 0, "PASS": 0, "FAIL": 0, "REVIEW": 0})
        d["n"] += 1
        d[im["verdict"]] += 1
    return out
