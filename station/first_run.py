"""First start, without a window: the bundled demo recipe and the version of the app.

The frozen app's entry point (packaging/station_main.py) calls :func:`install_bundled_demo_recipe`
before the window opens: when the source is the demo and there is no recipe at all, the pre-built
demo recipe is copied in (atomically) instead of being trained on the factory PC.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_DIR = "demo-recipes"  # inside the frozen app (sys._MEIPASS)


def bundled_demo_root() -> Path | None:
    """The recipes folder holding the pre-built demo recipe, or None (source tree, not built)."""
    from station.context import DEMO_PRODUCT

    env = os.environ.get("STATION_DEMO_RECIPES")
    if env:
        root = Path(env)
    elif getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        root = Path(sys._MEIPASS) / BUNDLED_DIR
    else:
        return None
    return root if (root / DEMO_PRODUCT).is_dir() else None


def install_bundled_demo_recipe(data_dir=None, config_dir=None, force_demo: bool = False) -> Path | None:
    """Copy the bundled demo recipe into the user's recipes folder when the station would
    otherwise train it: the source is the demo and there is no recipe at all. Returns the copied
    version folder, else None. Never overwrites anything."""
    src_root = bundled_demo_root()
    if src_root is None:
        return None
    from core import paths
    from core.recipe import products, versions

    from station.context import DEMO_PRODUCT, SETTINGS_FILE, StationSettings

    data = Path(data_dir) if data_dir else paths.data_dir()
    config = Path(config_dir) if config_dir else paths.config_dir()
    settings = StationSettings.load(config / SETTINGS_FILE)
    if not (force_demo or settings.source_kind == "demo"):
        return None
    recipes = data / "recipes"
    if products(recipes):
        return None
    found = versions(src_root, DEMO_PRODUCT)
    if not found:
        return None
    name = f"v{found[-1]:04d}"
    target = recipes / DEMO_PRODUCT / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{name}.installing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src_root / DEMO_PRODUCT / name, tmp)
    try:
        os.replace(tmp, target)  # atomic: a complete recipe or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Installed the bundled demo recipe into %s", target)
    return target


def app_version() -> str:
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[1]))
    try:
        import tomllib

        with open(base / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, ValueError):
        try:
            from importlib.metadata import version

            return version("inspection-station")
        except Exception:  # noqa: BLE001
            return "unknown"
