"""Evaluate a recipe on an MVTec AD-style category folder.

    <category>/train/good/*.png            good images to train from (unless a recipe is given)
    <category>/test/<type>/*.png           'good' and one folder per defect type
    <category>/ground_truth/<type>/<stem>_mask.png   pixel masks (optional)

Thresholds come from good images only (the recipe's calibration); the test labels are used only
to score the result. Pixel metrics are computed at the recipe's working resolution (maps and masks
brought to it), as is customary for MVTec AD.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from core.batch import inspect_files
from core.engine import Inspector
from core.images import list_images, load_image
from core.recipe import load_recipe
from core.trainer import TrainConfig, train_recipe
from training import metrics

MODELS = ("patchcore", "autoencoder", "classifier")


class DatasetError(Exception):
    pass


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


def evaluate(dataset, recipe=None, *, size=256, backbone="efficientnet-lite0", backend="auto",
             threads=None, save_recipe=None, progress=None) -> dict:
    root = Path(dataset)
    files = _test_files(root)
    train_info = None
    if recipe is None:
        good = list_images([root / "train" / "good"])
        t0 = time.perf_counter()
        rec = train_recipe(good, product=root.name or "product",
                           config=TrainConfig(size=size, backbone=backbone, threads=threads), progress=progress)
        train_info = {"seconds": round(time.perf_counter() - t0, 2), "n_good": len(good),
                      "stage_seconds": rec.manifest["training"]["stage_seconds"]}
        if save_recipe:
            path = rec.save(Path(save_recipe).parent)
            train_info["saved_to"] = str(path)
    else:
        rec = load_recipe(recipe)
    inspector = Inspector(rec, backend=backend, threads=threads)
    wh = rec.working_shape

    images, labels, latencies = [], [], []
    masks_all, maps_all = [], {m: [] for m in MODELS}
    have_masks = True
    for item in inspect_files(inspector, [f for f, _ in files], full_maps=True):
        path, dtype = files[item.index]
        if not item.ok:
            raise DatasetError(f"{path}: {item.error}")
        r = item.inspection
        v = r.verdict
        label = "good" if dtype == "good" else "defect"
        scores = {m: (v.score_of(m).score if v.score_of(m) else None) for m in MODELS}
        scores["fused"] = v.fused
        images.append({"path": str(path), "label": label, "defect_type": None if dtype == "good" else dtype,
                       "scores": scores, "raw": {m: (v.score_of(m).raw if v.score_of(m) else None) for m in MODELS},
                       "verdict": v.decision.value, "reasons": [x.value for x in v.reasons],
                       "latency_ms": round(r.latency_ms, 2)})
        labels.append(1 if label == "defect" else 0)
        latencies.append(r.latency_ms)
        mask = _mask_for(root, path, dtype, wh)
        if mask is None:
            have_masks = False
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
        if m in maps_all and maps_all[m] and have_masks and m != "classifier":
            entry["pixel_auroc"] = metrics.pixel_auroc(np.stack(masks_all), np.stack(maps_all[m]))
            entry["pro"] = metrics.pro_score(np.stack(masks_all), np.stack(maps_all[m]))
        per_model[m] = entry
    quality = metrics.verdict_quality([im["label"] for im in images], [im["verdict"] for im in images])
    lat = np.array(latencies)
    summary = {
        "primary_model": "patchcore",
        "image_auroc": per_model["patchcore"]["image_auroc"],
        "pixel_auroc": per_model["patchcore"].get("pixel_auroc"),
        "pro": per_model["patchcore"].get("pro"),
        "fused_image_auroc": per_model["fused"]["image_auroc"],
        "per_model": per_model,
        **quality,
        "by_defect_type": _by_type(images),
        "recipe": {"product": rec.product, "version": rec.version, "working_shape": list(wh),
                   "thresholds": rec.manifest["thresholds"], "backbone": rec.backbone},
        "training": train_info,
        "backend": inspector.backend,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 2),
        "pixel_metrics_resolution": list(wh),
        "n_images": len(images),
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
