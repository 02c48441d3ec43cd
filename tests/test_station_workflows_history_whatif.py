"""History filters and paging; threshold what-if transitions and Apply (a new version)."""
from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QDate  # noqa: E402

from workflow_helpers import FAIL_RAW, PASS_RAW, REVIEW_RAW, THRESHOLDS, inspection_from_raw  # noqa: E402

DAY = dt.datetime(2024, 5, 2, 12, 0, tzinfo=dt.timezone.utc)


def fill_history(ctx):
    s = ctx.store
    ids = {}
    for i, (name, raw) in enumerate([("p1", PASS_RAW), ("f1", FAIL_RAW), ("r1", REVIEW_RAW), ("p2", PASS_RAW),
                                     ("f2", FAIL_RAW), ("r2", REVIEW_RAW), ("p3", PASS_RAW)]):
        ids[name] = s.add_inspection(inspection_from_raw(raw, source=f"{name}.png"), mode="live",
                                     ts=DAY + dt.timedelta(minutes=i))
    ids["err"] = s.add_error("broken.png", "The file is empty (0 bytes).", recipe="tiny", recipe_version=1,
                             ts=DAY + dt.timedelta(minutes=10))
    ids["old"] = s.add_inspection(inspection_from_raw(FAIL_RAW, source="old.png"), ts=DAY - dt.timedelta(days=3))
    s.add_review(ids["r1"], "good")
    s.add_review(ids["f2"], "good")
    s.add_review(ids["f2"], "defect")  # supersedes
    return ids


def test_history_filters_and_pages(qtbot, ctx):
    from station.history import HistoryWidget

    ids = fill_history(ctx)
    w = HistoryWidget(ctx, page_size=3)
    qtbot.addWidget(w)

    def apply(**kw):
        w.set_filters(**kw)
        qtbot.waitUntil(lambda: not w.busy(), timeout=10000)
        return [r["id"] for r in w.records()]

    try:
        day = QDate(2024, 5, 2)
        got = apply(since=day, until=day)
        assert got == [ids["err"], ids["p3"], ids["r2"]]  # newest first, a page of 3
        assert w.next_button.isEnabled() and not w.prev_button.isEnabled()
        w.go_to_page(1)
        qtbot.waitUntil(lambda: not w.busy(), timeout=10000)
        assert [r["id"] for r in w.records()] == [ids["f2"], ids["p2"], ids["r1"]]
        w.go_to_page(2)
        qtbot.waitUntil(lambda: not w.busy(), timeout=10000)
        assert [r["id"] for r in w.records()] == [ids["f1"], ids["p1"]] and not w.next_button.isEnabled()

        assert apply(verdict="FAIL") == [ids["f2"], ids["f1"]]  # the old FAIL is outside the dates
        assert {r["decision"] for r in w.records()} == {"FAIL"}
        assert w.model.index(0, 3).data() == "defect"
        assert apply(since=QDate(2024, 4, 28)) == [ids["f2"], ids["f1"], ids["old"]]
        assert apply(verdict="ERROR") == [ids["err"]]
        assert w.model.index(0, 2).data() == "NOT INSPECTED"
        assert apply(verdict="", review="good", since=day) == [ids["r1"]]
        assert apply(review="defect") == [ids["f2"]]
        got = apply(review="none", verdict="PASS")
        assert got == [ids["p3"], ids["p2"], ids["p1"]]
        assert apply(verdict="REVIEW", review="none") == [ids["r2"]]
        # a part whose image was not kept: a plain message, no viewer
        w.table.selectRow(0)
        w._open(w.model.index(0, 0))
        assert "not kept" in w.status.text()
    finally:
        w.shutdown()


