"""Helpers for the station workflow tests: a station context in tmp, hand-made inspections."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from core.calibration import Threshold
from core.demo import PartGenerator
from core.fusion import fuse, model_score
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


THRESHOLDS = {
    "patchcore": Threshold(10.0, 9.0, 11.0, 0.005, 30, "test", 0.002, 8.0),
    "autoencoder": Threshold(100.0, 90.0, 110.0, 0.005, 30, "test", 0.002, 80.0),
}


def inspection_from_raw(raw: dict, recipe: str = "tiny", version: int = 1, shape=(96, 96),
                        thresholds=THRESHOLDS, source: str = "cam") -> Inspection:
    """An Inspection whose verdict is what fusion makes of these raw scores (maps: a blob)."""
    scores = [model_score(m, raw[m], thresholds[m]) for m in thresholds]
    verdict = fuse(scores)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-(((yy - h / 3) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 8) ** 2))).astype(np.float32)
    maps = {m: blob * float(s.score) * 1.5 for m, s in zip(thresholds, scores)}
    return Inspection(verdict=verdict, maps=maps, region=(w // 3, h // 4, w // 3, h // 6),
                      image_shape=shape, latency_ms=12.0, recipe=recipe, recipe_version=version,
                      source=source, frame_id=1)


REVIEW_RAW = {"patchcore": 10.2, "autoencoder": 50.0}  # patchcore inside its band -> REVIEW
PASS_RAW = {"patchcore": 5.0, "autoencoder": 50.0}
FAIL_RAW = {"patchcore": 15.0, "autoencoder": 150.0}


def add_part(ctx, raw: dict, index: int = 0, keep: bool = True, **kw) -> int:
    """Store an inspection (with its image, heatmap and maps saved when ``keep``); returns its id."""
    image = PartGenerator("bracket", (96, 96), seed=1).good(index).image.copy()
    insp = inspection_from_raw(raw, **kw)
    paths = ctx.save_artifacts(insp, image, stem=f"part{index:03d}") if keep else (None, None)
    return ctx.store.add_inspection(insp, image_path=paths[0], heatmap_path=paths[1] or None, mode="live")
