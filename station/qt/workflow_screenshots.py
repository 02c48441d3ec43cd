"""Screenshots of the operator workflows on generated parts (documentation, visual checks).

    python -m station.qt.workflow_screenshots OUTDIR

Works in a throw-away data folder: generates good and defective demo parts, runs the calibration
wizard to its result page (calibration_wizard.png), saves the recipe, inspects a folder with a
corrupt file in the batch dialog (batch_table.png), then shows the review queue
(review_queue.png), the history (history.png) and the threshold what-if (whatif.png).
Runs offscreen when there is no display. Takes a minute or two (it trains a recipe).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

SIZE = (224, 224)
_APP = None  # the QApplication outlives every widget made in main()


def _wait(qtest, predicate, timeout_s: float, what: str) -> None:
    """Run the event loop until ``predicate()`` (a script may; the widgets never do this)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        qtest.qWait(20)


def _save(widget, path: Path) -> None:
    widget.grab().save(str(path))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="station-shots-"))
    os.environ["STATION_DATA_DIR"] = str(work / "data")
    os.environ["STATION_CONFIG_DIR"] = str(work / "config")

    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from station.demo import PartGenerator, write_dataset
    from core.images import save_image_atomic
    from core.trainer import TrainConfig
    from station.qt.batch_dialog import BatchDialog
    from station.qt.calibration_wizard import CalibrationWizard
    from station.context import StationContext
    from station.qt.history import HistoryWidget
    from station.qt.review_queue import ReviewQueueWidget
    from station.qt.whatif_dialog import WhatIfDialog

    global _APP
    _APP = QApplication.instance() or QApplication(sys.argv[:1])
    _APP.setApplicationName("InspectionStation")
    ctx = StationContext()
    ctx.settings.queue_fails = True
    ctx.settings.active_product = "bracket-A12"

    data = write_dataset(work / "parts", "bracket", SIZE, n_train=24, n_test_good=0, n_test_defect_each=0, seed=7)
    batch_dir = work / "incoming"
    gen = PartGenerator("bracket", SIZE, seed=7)
    for i in range(16):
        part = gen.defective(100 + i) if i % 3 == 0 else gen.good(100 + i)
        save_image_atomic(batch_dir / ("line1" if i < 8 else "line2") / f"part_{i:03d}.png", part.image)
    (batch_dir / "line1" / "part_002_scan.png").write_text("not an image")
    raw = (batch_dir / "line1" / "part_001.png").read_bytes()
    (batch_dir / "line1" / "part_001_copy.png").write_bytes(raw[: len(raw) // 3])

    # 1. calibration wizard, result page
    wiz = CalibrationWizard(ctx, config=TrainConfig(size=256, min_good=10))
    wiz.resize(1000, 760)
    wiz.show()
    wiz.product_page.name_edit.setText("bracket-A12")
    wiz.next()
    wiz.collect_page.set_folder(str(data / "train" / "good"))
    _wait(QTest, wiz.collect_page.isComplete, 30, "the folder listing")
    wiz.next()
    _wait(QTest, lambda: wiz.region_page.editor.image_size()[0] > 0, 30, "the reference image")
    h, w = SIZE
    wiz.region_page.editor.set_roi((8, 8, w - 16, h - 16))
    wiz.next()
    t0 = time.perf_counter()
    _wait(QTest, lambda: wiz.currentPage() is wiz.result_page, 900, "training")
    print(f"calibration trained in {time.perf_counter() - t0:.1f} s")
    QTest.qWait(300)
    _save(wiz, args.outdir / "calibration_wizard.png")
    wiz.accept()
    _wait(QTest, lambda: wiz.saved_path is not None and not wiz.busy(), 60, "saving the recipe")

    # 2. batch dialog with results
    dlg = BatchDialog(ctx, folder=str(batch_dir))
    dlg.resize(1280, 760)
    dlg.show()
    t0 = time.perf_counter()
    dlg.start()
    _wait(QTest, lambda: not dlg.busy(), 600, "the batch")
    n = len(dlg.rows())
    print(f"batch: {n} rows in {time.perf_counter() - t0:.1f} s (including building the inspector)")
    QTest.qWait(300)
    _save(dlg, args.outdir / "batch_table.png")

    # 3. review queue
    queue = ReviewQueueWidget(ctx)
    queue.resize(1280, 760)
    queue.show()
    _wait(QTest, lambda: not queue.view.busy(), 60, "the review images")
    QTest.qWait(300)
    _save(queue, args.outdir / "review_queue.png")
    queue.decide("defect")
    _wait(QTest, lambda: not queue.view.busy(), 60, "the next review")

    # 4. history and what-if
    hist = HistoryWidget(ctx)
    hist.resize(1280, 600)
    hist.show()
    _wait(QTest, lambda: not hist.busy(), 60, "the history")
    QTest.qWait(200)
    _save(hist, args.outdir / "history.png")
    whatif = WhatIfDialog(ctx, product="bracket-A12")
    whatif.show()
    _wait(QTest, lambda: whatif.recipe is not None and not whatif.busy(), 60, "the what-if data")
    whatif.set_factor(0.8)
    _wait(QTest, lambda: not whatif.busy() and whatif.simulated is not None and abs(whatif.simulated.factor - 0.8) < 1e-6,
          60, "the what-if")
    QTest.qWait(200)
    _save(whatif, args.outdir / "whatif.png")

    # close everything and let Qt delete it while the application still exists
    for widget in (wiz, dlg, queue, hist, whatif):
        if hasattr(widget, "shutdown"):
            widget.shutdown()
        widget.close()
        widget.deleteLater()
    QTest.qWait(100)
    ctx.close()
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"data kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