def test_simulate_counts_transitions():
    from station.whatif import StoredScores, simulate

    recs = [
        StoredScores(1, "PASS", {"patchcore": 5.0, "autoencoder": 50.0}),
        StoredScores(2, "REVIEW", {"patchcore": 10.5, "autoencoder": 50.0}),
        StoredScores(3, "FAIL", {"patchcore": 12.0, "autoencoder": 150.0}),
        StoredScores(4, "FAIL", {"patchcore": 15.0, "autoencoder": 150.0}),
        StoredScores(5, "REVIEW", {"patchcore": 12.0, "autoencoder": 50.0}),
        StoredScores(6, "REVIEW", {"patchcore": 10.0, "autoencoder": 50.0}, review="good"),
        StoredScores(7, "REVIEW", {"patchcore": 5.0, "autoencoder": 50.0}, unfamiliar=True),
        StoredScores(8, "PASS", {"patchcore": 5.0}),  # no autoencoder score: left out
        StoredScores(9, "PASS", {"patchcore": 8.0, "autoencoder": 50.0}),
    ]
    same = simulate(recs, THRESHOLDS, "patchcore", 1.0)
    assert same.changed == 0 and same.total == 8 and same.skipped == 1
    up = simulate(recs, THRESHOLDS, "patchcore", 1.2)  # limit 12, unsure band 10.8 .. 13.2
    assert dict(up.transitions) == {("REVIEW", "PASS"): 2, ("FAIL", "REVIEW"): 1}
    assert up.good_before["REVIEW"] == 1 and up.good_after["PASS"] == 1 and up.good_after["REVIEW"] == 0
    down = simulate(recs, THRESHOLDS, "patchcore", 0.8)  # limit 8, band 7.2 .. 8.8
    assert dict(down.transitions) == {("PASS", "REVIEW"): 1}  # 8.0 is now inside the band
    assert down.after["REVIEW"] == 5  # 2, 5 and 6: the models disagree; 7: unfamiliar; 9: near the limit
    assert down.after["FAIL"] == 2 and down.after["PASS"] == 1


def test_whatif_dialog_counts_and_apply_makes_new_version(qtbot, ctx, tiny_recipe_root):
    import shutil

    from station.whatif import WhatIfDialog

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    known = ctx.load_recipe("tiny", 1).with_thresholds(dict(THRESHOLDS), "known limits for the test")
    known.save(ctx.recipes_root)  # v2 with patchcore 10 (band 9..11), autoencoder 100 (90..110)
    raws = [PASS_RAW, {"patchcore": 10.5, "autoencoder": 50.0}, {"patchcore": 12.0, "autoencoder": 150.0},
            FAIL_RAW, REVIEW_RAW]
    ids = [ctx.store.add_inspection(inspection_from_raw(r, version=2)) for r in raws]
    ctx.store.add_inspection(inspection_from_raw(FAIL_RAW, version=1))  # another version: not counted
    ctx.store.add_error("x.png", "broken", recipe="tiny", recipe_version=2)
    ctx.store.add_review(ids[1], "good")
    ctx.store.add_review(ids[2], "defect")

    dlg = WhatIfDialog(ctx, product="tiny", version=2)
    qtbot.addWidget(dlg)
    try:
        qtbot.waitUntil(lambda: dlg.recipe is not None and not dlg.busy(), timeout=10000)
        assert dlg.recipe.version == 2 and len(dlg.records) == 5
        assert dlg.result.changed == 0 and not dlg.apply_button.isEnabled()
        dlg.slider.setValue(120)
        assert dlg.factor() == pytest.approx(1.2)
        qtbot.waitUntil(lambda: not dlg.busy() and dlg.result.factor == pytest.approx(1.2), timeout=10000)
        r = dlg.result
        assert dict(r.transitions) == {("REVIEW", "PASS"): 2, ("FAIL", "REVIEW"): 1}
        assert dlg.table.rowCount() == 2
        cells = {(dlg.table.item(i, 0).text(), dlg.table.item(i, 1).text()): dlg.table.item(i, 2).text()
                 for i in range(2)}
        assert cells == {("REVIEW", "PASS"): "2", ("FAIL", "REVIEW"): "1"}
        assert "3 of 5 parts would change verdict" == dlg.changed_label.text()
        assert "confirmed GOOD: rejected (FAIL) 0 → 0, sent to review 1 → 0" in dlg.good_label.text()
        assert "confirmed DEFECT: passed 0 → 0, sent to review 0 → 1" in dlg.good_label.text()

        dlg.note_edit.setText("fewer reviews on line 2")
        with qtbot.waitSignal(dlg.recipe_saved, timeout=30000) as sig:
            dlg.apply_button.click()
        assert sig.args == ["tiny", 3]
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        v3, v2 = ctx.load_recipe("tiny", 3), ctx.load_recipe("tiny", 2)
        t = v3.threshold("patchcore")
        assert (t.value, t.low, t.high) == pytest.approx((12.0, 10.8, 13.2))
        assert v3.threshold("autoencoder") == v2.threshold("autoencoder")
        assert v2.threshold("patchcore").value == pytest.approx(10.0)  # the old version is untouched
        assert v3.manifest["history"][-1]["note"] == "fewer reviews on line 2"
        assert v3.manifest["history"][-1]["from_version"] == 2
        assert "version 3" in dlg.status.text()
    finally:
        dlg.shutdown()
