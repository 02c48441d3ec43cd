"""Hostile and unlucky inputs (issue 13, first part): telemetry off, non-UTF-8 file names, formula cells,
REPLACE on reviews, passwords in camera URLs."""
from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.store import ResultsStore, StoredInspection, StoreError, printable
from station.report import cell, write_csv
from station.sources import CameraSource, redact_url

ROOT = Path(__file__).resolve().parents[1]


def test_onnxruntime_telemetry_is_off_and_writes_nothing_under_home(tmp_path):
    """ORT_DISABLE_TELEMETRY must be set before onnxruntime is imported (disable_telemetry_events is not
    enough): it phones home about 9 s after the import and writes ~/.cache/Microsoft."""
    code = textwrap.dedent("""
        import os, time
        os.environ.pop("ORT_DISABLE_TELEMETRY", None)
        import numpy as np, torch
        from core import onnx_runtime
        print(os.environ.get("ORT_DISABLE_TELEMETRY"))
        graph = onnx_runtime.export(torch.nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 8, 8), ["y"], spatial=True)
        onnx_runtime.OrtModel(graph, 1, spin=False)(np.zeros((1, 3, 8, 8), np.float32))
        time.sleep(12)
    """)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(ROOT))
    env.pop("ORT_DISABLE_TELEMETRY", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "1"
    assert not (home / ".cache" / "Microsoft").exists(), sorted(str(p) for p in home.rglob("*"))


def test_reviews_cannot_be_overwritten_with_insert_or_replace(tmp_path):
    from station_helpers import make_inspection

    with ResultsStore(tmp_path / "r.sqlite") as store:
        iid = store.add_inspection(make_inspection("REVIEW"))
        rid = store.add_review(iid, "good")
        conn = sqlite3.connect(tmp_path / "r.sqlite")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("PRAGMA recursive_triggers = ON")  # as the store's own connection has it
            conn.execute("INSERT OR REPLACE INTO reviews (id, inspection_id, ts, decision) VALUES (?, ?, 'x', 'defect')",
                         (rid, iid))
        conn.close()
        assert [r.decision for r in store.reviews_for(iid)] == ["good"]
    # and through the store's connection, which is what the station uses
    with ResultsStore(tmp_path / "r.sqlite") as store:
        with pytest.raises((sqlite3.DatabaseError, StoreError)):
            with store._transaction() as c:
                c.execute("INSERT OR REPLACE INTO reviews (id, inspection_id, ts, decision) VALUES (?, ?, 'x', 'defect')",
                          (rid, iid))
        assert [r.decision for r in store.reviews_for(iid)] == ["good"]


def test_a_file_name_that_is_not_utf8_is_stored_and_reported_and_formulas_stay_text(tmp_path):
    odd = os.fsdecode(b"part-\xff\xfe.png")
    assert printable(odd) == "part-\\xff\\xfe.png"
    rec = StoredInspection.failed(str(tmp_path / odd), "not an image")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.add_record(rec)  # a lone surrogate would make sqlite refuse the row
        (back,) = store.query_inspections()
    assert back.source.endswith("part-\\xff\\xfe.png")
    formula = StoredInspection.failed("=HYPERLINK(\"http://x\")", "-1+2")
    write_csv(tmp_path / "o.csv", [rec, formula])
    rows = list(csv.DictReader((tmp_path / "o.csv").open(encoding="utf-8")))
    assert rows[0]["path"].endswith("part-\\xff\\xfe.png")
    assert rows[1]["path"].startswith("'=") and rows[1]["error"] == "'-1+2"
    assert cell("+1") == "'+1" and cell("@SUM(A1)") == "'@SUM(A1)" and cell("a=b") == "a=b"


def test_cli_inspect_goes_on_past_a_non_utf8_file_name(tmp_path, tiny_recipe_path):
    from station.demo import PartGenerator
    from core.images import save_image_atomic
    from training.cli import main

    folder = tmp_path / "in"
    gen = PartGenerator("bracket", (128, 128), seed=2)
    save_image_atomic(folder / "ok.png", gen.good(1).image)
    odd = Path(os.fsdecode(bytes(folder) + b"/odd-\xff.png"))
    save_image_atomic(odd, gen.good(2).image)
    out = tmp_path / "o.csv"
    code = main(["inspect", "--recipe", str(tiny_recipe_path), str(folder), "--csv", str(out),
                 "--store", str(tmp_path / "s.sqlite")])
    assert code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 2 and all(r["verdict"] for r in rows)
    with ResultsStore(tmp_path / "s.sqlite") as store:
        assert len(store.query_inspections()) == 2


def test_a_camera_url_password_never_reaches_the_name_the_log_or_the_records():
    url = "rtsp://admin:S3cret@10.0.0.5:554/stream1"
    assert redact_url(url) == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert "S3cret" not in CameraSource(url).name
    assert redact_url("http://host/path") == "http://host/path"


def test_station_cli_inspect_makes_no_network_call_and_the_trace_would_see_one(tmp_path, tiny_recipe_path):
    """strace on ``station-cli inspect --store --heatmaps --csv``: no AF_INET/AF_INET6 connect or send, no
    file under HOME outside the app's folders; the control (a loopback probe sending to port 53 and
    connecting over TCP) shows the same trace does see network calls and a lookup."""
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import offline_trace
    finally:
        sys.path.remove(str(ROOT / "packaging"))
    why = offline_trace.strace_usable()
    if why:
        pytest.skip(f"no system-call trace: {why}")
    import cv2
    import numpy as np

    home = tmp_path / "home"
    parts = home / "parts"
    parts.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(parts / f"p{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    trace, outside = offline_trace.cli_check(home, recipe=tiny_recipe_path, parts=parts)
    probe = offline_trace.probe_check(tmp_path / "control-home")
    assert (home / "out" / "rows.csv").exists() and (home / "out" / "results.db").exists()
    assert trace.network == [] and outside == []
    assert len(probe.network) >= 2, f"the trace missed the loopback probe's calls: {probe}"
    assert len(probe.dns) == 1, f"the trace did not see the probe's port-53 datagram as a lookup: {probe}"


def test_the_self_test_fails_when_onnxruntime_telemetry_was_on(tmp_path, monkeypatch):
    """The self-test cannot see the native DNS lookups, but it sees their causes and traces: onnxruntime
    imported without ORT_DISABLE_TELEMETRY, files written under ~/.cache/Microsoft during the run."""
    from station.selftest_checks import microsoft_cache_files, telemetry_findings

    home = tmp_path / "home"
    before = microsoft_cache_files(home)
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")
    monkeypatch.setitem(sys.modules, "onnxruntime", sys.modules.get("onnxruntime", object()))
    assert telemetry_findings(before, home) == []
    written = home / ".cache" / "Microsoft" / "DeveloperTools" / ".onnxruntime" / "deviceid"
    written.parent.mkdir(parents=True)
    written.write_text("x")
    assert any("deviceid" in f for f in telemetry_findings(before, home))
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY")
    assert any("telemetry on" in f for f in telemetry_findings(microsoft_cache_files(home), home))
