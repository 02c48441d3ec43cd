"""Where the station keeps what it writes: the user's data and config folders, never the install folder.

Override with $STATION_DATA_DIR / $STATION_CONFIG_DIR (tests, portable installs).
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "InspectionStation"


def data_dir() -> Path:
    env = os.environ.get("STATION_DATA_DIR")
    p = Path(env) if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    p.mkdir(parents=True, exist_ok=True)
    return p


def config_dir() -> Path:
    env = os.environ.get("STATION_CONFIG_DIR")
    p = Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    p.mkdir(parents=True, exist_ok=True)
    return p


def recipes_dir() -> Path:
    p = data_dir() / "recipes"
    p.mkdir(parents=True, exist_ok=True)
    return p


def products_dir() -> Path:
    """Per-product image sets (good / defect) that recipes are trained from and taught back into."""
    p = data_dir() / "products"
    p.mkdir(parents=True, exist_ok=True)
    return p


def images_dir() -> Path:
    p = data_dir() / "images"
    p.mkdir(parents=True, exist_ok=True)
    return p


def store_path() -> Path:
    return data_dir() / "results.sqlite"


def cache_dir() -> Path:
    """Rebuildable files (exported backbone graphs); safe to delete."""
    env = os.environ.get("STATION_CACHE_DIR")
    p = Path(env) if env else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    p.mkdir(parents=True, exist_ok=True)
    return p


def log_dir() -> Path:
    p = data_dir() / "logs"
    p.mkdir(parents=True, exist_ok=True)
    return p
