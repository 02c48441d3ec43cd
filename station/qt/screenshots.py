"""Screenshots of the main window in each verdict state, taken through the real pipeline.

    python -m station.qt.screenshots OUTDIR [--data-dir DIR]

Runs the demo stream for a few seconds (so the counters and charts have history), then shows a
chosen PASS, FAIL and REVIEW demo part to the camera (triggered mode, one Space each) and saves
``main_pass.png``, ``main_fail.png``, ``main_review.png``. Nothing is written to the results
store. The demo recipe is built on the first run (like a station's first start).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = (1440, 900)
STATES = ("PASS", "FAIL", "REVIEW")


def _spin(ms: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def _wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not predicate() and time.perf_counter() < deadline:
        _spin(20)
    return predicate()


def choose_parts(recipe, start: int = 10_000, limit: int = 400) -> dict[str, np.ndarray]:
    """Demo parts that the recipe judges PASS, FAIL and REVIEW (a blend of a good part and its
    defective twin when the stream has no REVIEW part early on)."""
    from station.demo import PartGenerator
    from core.engine import Inspector

    inspector = Inspector(recipe, threads=1)
    gen = PartGenerator("bracket", (256, 256), seed=0)
    found: dict[str, np.ndarray] = {}
    for i in range(start, start + limit):
        for part in (gen.good(i), gen.defective(i)):
            d = inspector.inspect(part.image).decision.value
            found.setdefault(d, part.image)
        if len(found) == 3:
            return found
        if "REVIEW" not in found and i - start >= 20:
            good, bad = gen.good(i).image.astype(np.float32), gen.defective(i).image.astype(np.float32)
            for alpha in np.linspace(0.2, 0.9, 15):
                img = np.clip(good + alpha * (bad - good), 0, 255).astype(np.uint8)
                if inspector.inspect(img).decision.value == "REVIEW":
                    found["REVIEW"] = img
                    break
    return found


def take(outdir: Path, data_dir: Path) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from station.qt.app import make_application
    from station.context import StationContext
    from station.qt.live import LivePipeline
    from station.qt.main_window import MainWindow
    from station.mailbox import CONTINUOUS, TRIGGERED
    from station.sources import ArraySource

    app = make_application()
    outdir.mkdir(parents=True, exist_ok=True)
    context = StationContext(data_dir / "data", data_dir / "config")
    context.settings.source_kind, context.settings.mode = "demo", CONTINUOUS
    pipeline = LivePipeline(context, force_demo=True, record=False)
    window = MainWindow(context, pipeline)
    window.resize(*SIZE)
    window.show()
    saved = []
    try:
        window.start()
        if not _wait_until(lambda: pipeline.ready, 900):
            raise RuntimeError(f"no recipe became ready ({pipeline.state})")
        parts = choose_parts(pipeline.current_recipe)
        missing = [s for s in STATES if s not in parts]
        if missing:
            print(f"no demo part found for {missing}", file=sys.stderr)
        _spin(6000)  # the demo stream: counters and charts get some history
        pipeline.set_mode(TRIGGERED)
        window.activateWindow()
        for state in STATES:
            if state not in parts:
                continue
            pipeline.capture.start(ArraySource([parts[state]], fps=30, name="Demo bracket"))
            _wait_until(lambda: pipeline.capture.state == "running", 5)
            _spin(300)
            seq = window.banner.shown_seq
            QTest.keyClick(window, Qt.Key.Key_Space)
            if not _wait_until(lambda seq=seq, state=state: window.banner.painted_seq > seq and window.banner.state == state,
                               10):
                print(f"the window did not show {state} (it shows {window.banner.state})", file=sys.stderr)
            _spin(400)  # charts redraw at 10 Hz
            path = outdir / f"main_{state.lower()}.png"
            window.grab().save(str(path))
            saved.append(path)
    finally:
        window.close()
        context.close()
    del app
    return saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m station.qt.screenshots", description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", help="folder for the PNG files")
    ap.add_argument("--data-dir", help="station folder holding (or receiving) the demo recipe",
                    default=str(Path(tempfile.gettempdir()) / "station-bench"))
    args = ap.parse_args(argv)
    for path in take(Path(args.outdir), Path(args.data_dir)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
