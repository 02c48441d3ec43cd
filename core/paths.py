"""Where the station keeps what it writes: the user's data and config folders, never the install folder.

Override with $STATION_DATA_DIR / $STATION_CONFIG_DIR (tests, portable installs), or give the data
folder to the functions below (``StationContext(data_dir=...)`` does; it never changes the environment).
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "InspectionStation"


def _made(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _user_dir(env: str, default: str) -> Path:
    """``$env`` when set, else the platform's user folder; created if missing."""
    value = os.environ.get(env)
    return _made(Path(value) if value else Path(default))


def data_dir() -> Path:
    return _user_dir("STATION_DATA_DIR", platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    return _user_dir("STATION_CONFIG_DIR", platformdirs.user_config_dir(APP_NAME, appauthor=False))


def recipes_dir(data: Path | None = None) -> Path:
    return _made((data or data_dir()) / "recipes")


def products_dir(data: Path | None = None) -> Path:
    """Per-product image sets (good / defect) that recipes are trained from and taught back into."""
    return _made((data or data_dir()) / "products")


def images_dir(data: Path | None = None) -> Path:
    return _made((data or data_dir()) / "images")


def store_path(data: Path | None = None) -> Path:
    return (data or data_dir()) / "results.sqlite"


def cache_dir() -> Path:
    """Rebuildable files (exported backbone graphs); safe to delete."""
    return _user_dir("STATION_CACHE_DIR", platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def log_dir(data: Path | None = None) -> Path:
    return _made((data or data_dir()) / "logs")
