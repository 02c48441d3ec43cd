"""Review queue: keyboard decisions land in the store (append-only), teach-back, live items, retrain."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from workflow_helpers import FAIL_RAW, PASS_RAW, REVIEW_RAW, add_part, inspection_from_raw  # noqa: E402


@pytest.fixture
def queue(qtbot, ctx):
    from station.qt.review_queue import ReviewQueueWidget

    w = ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    show_active(qtbot, w)
    yield w
    w.shutdown()


def show_active(qtbot, w):
    """Shortcuts only fire in the active window."""
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: w.isActiveWindow(), timeout=5000)


def wait_idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.view.busy(), timeout=10000)


def written(qtbot, w):
    """Decisions are written on the writer thread: wait until the window has heard back."""
    qtbot.waitUntil(lambda: w.writes_pending() == 0, timeout=10000)


def test_g_and_d_store_decisions_oldest_first_and_teach_back(qtbot, ctx):
    from station.qt.review_queue import ReviewQueueWidget
    from station.teach_back import taught_name

    first = add_part(ctx, REVIEW_RAW, 0)
    add_part(ctx, PASS_RAW, 1)  # not queued
    second = add_part(ctx, REVIEW_RAW, 2)
    w = ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    show_active(qtbot, w)
    try:
        assert w.pending_count() == 2
        assert w.current_record().id == first  # oldest first
        wait_idle(qtbot, w)
        assert "Part" in w.view.view_captions()
        assert "PatchCore heatmap" in w.view.view_captions()
        assert "Gaussian heatmap" in w.view.view_captions()
        assert "disagree" in w.view.reasons_label.text()

        with qtbot.waitSignal(w.decision_recorded) as sig:
            qtbot.keyClick(w, Qt.Key.Key_G)
        assert sig.args == [first, "good"]
        assert ctx.store.get_inspection(first).review == "good"
        assert w.current_record().id == second  # moved on

        # a note, Enter, then D
        qtbot.keyClicks(w.note, "dent near the hole")
        qtbot.keyClick(w.note, Qt.Key.Key_Return)
        qtbot.keyClick(w, Qt.Key.Key_D)
        written(qtbot, w)
        rec = ctx.store.get_inspection(second)
        assert rec.review == "defect"
        assert rec.review_note == "dent near the hole"
        assert w.pending_count() == 0
        assert ctx.store.pending_reviews() == []

        rg = ctx.store.get_inspection(first)
        good_copy = ctx.product_images("tiny", "good") / taught_name(rg)
        defect_copy = ctx.product_images("tiny", "defect") / taught_name(rec)
        assert good_copy.read_bytes() == open(rg.image_path, "rb").read()
        assert defect_copy.is_file()

        # B goes back; a second decision supersedes the first and keeps both in the store
        qtbot.keyClick(w, Qt.Key.Key_B)
        assert w.current_record().id == second  # the last decided part
        qtbot.keyClick(w, Qt.Key.Key_B)
        assert w.current_record().id == first
        qtbot.keyClick(w, Qt.Key.Key_D)
        written(qtbot, w)
        history = ctx.store.reviews_for(first)
        assert [r.decision for r in history] == ["good", "defect"]
        assert ctx.store.get_inspection(first).review == "defect"
        assert not good_copy.exists()  # teach-back follows the latest decision
        assert (ctx.product_images("tiny", "defect") / good_copy.name).is_file()
        assert list(ctx.product_images("tiny", "good").iterdir()) == []
    finally:
        w.shutdown()


def test_live_items_fails_and_refresh(qtbot, ctx, queue):
    assert queue.pending_count() == 0
    rid = add_part(ctx, REVIEW_RAW, 3)
    fid = add_part(ctx, FAIL_RAW, 4)
    queue.on_inspection_recorded(rid, inspection_from_raw(REVIEW_RAW))
    queue.on_inspection_recorded(fid, inspection_from_raw(FAIL_RAW))
    assert queue.pending_count() == 1  # FAIL is not queued by default
    assert queue.current_record().id == rid
    ctx.settings.queue_fails = True
    queue.refresh()
    assert queue.pending_count() == 2
    assert [queue._record(i).id for i in range(queue.list.count())] == [rid, fid]
    wait_idle(qtbot, queue)


def test_part_without_image_can_be_decided_but_not_taught(qtbot, ctx):
    from station.qt.review_queue import ReviewQueueWidget

    pid = add_part(ctx, REVIEW_RAW, 5, keep=False)
    w = ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    show_active(qtbot, w)
    try:
        qtbot.keyClick(w, Qt.Key.Key_G)
        written(qtbot, w)
        assert ctx.store.get_inspection(pid).review == "good"
        assert "not taught in" in w.status.text()
        wait_idle(qtbot, w)
    finally:
        w.shutdown()


def test_retrain_uses_taught_and_original_images(qtbot, ctx, tiny_recipe_root, tmp_path, monkeypatch):
    import shutil

    import station.qt.review_queue as rq
    import station.teach_back as tb
    from core.recipe import load_recipe

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    ids = [add_part(ctx, REVIEW_RAW, i) for i in range(3)]
    parent = ctx.load_recipe("tiny")
    assert tb.training_set(ctx, parent).summary.startswith("tiny v1 does not say")

    seen = {}

    def fake_train(good, defect=(), *, product, config, progress, cancel, parent, sources):
        seen.update(good=list(good), defect=list(defect), product=product, config=config,
                    parent=parent.version, sources=sources)
        progress("Fitting Gaussian model", 0.5)
        return load_recipe(tiny_recipe_root / "tiny" / "v0001")

    monkeypatch.setattr(tb, "train_recipe", fake_train)
    w = rq.ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    show_active(qtbot, w)
    try:
        qtbot.keyClick(w, Qt.Key.Key_G)
        qtbot.keyClick(w, Qt.Key.Key_G)
        qtbot.keyClick(w, Qt.Key.Key_D)
        written(qtbot, w)
        assert w.product_combo.currentText() == "tiny"
        assert "2 good, 1 defect" in w.taught_label.text()
        with qtbot.waitSignal(w.recipe_saved, timeout=20000) as sig:
            w.retrain_button.click()
        assert sig.args == ["tiny", 2]
        qtbot.waitUntil(lambda: not w.retraining())
        assert len(seen["good"]) == 2 and len(seen["defect"]) == 1
        assert seen["parent"] == 1 and seen["config"].size == 128
        assert seen["sources"]["taught_good"].endswith("good")
        assert "taught-in" in w.status.text() and "version 2" in w.status.text()
        assert ctx.versions("tiny") == [1, 2]  # the previous version stays
        # originals: a recipe whose sources name a folder that still exists
        orig = tmp_path / "orig"
        orig.mkdir()
        for p in ctx.product_images("tiny", "good").iterdir():
            shutil.copy(p, orig / ("o_" + p.name))
        parent.manifest["training"]["sources"] = {"good": str(orig)}
        ts = tb.training_set(ctx, parent)
        assert len(ts.good) == 4 and "plus the original" in ts.summary
        parent.manifest["training"]["sources"] = {"good": str(tmp_path / "gone")}
        assert "no longer available" in tb.training_set(ctx, parent).summary
        assert len(ids) == 3

        # Cancel: the training stops, nothing is saved
        from core.coreset import Cancelled

        def slow_train(good, defect=(), *, progress, cancel, **kw):
            while not cancel():
                progress("Fitting Gaussian model", 0.4)
                time.sleep(0.01)
            raise Cancelled()

        monkeypatch.setattr(tb, "train_recipe", slow_train)
        w.retrain_button.click()
        qtbot.waitUntil(lambda: "Fitting Gaussian model" in w.retrain_progress.format(), timeout=10000)
        w.retrain_cancel.click()
        qtbot.waitUntil(lambda: not w.retraining(), timeout=10000)
        assert "cancelled: nothing was saved" in w.status.text()
        assert ctx.versions("tiny") == [1, 2]
        wait_idle(qtbot, w)
    finally:
        w.shutdown()



def test_decisions_are_written_off_the_ui_thread_and_a_refused_one_still_waits(qtbot, ctx, monkeypatch):
    import threading

    from station.qt.review_queue import ReviewQueueWidget

    ok_id = add_part(ctx, REVIEW_RAW, 6)
    bad_id = add_part(ctx, REVIEW_RAW, 7)
    threads, real = [], ctx.store.add_review

    def add_review(iid, label, note="", operator=""):
        threads.append(threading.current_thread())
        if iid == bad_id:
            raise OSError(28, "No space left on device")
        return real(iid, label, note, operator=operator)

    monkeypatch.setattr(ctx.store, "add_review", add_review)
    w = ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    show_active(qtbot, w)
    try:
        qtbot.keyClick(w, Qt.Key.Key_G)
        qtbot.keyClick(w, Qt.Key.Key_D)
        written(qtbot, w)
        assert threads and all(t is not threading.main_thread() for t in threads)  # never the UI thread
        assert ctx.store.get_inspection(ok_id).review == "good"
        assert ctx.store.get_inspection(bad_id).review is None
        assert "NOT saved" in w.status.text() and "No space left" in w.status.text()
        assert w.pending_count() == 1  # the refused one waits again, shown undecided
        assert not w.list.item(1).text().startswith("✓")
    finally:
        w.shutdown()
