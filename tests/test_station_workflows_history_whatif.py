"""History filters and paging; threshold what-if transitions and Apply (a new version)."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QDate  # noqa: E402

from workflow_helpers import FAIL_RAW, FUSION, PASS_RAW, REVIEW_RAW, THRESHOLDS, inspection_from_raw  # noqa: E402

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
    from station.qt.history import HistoryWidget

    ids = fill_history(ctx)
    w = HistoryWidget(ctx, page_size=3)
    qtbot.addWidget(w)

    def apply(**kw):
        w.set_filters(**kw)
        qtbot.waitUntil(lambda: not w.busy(), timeout=10000)
        return [r.id for r in w.records()]

    try:
        day = QDate(2024, 5, 2)
        got = apply(since=day, until=day)
        assert got == [ids["err"], ids["p3"], ids["r2"]]  # newest first, a page of 3
        assert w.next_button.isEnabled() and not w.prev_button.isEnabled()
        w.go_to_page(1)
        qtbot.waitUntil(lambda: not w.busy(), timeout=10000)
        assert [r.id for r in w.records()] == [ids["f2"], ids["p2"], ids["r1"]]
        w.go_to_page(2)
        qtbot.waitUntil(lambda: not w.busy(), timeout=10000)
        assert [r.id for r in w.records()] == [ids["f1"], ids["p1"]] and not w.next_button.isEnabled()

        assert apply(verdict="FAIL") == [ids["f2"], ids["f1"]]  # the old FAIL is outside the dates
        assert {r.decision for r in w.records()} == {"FAIL"}
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
    from station.whatif import StoredScores, scaled_limits, simulate

    def rec(i, pc, g=None, **kw):
        raw = {"patchcore": pc} if g is None else {"patchcore": pc, "gaussian": g}
        decision = inspection_from_raw(raw).decision.value if g is not None else "PASS"
        return StoredScores(i, "REVIEW" if kw.get("unfamiliar") else decision, raw, **kw)

    recs = [
        rec(1, 5.0, 50.0),     # fused 1.0: PASS whatever the factor
        rec(2, 8.0, 80.0),     # fused 1.6: REVIEW (between 1.6 and 1.9)
        rec(3, 9.5, 95.0),     # fused 1.9: FAIL, no model sure it is good
        rec(4, 15.0, 150.0),   # fused 3.0: FAIL
        rec(5, 10.5, 50.0),    # fused 1.55, but PatchCore at its FAIL limit: REVIEW (models disagree)
        rec(6, 8.0, 80.0, review="good"),
        rec(7, 5.0, 50.0, unfamiliar=True),
        rec(8, 5.0),           # no Gaussian score: left out
        rec(9, 7.0, 70.0),     # fused 1.4: PASS
    ]
    assert [r.decision for r in recs[:7]] == ["PASS", "REVIEW", "FAIL", "FAIL", "REVIEW", "REVIEW", "REVIEW"]
    same = simulate(recs, *scaled_limits(THRESHOLDS, FUSION, "fused", 1.0))
    assert same.changed == 0 and same.total == 8 and same.skipped == 1
    up = simulate(recs, *scaled_limits(THRESHOLDS, FUSION, "fused", 1.2), 1.2)  # PASS below 1.92, FAIL from 2.28
    assert dict(up.transitions) == {("REVIEW", "PASS"): 2, ("FAIL", "PASS"): 1}
    assert up.good_before["REVIEW"] == 1 and up.good_after["PASS"] == 1 and up.good_after["REVIEW"] == 0
    down = simulate(recs, *scaled_limits(THRESHOLDS, FUSION, "fused", 0.8), 0.8)  # PASS below 1.28, FAIL from 1.52
    assert dict(down.transitions) == {("PASS", "REVIEW"): 1}  # 1.4 is now between the limits
    assert down.after["FAIL"] == 2 and down.after["PASS"] == 1
    # one model's limits scaled: PatchCore's FAIL limit at 12 no longer contradicts record 5
    pc_up = simulate(recs, *scaled_limits(THRESHOLDS, FUSION, "patchcore", 1.2), 1.2)
    assert ("REVIEW", "PASS") in pc_up.transitions


def test_budget_limits_set_every_limit_again_from_the_held_out_scores(tiny_recipe):
    from station.whatif import budget_limits

    thresholds, fusion = budget_limits(tiny_recipe, 0.01, 0.2)
    for m in tiny_recipe.models:
        assert thresholds[m].budget == 0.01 and thresholds[m].review_budget == 0.2
        assert thresholds[m].pass_limit <= tiny_recipe.threshold(m).pass_limit + 1e-9  # a larger review budget
    assert fusion.threshold.budget == 0.01 and fusion.weights == tiny_recipe.fusion.weights


def test_whatif_dialog_counts_and_apply_makes_new_version(qtbot, ctx, tiny_recipe_root):
    import shutil

    from station.qt.whatif_dialog import WhatIfDialog

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    known = ctx.load_recipe("tiny", 1).with_thresholds({**THRESHOLDS, "fused": FUSION.threshold},
                                                        "known limits for the test")
    known.manifest["fusion"] = FUSION.to_dict()
    known.save(ctx.recipes_root)  # v2 with the limits of workflow_helpers
    raws = [PASS_RAW, {"patchcore": 8.0, "gaussian": 80.0}, {"patchcore": 9.5, "gaussian": 95.0}, FAIL_RAW, REVIEW_RAW]
    ids = [ctx.store.add_inspection(inspection_from_raw(r, version=2)) for r in raws]
    ctx.store.add_inspection(inspection_from_raw(FAIL_RAW, version=1))  # another version: not counted
    ctx.store.add_error("x.png", "broken", recipe="tiny", recipe_version=2)
    ctx.store.add_review(ids[1], "good")
    ctx.store.add_review(ids[2], "defect")

    dlg = WhatIfDialog(ctx, product="tiny", version=2)
    qtbot.addWidget(dlg)
    try:
        qtbot.waitUntil(lambda: dlg.recipe is not None and not dlg.busy(), timeout=10000)
        assert dlg.recipe.version == 2 and len(dlg.records) == 5 and dlg.model() == "fused"
        assert dlg.simulated.changed == 0 and not dlg.apply_button.isEnabled()
        assert dlg.fail_budget.value() == 200 and dlg.review_budget.value() == 10
        dlg.slider.setValue(120)
        assert dlg.factor() == pytest.approx(1.2)
        qtbot.waitUntil(lambda: not dlg.busy() and dlg.simulated.factor == pytest.approx(1.2), timeout=10000)
        r = dlg.simulated
        assert dict(r.transitions) == {("REVIEW", "PASS"): 1, ("FAIL", "PASS"): 1}
        assert dlg.table.rowCount() == 2
        cells = {(dlg.table.item(i, 0).text(), dlg.table.item(i, 1).text()): dlg.table.item(i, 2).text()
                 for i in range(2)}
        assert cells == {("REVIEW", "PASS"): "1", ("FAIL", "PASS"): "1"}
        assert "2 of 5 parts would change verdict" == dlg.changed_label.text()
        assert "confirmed GOOD: rejected (FAIL) 0 → 0, sent to review 1 → 0" in dlg.good_label.text()
        assert "confirmed DEFECT: passed 0 → 1, sent to review 0 → 0" in dlg.good_label.text()

        dlg.note_edit.setText("fewer reviews on line 2")
        with qtbot.waitSignal(dlg.recipe_saved, timeout=30000) as sig:
            dlg.apply_button.click()
        assert sig.args == ["tiny", 3]
        qtbot.waitUntil(lambda: not dlg.busy(), timeout=10000)
        v3, v2 = ctx.load_recipe("tiny", 3), ctx.load_recipe("tiny", 2)
        t = v3.fusion.threshold
        assert (t.value, t.pass_limit) == pytest.approx((1.9 * 1.2, 1.6 * 1.2))
        assert v3.threshold("gaussian") == v2.threshold("gaussian")
        assert v2.fusion.threshold.value == pytest.approx(1.9)  # the old version is untouched
        assert v3.manifest["history"][-1]["note"] == "fewer reviews on line 2"
        assert v3.manifest["history"][-1]["from_version"] == 2
        assert "version 3" in dlg.status.text()
    finally:
        dlg.shutdown()


def test_history_source_cell_shows_the_lines_part_id_when_the_record_has_one():
    from core.store import StoredInspection
    from station.qt.history import HistoryModel

    rec = StoredInspection(id=1, ts="2024-05-01T12:00:00.000Z", source="/data/cam/part_7.png", recipe="w",
                           recipe_version=1, decision=None, error="x", part_id="P-7")
    assert HistoryModel.COLUMNS[4] == "Source"
    assert HistoryModel._text(rec, 4) == "P-7 (part_7.png)"
    assert HistoryModel._text(dataclasses.replace(rec, part_id=None), 4) == "part_7.png"
    assert HistoryModel._text(dataclasses.replace(rec, source=""), 4) == "P-7"
