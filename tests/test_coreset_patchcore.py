import numpy as np
import pytest

from core.coreset import Cancelled, coreset_size, greedy_coreset
from core.patchcore import PatchCore


def _reference_greedy(x, k, first):
    sel = [first]
    d = ((x - x[first]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(np.argmax(d))
        sel.append(i)
        d = np.minimum(d, ((x - x[i]) ** 2).sum(1))
    return sel


def test_greedy_coreset_matches_reference_farthest_point_selection():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    got = greedy_coreset(x, 40, seed=3)
    ref = _reference_greedy(x.astype(np.float64), 40, int(got[0]))
    assert list(got) == ref


def test_coreset_keeps_rare_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4)).astype(np.float32) * 0.1
    x[17, 0] += 25.0  # two rare patches, far from everything and from each other:
    x[1234, 1] -= 25.0  # greedy must take both early
    sel = set(greedy_coreset(x, 10).tolist())
    assert {17, 1234} <= sel


def test_coreset_covers_better_than_random():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(3000, 8)), rng.normal(size=(30, 8)) + 6]).astype(np.float32)
    k = 60
    pc = PatchCore(x[greedy_coreset(x, k)])
    rnd = PatchCore(x[rng.choice(len(x), k, replace=False)])
    assert pc.nearest(x).max() < rnd.nearest(x).max()


def test_coreset_size_and_edge_cases():
    assert coreset_size(100_000, 0.01, 1024, 4096) == 1024
    assert coreset_size(1_000_000, 0.01, 1024, 4096) == 4096
    assert coreset_size(500, 0.01, 1024, 4096) == 500
    x = np.zeros((5, 2), np.float32)
    assert list(greedy_coreset(x, 10)) == [0, 1, 2, 3, 4]
    assert len(greedy_coreset(x, 0)) == 0


def test_coreset_can_be_cancelled():
    x = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    with pytest.raises(Cancelled):
        greedy_coreset(x, 500, cancel=lambda: True)


def test_nearest_matches_brute_force_and_excludes_own_image():
    rng = np.random.default_rng(5)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    src = np.repeat(np.arange(3), 100)
    q = rng.normal(size=(5000, 16)).astype(np.float32)  # > one chunk
    pc = PatchCore(bank, src)
    brute = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1))
    np.testing.assert_allclose(pc.nearest(q), brute.min(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pc.nearest(q, exclude_source=1), brute[:, src != 1].min(1), rtol=1e-4, atol=1e-4)
    # a bank entry queried against itself is at distance 0 ... unless its image is excluded
    assert pc.nearest(bank[:1])[0] == pytest.approx(0.0, abs=1e-3)
    assert pc.nearest(bank[:1], exclude_source=0)[0] > 0.5


def test_distance_grid_shape():
    rng = np.random.default_rng(0)
    pc = PatchCore(rng.normal(size=(50, 8)).astype(np.float32))
    grid = pc.distance_grid(rng.normal(size=(8, 4, 6)).astype(np.float32))
    assert grid.shape == (4, 6) and (grid >= 0).all()


def test_fit_builds_bank_from_leading_dims():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(4000, 12)).astype(np.float32)
    ids = np.repeat(np.arange(40), 100)
    pc = PatchCore.fit(patches, ids, ratio=0.05, minimum=10, maximum=1000, select_dims=4)
    assert len(pc) == 200
    assert pc.dim == 12
    assert set(np.unique(pc.source)) <= set(range(40))
