"""Charts (coalesced, calibration histogram), the verdict banner, and the settings dialog."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from station.qt import settings_dialog
from station.qt.charts import HISTORY, REDRAW_HZ, ScoreCharts, calibration_scores
from station.context import StationContext
from station.qt.settings_dialog import SettingsDialog
from station.qt.banner import VerdictBanner
from station.qt.widgets import ScorePanel

from station_helpers import make_inspection


def test_calibration_histogram_is_normalised_by_the_threshold(tiny_recipe):
    for model in ("patchcore", "gaussian"):
        scores = calibration_scores(tiny_recipe, model)
        raw = tiny_recipe.tensors[f"calibration.{model}"]
        assert np.allclose(scores * tiny_recipe.threshold(model).value, raw)
        assert np.median(scores) < 1.0  # good parts sit below the limit


def test_charts_coalesce_updates_and_keep_a_bounded_history(qtbot, tiny_recipe):
    charts = ScoreCharts()
    qtbot.addWidget(charts)
    charts.show()
    charts.set_recipe(tiny_recipe)
    assert set(charts.models) == {"patchcore", "gaussian"}
    qtbot.wait(150)
    before = charts.redraws
    t0 = time.perf_counter()
    for n in range(400):  # verdicts in bursts, far faster than the redraw rate
        charts.add_verdict(make_inspection("FAIL" if n % 3 else "PASS").verdict)
        if n % 10 == 9:
            qtbot.wait(20)
    qtbot.wait(1000 // REDRAW_HZ + 100)  # one more tick draws the newest values
    elapsed = time.perf_counter() - t0
    redraws = charts.redraws - before
    assert 1 <= redraws <= elapsed * REDRAW_HZ + 2 <= elapsed * 10 + 2  # not one per verdict
    row = charts.models["patchcore"]
    assert len(row.values) == HISTORY
    x, y = row.curve.getData()
    assert len(x) == HISTORY and y[-1] == pytest.approx(min(row.values[-1], 2.48))
    assert row.current.isVisible() and row.band.getRegion() == pytest.approx(tiny_recipe.threshold("patchcore").band)


def test_banner_and_scores_follow_the_verdict(qtbot, tiny_recipe):
    banner, panel = VerdictBanner(), ScorePanel()
    qtbot.addWidget(banner)
    qtbot.addWidget(panel)
    banner.set_state("REVIEW", "REVIEW", "Not sure — please check the part.", "why")
    assert banner.property("verdict") == "REVIEW" and banner.headline == "REVIEW"
    with pytest.raises(ValueError):
        banner.set_state("MAYBE", "?")
    panel.set_recipe(tiny_recipe)
    v = make_inspection("REVIEW").verdict
    panel.set_verdict(v)
    assert panel.gauges["patchcore"].score.score == pytest.approx(v.score_of("patchcore").score)


def test_settings_dialog_writes_station_settings(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("STATION_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(tmp_path / "c"))
    ctx = StationContext()
    try:
        dlg = SettingsDialog(ctx)
        qtbot.addWidget(dlg)
        saved = []
        dlg.settings_saved.connect(saved.append)
        dlg.source.setCurrentIndex(2)  # folder
        dlg.accept()  # no folder chosen: refused, in words
        assert dlg.error.isVisibleTo(dlg) and "Choose the folder" in dlg.error.text()
        dlg.folder.setText(str(tmp_path))
        dlg.folder_fps.setValue(2.5)
        dlg.triggered.setChecked(True)
        dlg.queue_fails.setChecked(True)
        dlg.keep.setCurrentIndex(1)  # every part
        dlg.evidence_days.setValue(7)
        dlg.evidence_gb.setValue(0.5)
        dlg.min_free_gb.setValue(2.0)
        dlg.one_per_part.setChecked(False)
        dlg.accept()
        assert saved == [True]
        data = json.loads(ctx.settings_path.read_text())
        assert (data["source_kind"], data["folder"], data["folder_fps"]) == ("folder", str(tmp_path), 2.5)
        assert (data["mode"], data["queue_fails"], data["keep_images"]) == ("triggered", True, "all")
        assert (data["evidence_days"], data["evidence_max_gb"], data["min_free_gb"]) == (7.0, 0.5, 2.0)
        assert data["one_record_per_part"] is False
        assert ctx.settings.retention().max_gb == 0.5
    finally:
        ctx.close()


def test_probe_cameras_runs_in_the_background_and_lists_what_answers(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("STATION_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("STATION_CONFIG_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(settings_dialog, "probe_cameras",
                        lambda indices, cancelled: [{"index": 2, "width": 1280, "height": 720}])
    ctx = StationContext()
    try:
        dlg = SettingsDialog(ctx)
        qtbot.addWidget(dlg)
        dlg.source.setCurrentIndex(1)
        dlg.probe()
        qtbot.waitUntil(lambda: "Found" in dlg.probe_result.text(), timeout=5000)
        assert dlg.camera.currentText() == "2" and "1280×720" in dlg.probe_result.text()
        qtbot.waitUntil(lambda: dlg.probe_button.isEnabled(), timeout=5000)
        dlg.reject()
    finally:
        ctx.close()


def test_part_viewer_region_from_a_smaller_batch_map():
    from station.qt.part_viewer import region_in

    amap = np.zeros((64, 96), np.float32)  # a batch map at the working size of a 3:2 image
    amap[10:20, 30:40] = 2.0
    assert region_in((64, 96), amap, 1.0) == (30, 10, 10, 10)
    assert region_in((640, 960), amap, 1.0) == (300, 100, 100, 100)  # the same spot, image pixels
    assert region_in((640, 960), amap, 3.0) is None  # nothing above the level


def test_labels_that_quote_names_and_messages_show_plain_text(station, qtbot):
    """The alert bar, the status bar's source/recipe/disk labels, the review queue's and the history's
    status lines show what they are given as text: a file or product name like ``<img src=x><b>`` is not
    Qt rich text (issue 13, small leaks)."""
    from PySide6.QtCore import Qt

    ctx, make = station
    win = make()
    hostile = "<img src=x><b>bold</b> /parts/<i>a</i>.png"
    win.show_error(hostile, logged=True)
    labels = [win.alert.label, win.source_status, win.recipe_status, win.disk_status, win.review.status,
              win.review.count_label, win.review.taught_label, win.history.status, win.history.page_label]
    assert all(lab.textFormat() == Qt.TextFormat.PlainText for lab in labels)
    assert win.alert.label.text() == hostile
