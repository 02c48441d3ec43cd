"""Helpers for the station workflow tests: a station context in tmp, hand-made inspections."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from core.calibration import Threshold
from station.demo import PartGenerator
from core.fusion import Fusion, fuse, model_score
from core.types import Inspection


def make_context(tmp_path: Path, monkeypatch, recipes_from: Path | None = None):
    from station.context import StationContext

    monkeypatch.setenv("STATION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(tmp_path / "config"))
    ctx = StationContext()
    if recipes_from is not None:
        for product in recipes_from.iterdir():
            if product.is_dir() and not product.name.startswith("."):
                shutil.copytree(product, ctx.recipes_root / product.name)
    return ctx


THRESHOLDS = {  # FAIL limit, bootstrap band, budget, n, method, expected FR, good max, PASS limit, review budget, centre
    "patchcore": Threshold(10.0, 9.5, 10.5, 0.005, 30, "test", 0.005, 8.0, 9.0, 0.1, 5.0),
    "gaussian": Threshold(100.0, 95.0, 105.0, 0.005, 30, "test", 0.005, 80.0, 90.0, 0.1, 50.0),
}
# fused = mean of 1 + (raw - centre) / (FAIL - centre): 1 for a typical part, 2 at both FAIL limits;
# PASS below 1.6, FAIL from 1.9
FUSION = Fusion.from_thresholds(THRESHOLDS, {"patchcore": 1.0, "gaussian": 1.0}).with_threshold(
    Threshold(1.9, 1.8, 2.0, 0.005, 30, "test", 0.005, 1.5, 1.6, 0.1, 1.0))


def inspection_from_raw(raw: dict, recipe: str = "tiny", version: int = 1, shape=(96, 96),
                        thresholds=THRESHOLDS, source: str = "cam", fusion=FUSION) -> Inspection:
    """An Inspection whose verdict is what fusion makes of these raw scores (maps: a blob)."""
    scores = [model_score(m, raw[m], thresholds[m]) for m in thresholds]
    verdict = fuse(scores, fusion)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-(((yy - h / 3) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 8) ** 2))).astype(np.float32)
    maps = {m: blob * float(s.score) * 1.5 for m, s in zip(thresholds, scores)}
    return Inspection(verdict=verdict, maps=maps, region=(w // 3, h // 4, w // 3, h // 6),
                      image_shape=shape, latency_ms=12.0, recipe=recipe, recipe_version=version,
                      source=source, frame_id=1)


REVIEW_RAW = {"patchcore": 10.2, "gaussian": 50.0}  # fused 1.52 passes, but PatchCore is at its FAIL limit -> REVIEW
PASS_RAW = {"patchcore": 5.0, "gaussian": 50.0}
FAIL_RAW = {"patchcore": 15.0, "gaussian": 150.0}


def add_part(ctx, raw: dict, index: int = 0, keep: bool = True, **kw) -> int:
    """Store an inspection (with its image, heatmap and maps saved when ``keep``); returns its id."""
    image = PartGenerator("bracket", (96, 96), seed=1).good(index).image.copy()
    insp = inspection_from_raw(raw, **kw)
    files = ctx.evidence.save(insp, image, f"part{index:03d}") if keep else None
    return ctx.store.add_inspection(insp, image_path=files and files.image, heatmap_path=files and files.heatmap,
                                    mode="live")
