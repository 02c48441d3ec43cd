"""What every part of the station shares: folders, settings, the results store, the recipe library.

Qt-free on purpose (plain objects, testable without a display). Settings that describe the station
(source, mode, active recipe) live here as a JSON file in the user's config folder; only window
geometry and last-used paths go to QSettings.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.atomic import write_text_atomic
from core.recipe import Recipe, RecipeError, load_recipe, products, versions
from core.store import ResultsStore
from station.evidence import EvidenceFolder
from station.retention import RetentionPolicy

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
    mode: str = ""  # "continuous" | "triggered"; "" = the source's default (see live_mode)
    active_product: str = ""
    active_version: int = 0  # 0 = newest
    queue_fails: bool = False  # FAIL parts also land in the review queue
    keep_images: str = "review_fail"  # which inspected images are kept: "all" | "review_fail" | "none"
    operator: str = ""
    one_record_per_part: bool = True  # continuous mode records a part once, when it settles
    evidence_days: float = 30.0  # kept images (FAIL/REVIEW evidence) older than this are removed
    evidence_max_gb: float = 2.0  # ... and the oldest beyond this total; scores and decisions stay
    min_free_gb: float = 1.0  # below this much free disk no new images are kept

    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(days=max(1.0, float(self.evidence_days)), max_gb=max(0.1, float(self.evidence_max_gb)),
                               min_free_gb=max(0.0, float(self.min_free_gb)))

    @property
    def live_mode(self) -> str:
        """The mode in force: the one chosen, else triggered for a camera (a part per Space, pedal or
        PLC trigger) and continuous for the demo and a folder."""
        if self.mode in ("continuous", "triggered"):
            return self.mode
        return "triggered" if self.source_kind == "camera" else "continuous"

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
        # the folders given, else $STATION_DATA_DIR / $STATION_CONFIG_DIR, else the user's folders;
        # the process environment is left as it is
        self.data_dir = Path(data_dir) if data_dir is not None else paths.data_dir()
        self.config_dir = Path(config_dir) if config_dir is not None else paths.config_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.recipes_root = paths.recipes_dir(self.data_dir)
        self.products_root = paths.products_dir(self.data_dir)
        self.images_root = paths.images_dir(self.data_dir)
        self.log_dir = paths.log_dir(self.data_dir)
        self.settings_path = self.config_dir / SETTINGS_FILE
        self.settings = StationSettings.load(self.settings_path)
        self.store = ResultsStore(paths.store_path(self.data_dir))
        self.evidence = EvidenceFolder(self.images_root)  # images/<date>/ under the data folder

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
