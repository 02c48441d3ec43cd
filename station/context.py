"""What every part of the station shares: folders, settings, the results store, the recipe library.

Qt-free on purpose (plain objects, testable without a display). Settings that describe the station
(source, mode, active recipe) live here as a JSON file in the user's config folder; only window
geometry and last-used paths go to QSettings.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core import anomaly_map, overlay, paths
from core.atomic import write_bytes_atomic, write_text_atomic
from core.images import image_extension, save_image_atomic
from core.recipe import Recipe, RecipeError, load_recipe, products, versions
from core.store import ResultsStore
from core.types import Inspection

log = logging.getLogger(__name__)

SETTINGS_FILE = "station.json"
DEMO_PRODUCT = "demo-bracket"


@dataclass
class StationSettings:
    source_kind: str = "demo"  # "demo" | "camera" | "folder"
    camera: str = "0"  # device index or stream URL
    camera_width: int = 0  # 0 = the device's default
    camera_height: int = 0
    camera_exposure: float | None = None  # None = automatic
    folder: str = ""
    folder_fps: float = 5.0
    demo_kind: str = "bracket"
    demo_fps: float = 30.0
    demo_defect_rate: float = 0.3
    mode: str = "continuous"  # "continuous" | "triggered"
    active_product: str = ""
    active_version: int = 0  # 0 = newest
    queue_fails: bool = False  # FAIL parts also land in the review queue
    keep_images: str = "review_fail"  # which inspected images are kept: "all" | "review_fail" | "none"
    operator: str = ""

    @classmethod
    def load(cls, path: Path) -> "StationSettings":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("Settings file %s unreadable (%s); using defaults", path, exc)
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2))


class StationContext:
    """Folders, settings, store and recipes of one station (one per process)."""

    def __init__(self, data_dir: str | os.PathLike | None = None, config_dir: str | os.PathLike | None = None):
        if data_dir is not None:
            os.environ["STATION_DATA_DIR"] = str(data_dir)
        if config_dir is not None:
            os.environ["STATION_CONFIG_DIR"] = str(config_dir)
        self.data_dir = paths.data_dir()
        self.config_dir = paths.config_dir()
        self.recipes_root = paths.recipes_dir()
        self.products_root = paths.products_dir()
        self.images_root = paths.images_dir()
        self.log_dir = paths.log_dir()
        self.settings_path = self.config_dir / SETTINGS_FILE
        self.settings = StationSettings.load(self.settings_path)
        self.store = ResultsStore(paths.store_path())
        self._lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

    def save_settings(self) -> None:
        self.settings.save(self.settings_path)

    # -- recipes ---------------------------------------------------------------------------
    def products(self) -> list[str]:
        return products(self.recipes_root)

    def versions(self, product: str) -> list[int]:
        return versions(self.recipes_root, product)

    def load_recipe(self, product: str, version: int | None = None) -> Recipe:
        return load_recipe(self.recipes_root, product, version or None)

    def active_recipe(self) -> Recipe | None:
        """The recipe the settings name, else the newest of any product, else None."""
        s = self.settings
        candidates = [s.active_product] if s.active_product else []
        candidates += [p for p in self.products() if p not in candidates]
        for product in candidates:
            try:
                return self.load_recipe(product, s.active_version if product == s.active_product else None)
            except RecipeError as exc:
                log.warning("Recipe %s unusable: %s", product, exc)
        return None

    # -- product image sets (training data, teach-back) ------------------------------------
    def product_images(self, product: str, label: str) -> Path:
        """Folder of taught images for a product: label is 'good' or 'defect'."""
        if label not in ("good", "defect"):
            raise ValueError("label must be 'good' or 'defect'")
        p = self.products_root / product / label
        p.mkdir(parents=True, exist_ok=True)
        return p

    # -- inspection artefacts ---------------------------------------------------------------
    def save_artifacts(self, inspection: Inspection, image: np.ndarray, stem: str | None = None,
                       original: bytes | None = None) -> tuple[str, str]:
        """Write the part image, its heatmap overlay and its maps; returns (image_path, heatmap_path).

        Files go to images/<date>/ under the data folder, each written atomically. ``original``:
        the bytes of the file the part was decoded from (a batch): kept as they are, with the
        extension of their format, instead of a PNG made from ``image`` (the exact evidence, and
        no 50 ms PNG encoding of a 900 px part). The maps are kept as float16 in
        ``<stem>.maps.npz`` beside the image, so the review queue can show every model's map later.
        """
        day = _dt.date.today().isoformat()
        folder = self.images_root / day
        folder.mkdir(parents=True, exist_ok=True)
        if stem is None:
            stamp = _dt.datetime.now().strftime("%H%M%S_%f")
            stem = f"{stamp}_{inspection.recipe}_{inspection.frame_id}"
        heat_path = folder / f"{stem}_heatmap.jpg"  # an overlay to look at: JPEG is 20x faster to write
        if original:
            image_path = folder / f"{stem}{image_extension(original)}"
            write_bytes_atomic(image_path, original)
        else:
            image_path = folder / f"{stem}.png"
            save_image_atomic(image_path, image)
        pc = inspection.maps.get("patchcore")
        if pc is not None:
            save_image_atomic(heat_path, overlay.blend(image, pc, inspection.region, inspection.decision.value))
        maps_path = folder / f"{stem}.maps.npz"
        buf = io.BytesIO()
        np.savez(buf, **{k: kept_map(v) for k, v in inspection.maps.items()})
        write_bytes_atomic(maps_path, buf.getvalue())
        return str(image_path), str(heat_path) if pc is not None else ""


KEPT_MAP_SIDE = 256  # the patch grid behind a map is 32x32 at the default working size


def kept_map(amap: np.ndarray) -> np.ndarray:
    """A map as it is kept on disk: float16, longest side at most KEPT_MAP_SIDE (it still covers
    the whole image; viewers resize it), stored uncompressed. Measured on two 900 px maps: the
    full-size maps compressed took 170 ms and 2.2 MB per part; these compress badly (197 vs
    256 KB, 23 ms), so they are written as they are: 5 ms for two, the resize included."""
    h, w = anomaly_map.map_shape(amap.shape[:2], KEPT_MAP_SIDE)
    if (h, w) != tuple(amap.shape[:2]):
        amap = cv2.resize(np.asarray(amap, np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return np.asarray(amap).astype(np.float16)


def maps_path_for(image_path: str | os.PathLike) -> Path:
    p = Path(image_path)
    return p.with_name(p.stem + ".maps.npz")


def load_maps(image_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-model maps saved beside an inspection image ({} when there are none)."""
    p = maps_path_for(image_path)
    if not p.is_file():
        return {}
    with np.load(p) as z:
        return {k: z[k].astype(np.float32) for k in z.files}
