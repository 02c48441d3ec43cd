"""Shared fixtures: generated parts, a tiny trained recipe, the MVTec bottle path, Qt thread hygiene."""
from __future__ import annotations

import os
import sys
import tempfile
import weakref
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MVTEC_BOTTLE = Path(os.environ.get("MVTEC_BOTTLE", ROOT.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Never touch the developer's real station folders from a test run.
_TMP = tempfile.mkdtemp(prefix="station-tests-")
for _var, _sub in (("STATION_DATA_DIR", "data"), ("STATION_CONFIG_DIR", "config"), ("STATION_CACHE_DIR", "cache")):
    os.environ.setdefault(_var, os.path.join(_TMP, _sub))


@pytest.fixture(scope="session")
def mvtec_bottle() -> Path:
    if not (MVTEC_BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle not found at {MVTEC_BOTTLE} (set MVTEC_BOTTLE to run these tests)")
    return MVTEC_BOTTLE


@pytest.fixture(scope="session")
def tiny_recipe_root(tmp_path_factory) -> Path:
    """A recipes root holding 'tiny' v1: trained on 14 generated good brackets at 128 px."""
    from station.demo import PartGenerator
    from core.trainer import TrainConfig, train_recipe

    gen = PartGenerator("bracket", (128, 128), seed=0)
    good = [gen.good(i).image for i in range(14)]
    recipe = train_recipe(good, product="tiny", config=TrainConfig(size=128, min_good=10))
    root = tmp_path_factory.mktemp("recipes")
    recipe.save(root)
    return root


@pytest.fixture(scope="session")
def tiny_recipe_path(tiny_recipe_root) -> Path:
    return tiny_recipe_root / "tiny" / "v0001"


@pytest.fixture(scope="session")
def tiny_recipe(tiny_recipe_path):
    from core.recipe import load_recipe

    return load_recipe(tiny_recipe_path)


# -- Qt: no test may leave a QThread running -------------------------------------------------
_started_threads: list = []


def _track_qthreads() -> None:
    try:
        from PySide6.QtCore import QThread
    except ImportError:  # pragma: no cover
        return
    if getattr(QThread.start, "_tracked", False):
        return
    original = QThread.start

    def start(self, *args, **kwargs):
        _started_threads.append(weakref.ref(self))
        return original(self, *args, **kwargs)

    start._tracked = True
    QThread.start = start


@pytest.fixture(autouse=True)
def no_qthread_left_running(request):
    if "PySide6" not in sys.modules and "qtbot" not in request.fixturenames:
        yield
        return
    _track_qthreads()
    del _started_threads[:]
    yield
    running = []
    for ref in _started_threads:
        t = ref()
        try:
            if t is not None and t.isRunning():
                running.append(t.objectName() or type(t).__name__)
        except RuntimeError:  # the C++ object is gone: it is not running
            pass
    del _started_threads[:]
    if running:
        pytest.fail(f"test left QThread(s) running: {running}")


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    """An empty StationContext in temporary folders (test files that need recipes override it)."""
    from workflow_helpers import make_context

    c = make_context(tmp_path, monkeypatch)
    yield c
    c.close()


@pytest.fixture
def station(tmp_path, tiny_recipe_root, monkeypatch, qtbot):
    """(context, make): ``make(mode, source=None, backoff=None)`` opens the real main window on the tiny
    recipe (default source: the demo camera at 128 px); every window is closed at the end."""
    from station.context import StationContext
    from station.qt.live import LivePipeline
    from station.qt.main_window import MainWindow
    from station.sources import DemoSource
    from station_helpers import station_dirs

    data, config = station_dirs(tmp_path, tiny_recipe_root)
    monkeypatch.setenv("STATION_DATA_DIR", str(data))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(config))
    ctx = StationContext()
    windows = []

    def make(mode="continuous", source=None, backoff=None):
        ctx.settings.mode = mode
        ctx.settings.keep_images = "review_fail"
        pipeline = LivePipeline(
            ctx, source_factory=lambda s: source or DemoSource("bracket", fps=30, size=(128, 128)))
        if backoff:
            pipeline.capture.backoff = backoff
        win = MainWindow(ctx, pipeline)
        qtbot.addWidget(win)
        windows.append(win)
        win.show()
        return win

    yield ctx, make
    for w in windows:
        w.close()
    ctx.close()
