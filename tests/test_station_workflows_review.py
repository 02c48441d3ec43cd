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


def test_retrain_confirms_trains_in_the_background_and_saves_only_on_accept(qtbot, ctx, tiny_recipe_root,
                                                                          monkeypatch):
    """The Retrain button, end to end with the training faked (tests/test_station_retrain.py trains for real)."""
    import shutil

    import station.retrain as rt
    from core.recipe import load_recipe
    from station.qt.retrain_dialog import RetrainConfirmDialog, RetrainResultDialog

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    for i in range(11):
        add_part(ctx, REVIEW_RAW, i)

    seen = {}

    def fake_train(good, defect=(), *, product, config, progress, cancel, parent, sources):
        seen.update(good=list(good), defect=list(defect), product=product, config=config,
                    parent=parent.version, sources=sources)
        progress("Fitting Gaussian model", 0.5)
        return load_recipe(tiny_recipe_root / "tiny" / "v0001")

    def dialog(w, cls):
        qtbot.waitUntil(lambda: any(d.isVisible() for d in w.findChildren(cls)), timeout=20000)
        qtbot.waitUntil(lambda: not w.retraining(), timeout=20000)
        return next(d for d in w.findChildren(cls) if d.isVisible())

    monkeypatch.setattr(rt, "train_recipe", fake_train)
    w = rq_widget(qtbot, ctx)
    try:
        qtbot.keyClick(w, Qt.Key.Key_G)
        written(qtbot, w)
        assert w.product_combo.currentText() == "tiny"
        assert "1 good, 0 defect" in w.taught_label.text()
        # one good part and no training folder: refused, nothing trains
        w.retrain_button.click()
        refused = dialog(w, RetrainConfirmDialog)
        assert "v1 does not say where its training images are" in refused.text()
        assert "at least 10" in refused.refusal.text() and not refused.start_button.isEnabled()
        refused.reject()
        assert "at least 10" in w.status.text() and seen == {} and ctx.versions("tiny") == [1]

        show_active(qtbot, w)  # the keys go to the queue again
        for _ in range(9):
            qtbot.keyClick(w, Qt.Key.Key_G)
        qtbot.keyClick(w, Qt.Key.Key_D)
        written(qtbot, w)
        assert "10 good, 1 defect" in w.taught_label.text()
        w.retrain_button.click()
        confirm = dialog(w, RetrainConfirmDialog)
        assert "10 good images in all" in confirm.text() and "1 defect image in all" in confirm.text()
        assert "v2 of tiny, trained from v1" in confirm.text()
        confirm.start_button.click()
        result = dialog(w, RetrainResultDialog)
        assert len(seen["good"]) == 10 and len(seen["defect"]) == 1
        assert seen["parent"] == 1 and seen["config"].size == 128
        assert seen["sources"]["taught_good"].endswith("good")
        assert ctx.versions("tiny") == [1]  # nothing saved before Accept
        with qtbot.waitSignal(w.recipe_saved, timeout=20000) as sig:
            result.accept_button.click()
        assert sig.args == ["tiny", 2]
        qtbot.waitUntil(lambda: not w.retraining())
        assert "taught in" in w.status.text() and "version 2" in w.status.text()
        assert ctx.versions("tiny") == [1, 2]  # the previous version stays

        # Cancel: the training stops, nothing is saved
        from core.coreset import Cancelled

        def slow_train(good, defect=(), *, progress, cancel, **kw):
            while not cancel():
                progress("Fitting Gaussian model", 0.4)
                time.sleep(0.01)
            raise Cancelled()

        monkeypatch.setattr(rt, "train_recipe", slow_train)
        w.retrain_button.click()
        dialog(w, RetrainConfirmDialog).start_button.click()
        qtbot.waitUntil(lambda: "Fitting Gaussian model" in w.retrain_progress.format(), timeout=10000)
        w.retrain_cancel.click()
        qtbot.waitUntil(lambda: not w.retraining(), timeout=10000)
        assert "cancelled: nothing was saved" in w.status.text()
        assert ctx.versions("tiny") == [1, 2]
        assert not any(d.isVisible() for d in w.findChildren(RetrainResultDialog))
        wait_idle(qtbot, w)
    finally:
        w.shutdown()


def rq_widget(qtbot, ctx):
    from station.qt.review_queue import ReviewQueueWidget

    w = ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    show_active(qtbot, w)
    return w


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
