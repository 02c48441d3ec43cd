"""Batch dialog: a folder with corrupt files -> streamed rows, store records, filters, CSV + HTML."""
from __future__ import annotations

import csv
import html
import os
import threading
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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_the_dialog_counts_and_lists_the_skipped_entries_found_off_the_ui_thread(qtbot, ctx, tmp_path, monkeypatch):
    import station.batch
    from station.qt.batch_dialog import BatchDialog

    gen = PartGenerator("bracket", (128, 128), seed=0)
    root = tmp_path / "odd"
    save_image_atomic(root / "good.png", gen.good(70).image)
    hostile = "<img src=x> & <b>anim.gif"  # a name, never Qt rich text
    (root / hostile).write_bytes(b"GIF89a" + bytes(32))
    (root / "gone.png").symlink_to(root / "nowhere.png")
    os.mkfifo(root / "pipe.png")
    scanned_in = []
    real_scan = station.batch.scan_images

    def scan(*args, **kw):
        scanned_in.append(threading.current_thread())
        return real_scan(*args, **kw)

    monkeypatch.setattr(station.batch, "scan_images", scan)
    dlg = BatchDialog(ctx, folder=str(root))
    qtbot.addWidget(dlg)
    dlg.show()
    try:
        assert not dlg.skipped_toggle.isVisible() and not dlg.skipped_list.isVisible()
        with qtbot.waitSignal(dlg.batch_finished, timeout=120000) as sig:
            dlg.start()
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        assert sig.args[0]["files"] == 1 and len(dlg.rows()) == 1
        assert scanned_in and all(t is not threading.main_thread() for t in scanned_in)  # the UI thread never read the folder
        assert "3 files skipped" in dlg.summary.text()
        assert "3 files skipped" in dlg.status.text()
        # the list is open (a GIF, a broken link, a FIFO are worth a look): name and why, as plain text
        assert dlg.skipped_toggle.isVisible() and dlg.skipped_toggle.isChecked() and dlg.skipped_list.isVisible()
        items = [dlg.skipped_list.topLevelItem(i) for i in range(dlg.skipped_list.topLevelItemCount())]
        listed = {it.text(0): it.text(1) for it in items}
        assert set(listed) == {hostile, "gone.png", "pipe.png"}
        assert "GIF images are not accepted" in listed[hostile]
        assert "broken link" in listed["gone.png"] and "named pipe (FIFO)" in listed["pipe.png"]
        assert {s.shown_as for s in dlg.skipped()} == set(listed)
        dlg.skipped_toggle.click()  # collapsible
        assert not dlg.skipped_list.isVisible() and dlg.skipped_toggle.isVisible()
        dlg.skipped_toggle.click()
        assert dlg.skipped_list.isVisible()

        # a folder whose only extra is a notes file: counted and listed, the section stays closed
        clean = tmp_path / "clean"
        save_image_atomic(clean / "a.png", gen.good(71).image)
        (clean / "notes.txt").write_text("line 2")
        dlg.folder_edit.setText(str(clean))
        with qtbot.waitSignal(dlg.batch_finished, timeout=120000):
            dlg.start()
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        assert "1 file skipped" in dlg.summary.text() and "3 files" not in dlg.summary.text()
        assert dlg.skipped_toggle.isVisible() and not dlg.skipped_list.isVisible()
        assert dlg.skipped_list.topLevelItemCount() == 1 and dlg.skipped_list.topLevelItem(0).text(0) == "notes.txt"
    finally:
        dlg.shutdown()
