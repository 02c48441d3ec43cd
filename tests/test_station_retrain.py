"""Retrain like a calibration: confirm what is used, copy the original images into the data folder,
train in the background, show the result, save only on Accept, keep a what-if's limits.

Plain tests drive ``station.retrain`` without Qt; the Qt tests drive the review queue's Retrain
button and the real dialogs, with real (tiny: 96-px parts at a 64-px working size) trainings.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from core.images import save_image_atomic
from core.trainer import TrainConfig
from station.demo import PartGenerator
from workflow_helpers import REVIEW_RAW, add_part

PRODUCT = "bracket"
N_STICK = 10
FAST = TrainConfig(size=64, fine_size=64, resolution="base", min_good=10, gaussian_folds=2, synthetic_images=8,
                   synthetic_per_image=1)


@pytest.fixture(scope="module")
def stick_images():
    gen = PartGenerator("bracket", (96, 96), seed=5)
    return [gen.good(i).image for i in range(N_STICK)]


@pytest.fixture(scope="module")
def base_recipe_dir(stick_images, tmp_path_factory) -> Path:
    """A 'bracket' recipe trained once for the module; each test saves it as its own v1."""
    from core.trainer import train_recipe

    root = tmp_path_factory.mktemp("retrain-base")
    return train_recipe(stick_images, product=PRODUCT, config=FAST).save(root)


@pytest.fixture
def stick(tmp_path, stick_images) -> Path:
    """The original training folder on a 'USB stick' (outside the station's data folder)."""
    folder = tmp_path / "usb" / "good"
    for i, im in enumerate(stick_images):
        save_image_atomic(folder / f"good_{i:03d}.png", im)
    return folder


def save_parent(ctx, base_recipe_dir, sources: dict):
    """The base recipe saved as ``ctx``'s newest version of 'bracket', trained from ``sources``."""
    from core.recipe import load_recipe

    recipe = load_recipe(base_recipe_dir)
    recipe.manifest["training"]["sources"] = dict(sources)
    recipe.save(ctx.recipes_root)
    return recipe


def teach(ctx, label: str, n: int, start: int = 0) -> list[int]:
    """``n`` stored REVIEW parts decided ``label`` (stored and taught back, as the review queue does)."""
    from station.review import record_decision

    ids = []
    for i in range(start, start + n):
        iid = add_part(ctx, REVIEW_RAW, i, recipe=PRODUCT)
        assert record_decision(ctx, ctx.store.get_inspection(iid), label).kind == "ok"
        ids.append(iid)
    return ids


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- plain: the plan, the copies, the limits ---------------------------------------------------------
def test_the_plan_counts_distinct_images_per_folder_and_names_the_copies(ctx, base_recipe_dir, stick):
    from station.retrain import COPIES_FOLDER, make_plan

    save_parent(ctx, base_recipe_dir, {"good": str(stick), "defect": ""})
    teach(ctx, "good", 2)
    teach(ctx, "defect", 1, start=5)
    shutil.copy(stick / "good_000.png", stick / "same_picture_again.png")  # a duplicate by content
    stages = []
    plan = make_plan(ctx, PRODUCT, lambda s, f: stages.append((s, f)))
    assert stages[-1][1] == 1.0
    assert (plan.parent_version, plan.new_version, plan.product) == (1, 2, PRODUCT)
    assert plan.n_good == 2 + N_STICK and plan.n_defect == 1 and not plan.refusal
    original = next(f for f in plan.folders if f.role == "original")
    assert original.path == str(stick) and original.found == N_STICK + 1 and original.used == N_STICK
    assert original.duplicates == 1 and not original.missing
    copies = Path(original.copy_to)
    assert copies.parent == ctx.products_root / PRODUCT / COPIES_FOLDER / "good"
    assert plan.sources["good"] == str(copies) and plan.sources["copied_from"]["good"] == str(stick)
    assert plan.sources["taught_good"] == str(ctx.product_images(PRODUCT, "good"))
    text = "\n".join(plan.lines())
    assert "v2 of bracket, trained from v1" in text
    assert "12 good images in all" in text and "1 defect image in all" in text
    assert f"2 images taught in from the review queue, in {ctx.product_images(PRODUCT, 'good')}" in text
    assert f"{N_STICK + 1} in the original training folder {stick}: {N_STICK} will be copied to {copies}" in text
    assert "1 duplicate left out" in text
    assert "Limits: the budgets of v1: about 1 good part in 200 auto-FAILed and 1 in 10 sent to REVIEW" in text


def test_copies_are_atomic_content_named_made_once_and_used_when_the_stick_is_gone(ctx, base_recipe_dir, stick):
    from station.retrain import copy_originals, make_plan

    save_parent(ctx, base_recipe_dir, {"good": str(stick)})
    plan = make_plan(ctx, PRODUCT)
    assert len(plan.to_copy) == N_STICK
    assert copy_originals(plan) == N_STICK
    copies = Path(next(f.copy_to for f in plan.folders if f.role == "original"))
    files = sorted(copies.iterdir())
    assert len(files) == N_STICK and not [p for p in files if p.name.startswith(".")]  # no temporary files left
    assert {sha(p) for p in files} == {sha(p) for p in stick.iterdir()}
    assert all(p.stem.endswith(sha(p)[:12]) for p in files)  # named by content
    again = make_plan(ctx, PRODUCT)
    assert again.to_copy == [] and again.n_good == N_STICK
    assert f"({N_STICK} copied before)" in "\n".join(again.lines())
    shutil.rmtree(stick.parent)  # the stick is removed
    gone = make_plan(ctx, PRODUCT)
    assert gone.n_good == N_STICK and not gone.refusal
    assert {im.path.parent for im in gone.of("good")} == {copies}
    text = "\n".join(gone.lines())
    assert f"the original training folder {stick} is MISSING" in text and f"{N_STICK} images from the copies" in text


def test_too_few_good_images_are_refused_naming_the_missing_folder(ctx, base_recipe_dir, stick, monkeypatch):
    import station.retrain as rt

    save_parent(ctx, base_recipe_dir, {"good": str(stick)})
    shutil.rmtree(stick.parent)
    teach(ctx, "good", 3)
    plan = rt.make_plan(ctx, PRODUCT)
    assert plan.n_good == 3 and plan.missing == [str(stick)]
    assert "training needs at least 10, and only 3 were found (3 taught in)" in plan.refusal
    assert str(stick) in plan.refusal and "is missing" in plan.refusal and "at least 7 more good parts" in plan.refusal
    monkeypatch.setattr(rt, "train_recipe", lambda *a, **k: pytest.fail("a training that can only fail was started"))
    with pytest.raises(rt.RetrainError, match="at least 10"):
        rt.retrain(ctx, plan)


def test_what_if_limits_are_detected_kept_or_reset(ctx, base_recipe_dir, stick, monkeypatch):
    import station.retrain as rt
    from core.calibration import DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET
    from station.whatif import budget_limits, scaled_limits

    parent = save_parent(ctx, base_recipe_dir, {"good": str(stick)})
    plan = rt.make_plan(ctx, PRODUCT)
    assert not plan.limits_changed and plan.factors == {}
    # a what-if: budgets 1 in 500 / 1 in 20, and the combined score's limits x1.2 -> v2
    thresholds, fusion = budget_limits(parent, 1 / 500, 1 / 20)
    thresholds, fusion = scaled_limits(thresholds, fusion, "fused", 1.2, parent)
    assert fusion is not None and fusion.threshold is not None
    parent.with_thresholds({**thresholds, "fused": fusion.threshold}, "What-if: stricter for the audit",
                           budgets=(1 / 500, 1 / 20)).save(ctx.recipes_root)
    plan = rt.make_plan(ctx, PRODUCT)
    assert plan.parent_version == 2 and plan.limits_changed and plan.limits_note == "What-if: stricter for the audit"
    assert plan.budgets == pytest.approx((1 / 500, 1 / 20)) and plan.factors == {"fused": pytest.approx(1.2)}
    kept = plan.limits_words()
    assert "changed by an engineer (What-if: stricter for the audit)" in kept and "1 good part in 500" in kept
    assert "1 in 20 sent to REVIEW" in kept and "the limits set by hand: Combined x1.20" in kept
    assert plan.config_for().false_reject_budget == pytest.approx(1 / 500)
    assert (plan.config_for(reset=True).false_reject_budget, plan.config_for(reset=True).review_budget) == (
        DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET)
    assert "reset to the defaults" in plan.limits_words(reset=True)

    seen = []
    real = rt.train_recipe

    def train(good, defect=(), **kw):
        seen.append(kw["config"])
        return real(good, defect, **kw)

    monkeypatch.setattr(rt, "train_recipe", train)
    done = rt.retrain(ctx, plan)
    assert seen[-1].false_reject_budget == pytest.approx(1 / 500) and seen[-1].review_budget == pytest.approx(1 / 20)
    new = done.recipe
    assert new.budgets == pytest.approx((1 / 500, 1 / 20))
    assert "manual x1.200" in new.fusion.threshold.method  # the hand factor applied again to the new limits
    assert new.manifest["history"][-1]["change"] == "retrain" and new.manifest["history"][-1]["limits"] == "kept"
    assert new.training["sources"]["good"].startswith(str(ctx.products_root / PRODUCT))
    assert ctx.versions(PRODUCT) == [1, 2]  # retrain() saves nothing
    version = rt.save_job(ctx, done)(lambda s, f: None, lambda: False)[1]
    assert version == 3
    # the retrained version still counts as changed (its budgets), and a reset clears it
    plan3 = rt.make_plan(ctx, PRODUCT)
    assert plan3.limits_changed and plan3.parent_version == 3
    reset = rt.retrain(ctx, plan3, reset=True)
    assert reset.recipe.budgets == (DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET)
    assert "manual" not in reset.recipe.fusion.threshold.method
    assert reset.recipe.manifest["history"][-1]["limits"] == "reset"


# -- Qt: the review queue's Retrain button, the dialogs --------------------------------------------
def _qt():
    pytest.importorskip("pytestqt")


@pytest.fixture
def queue(qtbot, ctx):
    _qt()
    from station.qt.review_queue import ReviewQueueWidget

    w = ReviewQueueWidget(ctx)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.shutdown()


def open_dialog(qtbot, w, cls, timeout=30000):
    qtbot.waitUntil(lambda: any(d.isVisible() for d in w.findChildren(cls)), timeout=timeout)
    return next(d for d in w.findChildren(cls) if d.isVisible())


def no_dialog(w) -> bool:
    """No retrain dialog is open (a closed one is deleted)."""
    return not any(d.isVisible() for cls in retrain_dialogs() for d in w.findChildren(cls))


def retrain_dialogs():
    from station.qt.retrain_dialog import RetrainConfirmDialog, RetrainResultDialog

    return RetrainConfirmDialog, RetrainResultDialog


def confirm(qtbot, queue):
    queue.refresh()
    assert queue.product_combo.currentText() == PRODUCT
    queue.retrain_button.click()
    dlg = open_dialog(qtbot, queue, retrain_dialogs()[0])
    qtbot.waitUntil(lambda: not queue.retraining(), timeout=10000)  # the look at the images has ended
    return dlg


def test_confirm_then_accept_saves_the_next_version_trained_on_the_copies(qtbot, ctx, queue, base_recipe_dir,
                                                                         stick):
    from station.qt.calibration_result import budget_words

    save_parent(ctx, base_recipe_dir, {"good": str(stick), "defect": ""})
    teach(ctx, "good", 2)
    teach(ctx, "defect", 1, start=5)
    busy = []
    queue.busy_changed.connect(busy.append)
    dlg = confirm(qtbot, queue)
    text = dlg.text()
    assert "Retrain bracket: v2 of bracket, trained from v1" in text
    assert "12 good images in all" in text and "1 defect image in all" in text
    assert str(ctx.product_images(PRODUCT, "good")) in text and str(stick) in text and "will be copied to" in text
    assert dlg.start_button.isEnabled() and not dlg.reset_box.isVisible()  # nothing to reset
    assert not queue.retraining() and ctx.versions(PRODUCT) == [1]  # nothing started before the confirmation
    dlg.start_button.click()
    result = open_dialog(qtbot, queue, retrain_dialogs()[1], timeout=60000)
    qtbot.waitUntil(lambda: not queue.retraining(), timeout=10000)
    assert busy == [True, False]  # the owner paused inspection for the training only
    assert ctx.versions(PRODUCT) == [1]  # trained, not saved
    # the calibration wizard's result page: histogram, budgets in words, synthetic-defect check
    assert result.page.histograms and "fused" in result.page.histograms
    assert result.page.headline.text() == budget_words(result.recipe)
    assert "Synthetic-defect check" in result.page.details.text()
    assert "Trained on 12 good (2 taught in) and 1 defect (1 taught in) images" in result.summary.text()
    with qtbot.waitSignal(queue.recipe_saved, timeout=20000) as sig:
        result.accept_button.click()
    assert sig.args == [PRODUCT, 2]
    qtbot.waitUntil(lambda: not queue.retraining(), timeout=10000)
    assert no_dialog(queue) and ctx.versions(PRODUCT) == [1, 2]
    assert "Saved bracket version 2" in queue.status.text()
    new = ctx.load_recipe(PRODUCT)
    assert new.version == 2 and new.training["parent_version"] == 1
    assert new.training["n_good"] == 12 and new.training["n_defect"] == 1
    copies = Path(new.training["sources"]["good"])
    assert copies.is_dir() and copies.is_relative_to(ctx.products_root / PRODUCT / "training" / "good")
    assert sorted(sha(p) for p in copies.iterdir()) == sorted(sha(p) for p in stick.iterdir())
    assert new.training["sources"]["copied_from"]["good"] == str(stick)
    assert new.manifest["history"][-1]["change"] == "retrain"
    # the stick is removed: the next retrain needs it no more
    shutil.rmtree(stick.parent)
    dlg = confirm(qtbot, queue)
    assert "12 good images in all" in dlg.text() and "MISSING" not in dlg.text()
    assert "v3 of bracket, trained from v2" in dlg.text() and dlg.start_button.isEnabled()
    dlg.cancel_button.click()
    assert "not started" in queue.status.text() and not queue.retraining() and ctx.versions(PRODUCT) == [1, 2]


def test_a_missing_folder_is_named_and_too_few_images_are_refused_without_training(qtbot, ctx, queue,
                                                                                  base_recipe_dir, stick,
                                                                                  monkeypatch):
    import station.retrain as rt

    save_parent(ctx, base_recipe_dir, {"good": str(stick)})
    shutil.rmtree(stick.parent)
    teach(ctx, "good", 2)
    monkeypatch.setattr(rt, "train_recipe", lambda *a, **k: pytest.fail("a training that can only fail was started"))
    dlg = confirm(qtbot, queue)
    text = dlg.text()
    assert f"the original training folder {stick} is MISSING" in text
    assert "training needs at least 10, and only 2 were found" in dlg.refusal.text() and str(stick) in dlg.refusal.text()
    assert not dlg.start_button.isEnabled() and dlg.cancel_button.text() == "Close"
    dlg.accept()  # even if something accepted it, nothing starts
    assert not no_dialog(queue) and not queue.retraining()
    dlg.cancel_button.click()
    assert "at least 10" in queue.status.text() and str(stick) in queue.status.text()
    assert not queue.retraining() and ctx.versions(PRODUCT) == [1]


def test_discard_saves_nothing(qtbot, ctx, queue, base_recipe_dir, stick):
    save_parent(ctx, base_recipe_dir, {"good": str(stick)})
    saved = []
    queue.recipe_saved.connect(lambda *a: saved.append(a))
    confirm(qtbot, queue).start_button.click()
    result = open_dialog(qtbot, queue, retrain_dialogs()[1], timeout=60000)
    qtbot.waitUntil(lambda: not queue.retraining(), timeout=10000)
    result.discard_button.click()
    assert no_dialog(queue) and not queue.retraining()
    assert saved == [] and ctx.versions(PRODUCT) == [1]
    assert "nothing was saved" in queue.status.text() and "keeps v1" in queue.status.text()
    assert not (ctx.recipes_root / PRODUCT / "v0002").exists()


def test_budgets_changed_by_a_what_if_are_kept_unless_reset(qtbot, ctx, queue, base_recipe_dir, stick):
    from core.calibration import DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET
    from station.whatif import budget_limits

    parent = save_parent(ctx, base_recipe_dir, {"good": str(stick)})
    thresholds, fusion = budget_limits(parent, 1 / 500, 1 / 20)
    assert fusion is not None and fusion.threshold is not None
    parent.with_thresholds({**thresholds, "fused": fusion.threshold}, "What-if: budgets 1 in 500 FAIL, 1 in 20 REVIEW",
                           budgets=(1 / 500, 1 / 20)).save(ctx.recipes_root)  # v2, as the what-if dialog saves it

    def retrain_and_accept(reset: bool) -> int:
        dlg = confirm(qtbot, queue)
        assert dlg.reset_box.isVisible() and not dlg.reset_box.isChecked()
        assert "changed by an engineer" in dlg.text() and "1 good part in 500 auto-FAILed and 1 in 20" in dlg.text()
        if reset:
            dlg.reset_box.setChecked(True)
            assert "reset to the defaults" in dlg.text() and "1 good part in 200 auto-FAILed and 1 in 10" in dlg.text()
        dlg.start_button.click()
        result = open_dialog(qtbot, queue, retrain_dialogs()[1], timeout=60000)
        qtbot.waitUntil(lambda: not queue.retraining(), timeout=10000)
        with qtbot.waitSignal(queue.recipe_saved, timeout=20000) as sig:
            result.accept_button.click()
        qtbot.waitUntil(lambda: not queue.retraining(), timeout=10000)
        return sig.args[1]

    assert retrain_and_accept(reset=False) == 3
    assert ctx.load_recipe(PRODUCT, 3).budgets == pytest.approx((1 / 500, 1 / 20))
    assert retrain_and_accept(reset=True) == 4
    assert ctx.load_recipe(PRODUCT, 4).budgets == (DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET)
    dlg = confirm(qtbot, queue)  # defaults again: nothing to keep, nothing to reset
    assert not dlg.reset_box.isVisible() and "the budgets of v4" in dlg.text()
    dlg.reject()
