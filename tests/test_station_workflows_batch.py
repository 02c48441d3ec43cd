"""Batch dialog: a folder with corrupt files -> streamed rows, store records, filters, CSV + HTML."""
from __future__ import annotations

import csv
import html
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from station.demo import PartGenerator  # noqa: E402
from core.images import save_image_atomic  # noqa: E402
from workflow_helpers import make_context  # noqa: E402


@pytest.fixture
def ctx(tmp_path, monkeypatch, tiny_recipe_root):
    c = make_context(tmp_path, monkeypatch, recipes_from=tiny_recipe_root)
    yield c
    c.close()


@pytest.fixture
def batch_folder(tmp_path):
    gen = PartGenerator("bracket", (128, 128), seed=0)
    root = tmp_path / "incoming"
    for i in range(4):
        save_image_atomic(root / f"good_{i}.png", gen.good(40 + i).image)
    for i in range(3):
        save_image_atomic(root / "line2" / f"defect_{i}.png", gen.defective(60 + i).image)
    save_image_atomic(root / "odd <b>name</b> & co.png", gen.good(50).image)  # must be escaped in HTML
    (root / "bad.png").write_text("this is not an image")
    data = (root / "good_0.png").read_bytes()
    (root / "line2" / "truncated.png").write_bytes(data[: len(data) // 2])
    return root


def test_batch_with_corrupt_files_table_store_and_exports(qtbot, ctx, batch_folder, tmp_path):
    from station.qt.batch_dialog import BatchDialog
    from station.report import CSV_COLUMNS

    dlg = BatchDialog(ctx)
    qtbot.addWidget(dlg)
    dlg.show()
    try:
        assert dlg.product_combo.currentText() == "tiny"
        dlg.folder_edit.setText(str(batch_folder))
        arrived = []
        dlg.channel.rows_ready.connect(lambda rows: arrived.append(len(rows)))
        with qtbot.waitSignal(dlg.batch_finished, timeout=120000) as sig:
            dlg.start()
            assert dlg.running()
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        counts = sig.args[0]
        assert counts["files"] == 10 and counts["errors"] == 2
        assert counts["PASS"] + counts["FAIL"] + counts["REVIEW"] == 8
        assert sum(arrived) == 10  # every row came through the channel
        rows = {r.path.split("/")[-1]: r for r in dlg.rows()}
        assert rows["bad.png"].error_code == "not_an_image" and "not an image" in rows["bad.png"].error
        assert rows["truncated.png"].error_code == "truncated"
        for name, r in rows.items():
            if name.endswith(("bad.png", "truncated.png")):
                assert r.verdict == "" and r.thumbnail is None
            else:
                assert r.verdict in ("PASS", "FAIL", "REVIEW") and r.thumbnail.startswith(b"\x89PNG")
                assert set(r.scores) == {"patchcore", "gaussian"}
        assert any(rows[f"defect_{i}.png"].verdict != "PASS" for i in range(3))
        shown = {dlg.model.index(i, 1).data() for i in range(dlg.model.rowCount())}
        assert "line2/defect_0.png" in shown and "good_0.png" in shown  # relative to the chosen folder

        # the store has every file, errors included, as batch results; REVIEW parts kept artefacts
        stored = ctx.store.query_inspections(limit=None)
        assert len(stored) == 10 and {s.mode for s in stored} == {"batch"}
        assert sum(1 for s in stored if s.error) == 2
        kept = 0
        for s in stored:
            if s.decision == "REVIEW":
                assert s.image_path != s.source and s.heatmap_path
            if s.image_path and s.image_path != s.source:  # the original file, byte for byte
                assert Path(s.image_path).read_bytes() == Path(s.source).read_bytes()
                kept += 1
        assert kept >= counts["REVIEW"]
        assert len(ctx.store.pending_reviews()) == counts["REVIEW"]

        # table: filters by verdict and text; sorts by verdict
        assert dlg.proxy.rowCount() == 10
        dlg.verdict_filter.setCurrentIndex(dlg.verdict_filter.findData("ERROR"))
        assert dlg.proxy.rowCount() == 2
        dlg.text_filter.setText("truncated")
        assert dlg.proxy.rowCount() == 1
        assert "cut short" in dlg.proxy.index(0, 9).data()
        dlg.text_filter.setText("")
        dlg.verdict_filter.setCurrentIndex(0)
        dlg.table.sortByColumn(2, dlg.table.horizontalHeader().sortIndicatorOrder().AscendingOrder)
        assert dlg.proxy.index(9, 2).data() == "NOT INSPECTED"

        # exports
        csv_path, html_path = tmp_path / "out" / "batch.csv", tmp_path / "out" / "batch.html"
        with qtbot.waitSignal(dlg.exported, timeout=10000):
            dlg.export_csv(str(csv_path))
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        with qtbot.waitSignal(dlg.exported, timeout=10000):
            dlg.export_html(str(html_path))
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        table = list(csv.reader(csv_path.open(encoding="utf-8")))
        assert table[0] == CSV_COLUMNS and len(table) == 11
        by_path = {row[0].split("/")[-1]: row for row in table[1:]}
        assert set(by_path) == set(rows)
        assert by_path["bad.png"][1] == "" and "not an image" in by_path["bad.png"][9]
        assert by_path["good_1.png"][1] in ("PASS", "FAIL", "REVIEW") and float(by_path["good_1.png"][2]) > 0
        text = html_path.read_text(encoding="utf-8")
        for name in rows:
            assert html.escape(name) in text
        assert "<b>name</b>" not in text and "odd &lt;b&gt;name&lt;/b&gt; &amp; co.png" in text
        assert text.count("data:image/png;base64,") == 8
        assert "not inspected" in text and "<script" not in text

        # double-click a part: the viewer shows the heatmaps (kept, or made again from the file)
        from station.qt.part_viewer import PartViewer

        dlg._open(dlg.proxy.index(0, 1))
        viewer = dlg.findChild(PartViewer)
        assert viewer is not None
        qtbot.waitUntil(lambda: not viewer.view.busy(), timeout=30000)
        assert "PatchCore heatmap" in viewer.view.view_captions()
        viewer.reject()
    finally:
        dlg.shutdown()


def test_cancel_keeps_rows_so_far(qtbot, ctx, batch_folder):
    from station.qt.batch_dialog import BatchDialog

    dlg = BatchDialog(ctx, folder=str(batch_folder))
    qtbot.addWidget(dlg)
    dlg.show()
    try:
        dlg.start()
        with qtbot.waitSignal(dlg._task.cancelled, timeout=60000):
            dlg.reject()  # Esc while running cancels, it does not close
        assert dlg.isVisible()
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        assert len(dlg.rows()) < 10
        assert "Cancelled" in dlg.status.text()
        assert len(ctx.store.query_inspections(limit=None)) == len(dlg.rows())
    finally:
        dlg.shutdown()
