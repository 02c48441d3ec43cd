"""Fakes shared by the station tests: inspections without a model, a slow inspector, a camera
that disappears and comes back, and a station folder holding the tiny recipe."""
from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.calibration import Threshold
from core.fusion import fuse, model_score
from core.types import Frame, Inspection

THRESHOLD = Threshold(value=1.0, low=0.95, high=1.05, budget=0.005, n=20, method="test",
                      expected_false_reject=0.005, good_max=0.9)
RAW = {"PASS": (0.5, 0.4), "FAIL": (2.0, 1.8), "REVIEW": (1.6, 0.5)}  # REVIEW: the models disagree


def make_inspection(decision: str = "PASS", frame_id: int = 0, shape=(32, 32), source: str = "test") -> Inspection:
    a, b = RAW[decision]
    verdict = fuse([model_score("patchcore", a, THRESHOLD), model_score("gaussian", b, THRESHOLD)])
    assert verdict.decision.value == decision
    maps = {"patchcore": np.full(shape, a, np.float32), "gaussian": np.full(shape, b, np.float32)}
    region = None if decision == "PASS" else (2, 2, 8, 8)
    return Inspection(verdict=verdict, maps=maps, region=region, image_shape=tuple(shape), latency_ms=1.0,
                      recipe="fake", recipe_version=1, source=source, frame_id=frame_id)


@contextmanager
def feeding_frames(ctl, period_s: float = 0.005):
    """A capture thread putting numbered frames into ``ctl.inbox`` every ``period_s`` until the block ends."""
    stop = threading.Event()

    def capture():
        i = 0
        while not stop.is_set():
            i += 1
            ctl.inbox.put_frame(make_frame(i))
            time.sleep(period_s)

    feeder = threading.Thread(target=capture)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join()


def make_frame(frame_id: int, shape=(32, 32), timestamp: float | None = None) -> Frame:
    img = np.full((*shape, 3), frame_id % 256, np.uint8)
    return Frame(img, frame_id, time.time() if timestamp is None else timestamp, "test")


class FakeRecipe:
    label = "fake v1"
    product = "fake"
    version = 1


class SlowInspector:
    """Takes ``delay`` seconds per image; remembers which frames it saw."""

    backend = "fake"
    fallback_reason = None

    def __init__(self, delay: float = 0.05, decision: str = "PASS"):
        self.delay = delay
        self.decision = decision
        self.seen: list[int] = []
        self.threads: set[int] = set()

    def inspect(self, image, source="", frame_id=-1, with_maps=True, map_side=None):
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        self.seen.append(frame_id)
        return make_inspection(self.decision, frame_id, image.shape[:2], source)


class FlakyCamera:
    """A camera that delivers ``good_reads`` frames, then fails (read None), refuses to reopen
    ``failed_opens`` times, then works again."""

    kind = "camera"

    def __init__(self, good_reads: int = 5, failed_opens: int = 2, fps: float = 100.0, raise_on_read: bool = False):
        self.name = "Camera"
        self.fps = fps
        self.good_reads = good_reads
        self.failed_opens = failed_opens
        self.raise_on_read = raise_on_read
        self.reads = 0
        self.opens = 0
        self.unplugged = False
        self.is_open = False

    def open(self):
        self.opens += 1
        if self.unplugged:
            if self.failed_opens > 0:
                self.failed_opens -= 1
                raise OSError("device not found")
            self.unplugged = False
        self.is_open = True

    def read(self):
        if not self.is_open:
            return None
        self.reads += 1
        if self.reads == self.good_reads + 1:
            self.unplugged = True
            if self.raise_on_read:
                raise RuntimeError("driver error")
            return None
        return np.full((48, 64, 3), self.reads % 256, np.uint8)

    def close(self):
        self.is_open = False


def station_dirs(tmp_path: Path, recipe_root: Path | None = None) -> tuple[Path, Path]:
    """A fresh data and config folder; with ``recipe_root`` its recipes are copied in."""
    data, config = tmp_path / "data", tmp_path / "config"
    (data / "recipes").mkdir(parents=True)
    config.mkdir()
    if recipe_root is not None:
        for product in Path(recipe_root).iterdir():
            if product.is_dir():
                shutil.copytree(product, data / "recipes" / product.name)
    return data, config


def wait_for_rows(store: Path, at_least: int, proc, timeout_s: float, every_s: float = 0.2) -> int:
    """Poll a results store (read-only) until it holds ``at_least`` inspections, ``proc`` ends or
    ``timeout_s`` passes; returns the last count seen (0 while the store is missing or locked)."""
    import sqlite3

    rows, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(every_s)
        if store.is_file():
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
                    rows = db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
            except sqlite3.Error:
                rows = 0
            if rows >= at_least:
                break
    return rows
