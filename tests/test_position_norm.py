"""Per-position map normalisation (core.position_norm): a defect on a quiet spot outranks a busy spot's normal peak."""
from __future__ import annotations

import numpy as np
import pytest

from core import anomaly_map, heldout
from core.position_norm import FLOOR, PositionNorm


def _good_maps(n: int, seed: int = 0) -> list[np.ndarray]:
    """Good maps with a busy band (rows 0-1: high, varying) and a quiet rest."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        m = rng.normal(1.0, 0.05, (8, 12))
        m[:2] = rng.normal(3.0, 0.5, (2, 12))
        maps.append(m.astype(np.float32))
    return maps


def test_a_defect_on_a_quiet_spot_outranks_the_busy_spots_normal_peak():
    maps = _good_maps(60)
    norm = PositionNorm.fit(maps)
    good = _good_maps(1, seed=99)[0]
    defect = good.copy()
    defect[5, 6] = 2.0  # well above its place's normal level, below the busy band's
    assert good.max() > defect[5, 6]  # the plain peak cannot tell them apart ...
    assert anomaly_map.image_score(norm.apply(defect)) > 3 * anomaly_map.image_score(norm.apply(good))  # ... z can


def test_leave_one_out_scores_equal_a_fit_without_the_image():
    maps = _good_maps(20, seed=3)
    loo = PositionNorm.leave_one_out_scores(maps)
    for i in (0, 7, 19):
        others = maps[:i] + maps[i + 1:]
        z = PositionNorm.fit(others).apply(maps[i])
        assert loo[i] == pytest.approx(float(z.max()), rel=1e-5)


def test_the_scale_floor_keeps_a_constant_position_from_exploding():
    maps = _good_maps(30, seed=5)
    for m in maps:
        m[4, 4] = 1.0  # never varies
    norm = PositionNorm.fit(maps)
    assert norm.scale[4, 4] >= FLOOR * np.median(norm.scale) - 1e-6
    bumped = maps[0].copy()
    bumped[4, 4] += 0.01
    assert norm.apply(bumped)[4, 4] < 2.0


def test_ignored_cells_score_zero_and_do_not_set_the_floor():
    maps = _good_maps(30, seed=6)
    ignore = np.zeros((8, 12), bool)
    ignore[:2] = True  # the busy band is ignored
    for m in maps:
        m[ignore] = 0.0
    norm = PositionNorm.fit(maps, ignore)
    probe = maps[0].copy()
    probe[0, 0] = 100.0
    z = norm.apply(probe, ignore)
    assert (z[ignore] == 0).all()
    assert anomaly_map.image_score(z, ignore) < 10


def test_too_few_held_out_maps_leave_scores_plain():
    grids = [np.random.default_rng(i).random((6, 6)).astype(np.float32) for i in range(3)]
    norm, scores = heldout.normalised_scores(grids)
    assert norm is None
    assert np.allclose(scores, heldout.scores(grids))


def test_a_fixed_framing_recipe_stores_and_applies_its_normalisation(tmp_path):
    from core.engine import Inspector
    from core.recipe import TensorKey, load_recipe
    from core.trainer import TrainConfig, train_recipe

    fast = dict(min_good=10, gaussian_folds=3, synthetic_images=12, synthetic_per_image=1, resolution="base")

    rng = np.random.default_rng(0)
    base = np.full((96, 96, 3), 120, np.uint8)
    base[:, 40:56] = 200  # a bright bar: busy edges in every good image
    goods = [np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8) for _ in range(14)]
    recipe = train_recipe(goods, product="bar", config=TrainConfig(size=96, **fast))
    assert recipe.manifest["models"]["patchcore"].get("position_norm") is True
    assert TensorKey.position_norm("gaussian", "scale") in recipe.tensors
    loaded = load_recipe(recipe.save(tmp_path))
    ins = Inspector(loaded)
    assert set(ins.models.norms) == {"patchcore", "gaussian"}
    defect = goods[0].copy()
    defect[70:78, 12:20] = 30  # a dark spot on the plain surface
    assert ins.inspect(defect).verdict.score_of("gaussian").score > ins.inspect(goods[1]).verdict.score_of("gaussian").score


def test_identical_good_maps_fall_back_to_plain_scores():
    grids = [np.full((6, 6), 0.7, np.float32) for _ in range(12)]
    norm, scores = heldout.normalised_scores(grids)
    assert norm is None
    assert np.allclose(scores, heldout.scores(grids)) and (scores > 0).all()
