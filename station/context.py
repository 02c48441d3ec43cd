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
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.atomic import write_text_atomic
from core.recipe import (Recipe, RecipeError, Skipped, check_product_name, load_latest_good, load_recipe, products,
                         versions)
from core.store import ResultsStore
from station.api_settings import ApiSettings
from station.evidence import EvidenceFolder
from station.line_settings import ModbusSettings, MqttSettings, OpcUaSettings
from station.retention import RetentionPolicy

log = logging.getLogger(__name__)

SETTINGS_FILE = "station.json"
DEMO_PRODUCT = "demo-bracket"
TRUSTED_KEYS_FOLDER = "trusted-keys"  # in the config folder, unless the settings name another


@dataclass
class StationSettings:
    source_kind: str = "demo"  # "demo" | "camera" | "folder"
    camera: str = "0"  # device index or stream URL
    camera_width: int = 0  # 0 = the device's default
    camera_height: int = 0
    camera_exposure: float | None = None  # None = automatic (a pylon:// camera: microseconds)
    # Camera: a GenICam camera through pylon, ``camera`` = "pylon://<serial>" or "pylon:<user name>"
    # (station/pylon_source.py, docs/CAMERAS.md); ignored by the OpenCV cameras
    camera_gain: float | None = None  # dB; None = the camera's own
    camera_pixel_format: str = ""  # "" = the camera's own; Mono8, Mono12, BayerRG8, ...
    camera_fps: float = 0.0  # free-run frame rate; 0 = the camera's own
    camera_trigger: str = "off"  # "off" (free run) | "software" (Inspect fires the camera) | "hardware" (a line)
    camera_trigger_line: str = "Line1"
    camera_trigger_activation: str = "RisingEdge"  # RisingEdge | FallingEdge | AnyEdge | LevelHigh | LevelLow
    camera_trigger_delay_us: float = 0.0
    camera_debounce_us: float = 0.0  # 0 = the camera's own
    camera_nodes: dict = field(default_factory=dict)  # further GenICam nodes, set last, in this order
    camera_transports: str = ""  # "" = every pylon transport; else e.g. "BaslerUsb,BaslerGigE"
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
    require_signed_recipes: bool = False  # load only recipes signed by a trusted key (core.signing)
    trusted_keys_dir: str = ""  # folder of trusted *.pub keys; "" = <config folder>/trusted-keys
    # line outputs (station.line_settings, docs/LINE_INTEGRATION.md): both off unless switched on
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    modbus: ModbusSettings = field(default_factory=ModbusSettings)
    opcua: OpcUaSettings = field(default_factory=OpcUaSettings)
    # the local inspection API served by the station (station.api_settings, docs/API.md): off by default
    api: ApiSettings = field(default_factory=ApiSettings)

    def __post_init__(self) -> None:
        # from station.json they come as JSON objects
        if not isinstance(self.mqtt, MqttSettings):
            self.mqtt = MqttSettings.from_dict(self.mqtt)
        if not isinstance(self.modbus, ModbusSettings):
            self.modbus = ModbusSettings.from_dict(self.modbus)
        if not isinstance(self.opcua, OpcUaSettings):
            self.opcua = OpcUaSettings.from_dict(self.opcua)
        if not isinstance(self.api, ApiSettings):
            self.api = ApiSettings.from_dict(self.api)

    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(days=max(1.0, float(self.evidence_days)), max_gb=max(0.1, float(self.evidence_max_gb)),
                               min_free_gb=max(0.0, float(self.min_free_gb)))

    @property
    def live_mode(self) -> str:
        """The mode in force: the one chosen, else triggered for a camera (a part per Space, pedal or
        PLC trigger) and continuous for the demo and a folder."""
        if self.mode in ("continuous", "triggered"):
            return self.mode
        if self.hardware_triggered:  # every frame is a part the line triggered
            return "continuous"
        return "triggered" if self.source_kind == "camera" else "continuous"

    @property
    def hardware_triggered(self) -> bool:
        """A pylon camera triggered by a line: each frame it sends is one part."""
        return (self.source_kind == "camera" and str(self.camera).strip().lower().startswith("pylon:")
                and self.camera_trigger == "hardware")

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

    def __init__(self, data_dir: str | os.PathLike | None = None, config_dir: str | os.PathLike | None = None,
                 store_path: str | os.PathLike | None = None):
        # the folders given, else $STATION_DATA_DIR / $STATION_CONFIG_DIR, else the user's folders;
        # the process environment is left as it is. ``store_path``: another results store than the
        # data folder's (``station-cli serve --store``)
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
        self.store = ResultsStore(Path(store_path) if store_path is not None else paths.store_path(self.data_dir))
        self.evidence = EvidenceFolder(self.images_root)  # images/<date>/ under the data folder
        self.skipped_recipes: Skipped = []  # (folder, why) of the recipes the last load passed over

    def close(self) -> None:
        self.store.close()

    def save_settings(self) -> None:
        self.settings.save(self.settings_path)

    # -- recipes ---------------------------------------------------------------------------
    def products(self) -> list[str]:
        return products(self.recipes_root)

    def versions(self, product: str) -> list[int]:
        return versions(self.recipes_root, product)

    @property
    def trusted_keys_dir(self) -> Path:
        return Path(self.settings.trusted_keys_dir) if self.settings.trusted_keys_dir else (
            self.config_dir / TRUSTED_KEYS_FOLDER)

    def trusted_keys(self):
        """None when any valid recipe may be used, else the keys a recipe must be signed by
        (``require_signed_recipes``: from the trusted-keys folder, read on every load)."""
        if not self.settings.require_signed_recipes:
            return None
        from core.signing import load_trusted_keys

        return load_trusted_keys(self.trusted_keys_dir)

    def _note_skipped(self, skipped: Skipped) -> None:
        self.skipped_recipes = list(skipped)  # core.recipe.load_latest_good has logged each one

    def skipped_words(self) -> str:
        """The recipes the last load skipped, in a sentence for a status line ("" when none)."""
        if not self.skipped_recipes:
            return ""
        names = ", ".join(f"{p.parent.name} {p.name}" for p, _ in self.skipped_recipes)
        return f"Skipped unusable recipe(s): {names} (the log says why)."

    def load_recipe(self, product: str, version: int | None = None) -> Recipe:
        """A version of a product; without one, its newest usable version (the newer ones that fail
        their checks are logged and listed in ``skipped_recipes``)."""
        trusted = self.trusted_keys()
        if version:
            self.skipped_recipes = []
            return load_recipe(self.recipes_root, product, version, trusted_keys=trusted)
        recipe, skipped = load_latest_good(self.recipes_root, product, trusted)
        self._note_skipped(skipped)
        return recipe

    def active_recipe(self) -> Recipe | None:
        """The recipe the settings name, else the newest usable version of that product, else of any
        other product, else None. Every recipe skipped on the way is logged (``skipped_recipes``)."""
        s = self.settings
        candidates = [s.active_product] if s.active_product else []
        candidates += [p for p in self.products() if p not in candidates]
        if not candidates:
            return None
        try:
            recipe, skipped = load_latest_good(self.recipes_root, candidates, self.trusted_keys(),
                                               version=s.active_version or None)
        except RecipeError as exc:
            log.warning("No usable recipe: %s", exc)
            self.skipped_recipes = []
            return None
        self._note_skipped(skipped)
        return recipe

    # -- product image sets (training data, teach-back) ------------------------------------
    def product_images(self, product: str, label: str) -> Path:
        """Folder of taught images for a product: label is 'good' or 'defect'."""
        if label not in ("good", "defect"):
            raise ValueError("label must be 'good' or 'defect'")
        p = self.product_dir(product) / label
        p.mkdir(parents=True, exist_ok=True)
        return p

    def product_dir(self, product: str) -> Path:
        """``products/<product>`` under the data folder; a name that is not a product name, or that
        would lead outside that folder, raises ValueError (nothing is created)."""
        try:
            ok = check_product_name(product) == product
        except RecipeError:
            ok = False
        root = self.products_root.resolve()
        p = root / str(product)
        if not ok or p.resolve().parent != root:
            raise ValueError(f"{str(product)[:80]!r} is not a product name, so no folder is made for it.")
        return p
