"""Recording a verdict (images for the review queue, the store row), the operator's wording, the
shift counters and the entry point."""
from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from station.context import StationContext
from station.evidence import load_maps
from station.recording import Recorder, RecordPolicy
from station.shift import ShiftCounters
from station.wording import explain

from station_helpers import make_inspection


@pytest.fixture
def context(tmp_path, monkeypatch):
    monkeypatch.setenv("STATION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(tmp_path / "config"))
    ctx = StationContext()
    yield ctx
    ctx.close()


def test_review_parts_keep_image_heatmap_and_maps_with_their_row(context):
    image = np.full((32, 32, 3), 120, np.uint8)
    out = Recorder(context).record(make_inspection("REVIEW"), image, RecordPolicy("continuous", keep_images="none"))
    assert out.problem is None and out.inspection_id is not None
    row = context.store.get_inspection(out.inspection_id)
    assert row.verdict == "REVIEW" and row.mode == "continuous"
    assert row.image_path == out.image_path and Path(out.image_path).is_file()
    assert Path(row.heatmap_path).is_file() and row.heatmap_path.endswith("_heatmap.jpg")
    assert set(load_maps(out.image_path)) == {"patchcore", "gaussian"}
    assert [r.id for r in context.store.pending_reviews()] == [out.inspection_id]
    assert row == out.record  # what the recorder returns is what the store gives back


def test_artifacts_keep_the_original_file_bytes_when_given(context):
    import cv2

    from core.images import decode_image, load_image

    image = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", image[:, :, ::-1])[1].tobytes()
    insp = make_inspection("FAIL", shape=(24, 32))
    files = context.evidence.save(insp, decode_image(jpeg), "from_file", original=jpeg)
    kept, heat = files.image, files.heatmap
    assert kept.endswith("from_file.jpg") and Path(kept).read_bytes() == jpeg  # as it came, not re-encoded
    assert Path(heat).is_file() and set(load_maps(kept)) == {"patchcore", "gaussian"}
    made = context.evidence.save(insp, image, "from_camera").image
    assert made.endswith("from_camera.png") and np.array_equal(load_image(made), image)


def test_kept_maps_are_small_float16_and_cover_the_image(context):
    import cv2

    from station.evidence import KEPT_MAP_SIDE, kept_map

    grid = np.zeros((8, 12), np.float32)
    grid[2:4, 6:8] = 3.0
    big = cv2.resize(grid, (900, 600), interpolation=cv2.INTER_LINEAR)
    small = kept_map(big)
    assert small.dtype == np.float16 and small.shape == (171, KEPT_MAP_SIDE)
    back = cv2.resize(small.astype(np.float32), (900, 600), interpolation=cv2.INTER_LINEAR)
    assert np.abs(back - big).max() < 0.1 * big.max()  # the same heatmap, where it was
    tiny = np.ones((32, 32), np.float32)
    assert kept_map(tiny).shape == (32, 32)  # never enlarged


def test_fail_images_follow_queue_fails_and_pass_images_are_not_kept(context):
    rec, image = Recorder(context), np.zeros((32, 32, 3), np.uint8)
    none = RecordPolicy("triggered", keep_images="none")
    assert rec.record(make_inspection("FAIL"), image, none).image_path is None
    queued = RecordPolicy("triggered", queue_fails=True, keep_images="none")
    assert rec.record(make_inspection("FAIL"), image, queued).image_path
    assert rec.record(make_inspection("PASS"), image, RecordPolicy(keep_images="review_fail")).image_path is None
    assert context.store.counts()["inspected"] == 3


def test_a_full_disk_still_records_the_verdict_and_says_so(context, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(context.evidence, "save", full)
    out = Recorder(context).record(make_inspection("REVIEW"), np.zeros((32, 32, 3), np.uint8), RecordPolicy())
    assert out.inspection_id is not None and out.image_path is None
    assert "No space left on device" in out.problem and "disk full" in out.problem


def test_reasons_in_operator_words():
    disagree = explain(make_inspection("REVIEW").verdict)
    assert disagree == ["The models disagree: PatchCore found a defect, the Gaussian model did not — please check."]
    assert explain(make_inspection("PASS").verdict) == ["Both models see a good part."]
    assert "Both models found a defect" in explain(make_inspection("FAIL").verdict)[0]


def test_a_stored_result_is_explained_in_the_same_words_as_the_live_one(context):
    from station.wording import record_in_words

    for decision in ("PASS", "FAIL", "REVIEW"):
        ins = make_inspection(decision)
        iid = context.store.add_inspection(ins, image_path="x.png")
        rec = context.store.get_inspection(iid)
        assert record_in_words(rec) == explain(ins.verdict)
        short = record_in_words(rec, detail=False)
        assert len(short) == len(rec.reasons) and all(s.endswith(".") for s in short)


def test_the_combined_score_is_named_when_no_single_model_found_the_defect():
    from core.store import StoredInspection, StoredScore
    from core.types import Decision
    from station.wording import record_in_words

    def stored(reasons, scores=None, notes=()):
        return StoredInspection(1, "2026-01-01T00:00:00.000Z", "x.png", "demo", 1, Decision.REVIEW,
                                tuple(reasons), tuple(notes), scores or {})

    scores = {"patchcore": StoredScore(6.0, 0.6, "normal", (0.8, 1.0)),
              "gaussian": StoredScore(11.0, 1.1, "uncertain", (0.8, 1.0))}
    assert record_in_words(stored(["models_disagree"], scores)) == [
        "The models disagree: the combined score found a defect, PatchCore did not — please check."]
    # without the models' states (an old export) the sentence stays general, and nothing fails
    assert "one found a defect" in record_in_words(stored(["models_disagree"]))[0]
    assert record_in_words(stored(["unfamiliar_input"], notes=["image is 300 x 600 px; the recipe expects 300 x 300"])) == [
        "image is 300 x 600 px; the recipe expects 300 x 300."]


def test_shift_counters_survive_a_restart_and_reset(context):
    shift = ShiftCounters(context.config_dir)
    for d in ("PASS", "PASS", "FAIL", "REVIEW"):
        context.store.add_inspection(make_inspection(d))
        shift.add(d)
    snap = shift.snapshot()
    assert (snap.inspected, snap.passed, snap.failed, snap.review, snap.yield_pct) == (4, 2, 1, 1, 50.0)
    again = ShiftCounters(context.config_dir)  # the station restarted mid-shift
    assert again.started == shift.started
    again.restore(again.counts_in_store(context.store))
    assert again.snapshot().inspected == 4
    again.reset()
    assert again.snapshot().inspected == 0 and again.snapshot().yield_pct is None
    assert ShiftCounters(context.config_dir).started == again.started


def test_main_starts_logs_and_stops_cleanly(tmp_path, monkeypatch, qapp):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from station.qt import app as station_app
    from station.qt.live import LivePipeline
    from station.qt.main_window import MainWindow

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(LivePipeline, "build_demo_recipe", lambda self: False)  # no training here
    monkeypatch.delenv("STATION_DATA_DIR", raising=False)
    monkeypatch.delenv("STATION_CONFIG_DIR", raising=False)
    windows = []

    started = time.monotonic()

    def close_when_a_frame_was_shown():  # or after 30 s: the asserts below then say what is missing
        for w in QApplication.topLevelWidgets():
            if isinstance(w, MainWindow) and (w.live_view.frames_shown > 0 or time.monotonic() - started > 30):
                windows.append(w)
                w.close()
                return
        QTimer.singleShot(100, close_when_a_frame_was_shown)

    QTimer.singleShot(100, close_when_a_frame_was_shown)
    root_handlers = list(logging.getLogger().handlers)
    sheet = qapp.styleSheet()
    try:
        rc = station_app.main(["--data-dir", str(tmp_path / "d"), "--config-dir", str(tmp_path / "c"), "--demo"])
    finally:
        for h in logging.getLogger().handlers[:]:
            if h not in root_handlers:
                logging.getLogger().removeHandler(h)
                h.close()
        qapp.setStyleSheet(sheet)
    assert rc == 0 and windows
    w = windows[0]
    assert not w.pipeline.capture.is_running() and not w.pipeline.inference.is_running()
    assert w.live_view.frames_shown > 0
    log_text = (tmp_path / "d" / "logs" / "station.log").read_text()
    assert "Station starting" in log_text and "Station stopped" in log_text
    assert qapp.organizationName() == station_app.ORGANISATION
    assert "counterValue" in station_app.style_sheet()


def test_installed_pyside_keeps_reference_counts():
    """PySide6 6.12.0 (cp310-abi3 wheel) returns None/True without a reference on Python 3.11, and
    a live view makes thousands of such calls a minute: the interpreter then aborts. We pin a
    build that does not (requirements.txt); this fails if an upgrade brings the bug back."""
    from PySide6.QtCore import QObject, QTimer, Signal

    class Emitter(QObject):
        happened = Signal(object)

    e, t = Emitter(), QTimer()
    before_none, before_true = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(500):  # few enough that a leaking build loses references but does not abort
        t.stop()  # returns None
        e.happened.emit(1)  # returns True
        t.isActive()  # returns False/True
    assert sys.getrefcount(None) >= before_none - 50
    assert sys.getrefcount(True) >= before_true - 50
