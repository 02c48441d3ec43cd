"""Synthetic defects, the recipe's synthetic-defect check, fusion weights and the resolution race."""
import cv2
import numpy as np
import pytest

from core import synthetic
from station.demo import PartGenerator
from core.selfcheck import WEIGHTINGS, auroc
from core.trainer import TrainConfig, train_recipe

GEN = PartGenerator("bracket", (128, 128), seed=6)


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_each_synthetic_defect_changes_only_its_own_area(kind):
    image = GEN.good(0).image
    for seed in range(4):
        d = synthetic.make_defect(image, kind, 0.08, seed)
        again = synthetic.make_defect(image, kind, 0.08, seed)
        assert np.array_equal(d.image, again.image)  # deterministic
        assert d.mask.any() and d.kind == kind and d.size_px == round(0.08 * 128)
        changed = np.abs(d.image.astype(int) - image.astype(int)).max(axis=2) > 2
        near = cv2.dilate(d.mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert changed.any() and not (changed & ~near).any()


def test_synthetic_defects_stay_inside_the_box_and_the_plan_covers_every_kind_and_size():
    image = GEN.good(1).image
    box = (40, 30, 60, 50)
    for i, kind in enumerate(synthetic.KINDS):
        d = synthetic.make_defect(image, kind, 0.08, i, box)
        ys, xs = np.nonzero(d.mask)
        assert xs.min() >= box[0] - 3 and xs.max() < box[0] + box[2] + 3
        assert ys.min() >= box[1] - 3 and ys.max() < box[1] + box[3] + 3
    plan = synthetic.plan(15, 2, seed=0)
    assert len(plan) == 30 and {p[0] for p in plan} == set(range(15))
    combos = {(k, s) for _, k, s, _ in plan}
    assert combos == {(k, s) for k in synthetic.KINDS for s in synthetic.SIZES}


def test_auroc_helper_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=40).round(1), rng.normal(0.8, 1, size=30).round(1)  # with ties
    want = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[neg, pos])
    assert auroc(neg, pos) == pytest.approx(want)
    assert np.isnan(auroc([], pos))


@pytest.fixture(scope="module")
def raced():
    goods = [GEN.good(i).image for i in range(14)]
    # base 64 px, fine 128 px: the images are large enough for the race to run
    cfg = TrainConfig(size=64, fine_size=128, min_good=10, gaussian_folds=3, synthetic_images=14)
    return train_recipe(goods, product="raced", config=cfg), goods


def test_training_reports_the_synthetic_defect_check_and_chooses_fusion_weights(raced):
    recipe, _ = raced
    syn = recipe.manifest["training"]["synthetic"]
    assert syn["n_images"] == 14 and syn["n_defects"] == 28
    assert [b["fraction"] for b in syn["by_size"]] == list(synthetic.SIZES)
    assert all(0.0 <= b["caught"] <= 1.0 and b["failed"] <= b["caught"] for b in syn["by_size"])
    assert set(syn["by_kind"]) == set(synthetic.KINDS)
    assert set(syn["auroc"]) == {"patchcore", "gaussian", "fused"}
    fusion = recipe.fusion
    assert dict(fusion.weights) in [dict(w) for w in WEIGHTINGS]
    assert len(fusion.candidates) == 3 and "synthetic defects" in fusion.chosen_by
    # the fused limits come from the held-out good parts' fused scores
    held = recipe.calibration_scores("fused")
    assert held.size == 14 and fusion.threshold.pass_limit == pytest.approx(np.quantile(held, 0.9), rel=0.2)


def test_the_resolution_race_is_recorded_and_base_skips_it(raced):
    recipe, goods = raced
    race = recipe.manifest["training"]["resolution"]
    assert [c["working"] for c in race["candidates"]] == ["64x64 px", "128x128 px"]
    assert recipe.working_shape in ((64, 64), (128, 128))
    gain = race["candidates"][1]["synthetic_auroc"] - race["candidates"][0]["synthetic_auroc"]
    assert (recipe.working_shape == (128, 128)) == (gain >= race["margin"])
    assert "resolution" in recipe.manifest["framing"]["why"]
    base = train_recipe(goods, product="base", config=TrainConfig(size=64, fine_size=128, resolution="base",
                                                                  min_good=10, gaussian_folds=3, synthetic_images=6))
    assert base.working_shape == (64, 64) and base.manifest["training"]["resolution"] == {}
