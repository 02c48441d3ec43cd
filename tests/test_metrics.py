import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.types import Decision
from training.metrics import (
    default_pro_thresholds,
    image_auroc,
    pixel_auroc,
    pro_score,
    roc_at_thresholds,
    verdict_quality,
)


# -- slow, obviously-correct reference for PRO ---------------------------------------------------

def reference_pro(masks, maps, thresholds, max_fpr=0.3):
    """Loop over thresholds and regions; curve anchored at (0, 0) and (1, 1)."""
    regions = []  # (image index, boolean region mask)
    for i, mask in enumerate(masks):
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for r in range(1, n):
            regions.append((i, labels == r))
    if not regions:
        return math.nan
    background = ~masks
    points = [(0.0, 0.0), (1.0, 1.0)]
    for t in thresholds:
        flagged = maps >= t
        overlaps = [flagged[i][region].sum() / region.sum() for i, region in regions]
        fpr = (flagged & background).sum() / background.sum()
        points.append((float(fpr), float(np.mean(overlaps))))
    points.sort()
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def blob_data(seed, n=4, size=32, good_images=1):
    """Random float32 maps, masks with a few blobs (some images without defects)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n - good_images):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            r = rng.uniform(1.5, size / 6)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    maps = rng.normal(size=masks.shape) + 1.5 * masks * rng.uniform(0.2, 1.5, masks.shape)
    return masks, maps.astype(np.float32)


# -- image / pixel AUROC -------------------------------------------------------------------------

def test_image_auroc():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert image_auroc(["good", "good", "defect", "defect"], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert image_auroc([0, 1], [0.2, 0.2]) == 0.5
    assert image_auroc([0, 1, 1], [0.9, 0.1, 0.2]) == 0.0
    assert math.isnan(image_auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(image_auroc(["good"], [0.1]))
    with pytest.raises(ValueError):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        image_auroc([0, 1], [0.1])


def test_pixel_auroc():
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 0, 0] = masks[1, 1, 1] = True
    maps = np.array([[[0.9, 0.1], [0.2, 0.3]], [[0.4, 0.5], [0.6, 0.7]]])
    # positives 0.9 and 0.7; negatives 0.1 .. 0.6 -> 0.9 beats all 6, 0.7 beats all 6
    assert pixel_auroc(masks, maps) == 1.0
    maps[1, 1, 1] = 0.35  # now beats 0.1, 0.2, 0.3 of the 6 negatives
    assert pixel_auroc(masks, maps) == pytest.approx((6 + 3) / 12)
    assert math.isnan(pixel_auroc(np.zeros((1, 3, 3), bool), np.ones((1, 3, 3))))
    with pytest.raises(ValueError):
        pixel_auroc(masks, maps[:, :1])


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_auroc_equals_sklearn_with_ties(seed):
    masks, maps = blob_data(seed, n=5, size=40)
    for m in (maps, np.round(maps * 2) / 2):  # continuous, then heavily tied scores
        assert pixel_auroc(masks, m) == pytest.approx(
            roc_auc_score(masks.ravel(), m.ravel()), abs=1e-12)


def test_pixel_auroc_and_pro_on_100_images_agree_with_sklearn():
    rng = np.random.default_rng(0)
    masks = np.zeros((100, 256, 256), bool)
    masks[::2, 100:140, 60:90] = True
    masks[::3, 10:14, 200:203] = True
    maps = (rng.random(masks.shape, dtype=np.float32) + 0.4 * masks).astype(np.float32)
    auc = pixel_auroc(masks, maps)
    pro = pro_score(masks, maps)
    sub = slice(0, 100, 7)  # sklearn on a subset keeps the test quick
    assert pixel_auroc(masks[sub], maps[sub]) == pytest.approx(roc_auc_score(masks[sub].ravel(), maps[sub].ravel()), abs=1e-9)
    assert 0.5 < auc < 1.0 and 0.0 < pro < 1.0


# -- PRO -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_pro_matches_reference_with_same_thresholds(seed, max_fpr):
    masks, maps = blob_data(seed)
    for thresholds in (
        np.linspace(maps.min(), maps.max(), 40),
        np.quantile(maps, np.linspace(0, 1, 25)),
        default_pro_thresholds(np.sort(maps[~masks]), max_fpr, 30),
    ):
        fast = pro_score(masks, maps, max_fpr=max_fpr, thresholds=thresholds)
        slow = reference_pro(masks, maps, thresholds, max_fpr=max_fpr)
        assert fast == pytest.approx(slow, abs=1e-6)
    # default thresholds are those of default_pro_thresholds
    thresholds = default_pro_thresholds(np.sort(maps[~masks]), max_fpr, 200)
    assert pro_score(masks, maps, max_fpr=max_fpr) == pytest.approx(
        reference_pro(masks, maps, thresholds, max_fpr=max_fpr), abs=1e-6)


def test_default_thresholds_are_close_to_the_exact_curve():
    masks, maps = blob_data(3, n=3, size=24)
    exact = reference_pro(masks, maps, np.unique(maps))  # every distinct score: exact curve
    assert pro_score(masks, maps, thresholds=np.unique(maps)) == pytest.approx(exact, abs=1e-6)
    assert pro_score(masks, maps) == pytest.approx(exact, abs=5e-3)
    assert 0.2 < exact < 0.95  # a non-trivial case


def test_perfect_map_scores_one():
    masks, _ = blob_data(4)
    perfect = masks.astype(np.float32)
    assert pro_score(masks, perfect) == pytest.approx(1.0)
    assert pro_score(masks, perfect, max_fpr=0.01) == pytest.approx(1.0)
    assert pro_score(masks, perfect, thresholds=[0.5]) == pytest.approx(1.0)
    # any map with every defect pixel above every background pixel is perfect too
    _, noise = blob_data(5)
    assert pro_score(masks, noise + 100 * masks) == pytest.approx(1.0)


def test_inverted_map_scores_zero():
    masks, maps = blob_data(6)
    assert pro_score(masks, (~masks).astype(np.float32)) == pytest.approx(0.0, abs=1e-12)
    assert pro_score(masks, -maps - 100 * masks) == pytest.approx(0.0, abs=1e-12)
    assert pro_score(masks, -maps) < 0.05 < pro_score(masks, maps)


def test_constant_map_follows_the_diagonal():
    # One threshold: FPR = PRO = 1; the curve is the line (0,0)-(1,1), so the normalised area
    # up to max_fpr is max_fpr / 2.
    masks, _ = blob_data(7)
    const = np.full(masks.shape, 0.7, np.float32)
    assert pro_score(masks, const) == pytest.approx(0.15)
    assert pro_score(masks, const, max_fpr=0.1) == pytest.approx(0.05)
    assert pro_score(masks, const, max_fpr=1.0) == pytest.approx(0.5)
    assert pro_score(masks, const) == pytest.approx(reference_pro(masks, const, [0.7]))


@pytest.mark.parametrize("max_fpr, expected", [
    (0.3, 0.2 / 0.3), (0.5, 0.4 / 0.5), (1.0, 0.9), (0.1, 0.0), (0.05, 0.0), (0.2, 0.5),
])
def test_normalisation_by_max_fpr(max_fpr, expected):
    # 100 background pixels scored 0..99, one region scored 89.5: the curve is PRO = 0 up to
    # FPR 0.1, where it steps to 1. Area up to max_fpr = max_fpr - 0.1; normalised /max_fpr.
    maps = np.zeros((1, 1, 103), np.float32)
    maps[0, 0, :100] = np.arange(100)
    maps[0, 0, 100:] = 89.5
    masks = maps == 89.5
    thresholds = np.unique(maps)
    assert pro_score(masks, maps, max_fpr=max_fpr, thresholds=thresholds) == pytest.approx(expected)
    assert reference_pro(masks, maps, thresholds, max_fpr) == pytest.approx(expected)


def test_regions_count_separately():
    # one big region (400 px) and one small (4 px); the map finds only one of them
    masks = np.zeros((1, 40, 40), bool)
    masks[0, 2:22, 2:22] = True
    masks[0, 30:32, 30:32] = True
    big_only = np.zeros(masks.shape, np.float32)
    big_only[0, 2:22, 2:22] = 1.0
    small_only = np.zeros(masks.shape, np.float32)
    small_only[0, 30:32, 30:32] = 1.0
    # curve (0,0) -> (0,0.5) -> (1,1): PRO 0.5 at FPR 0, normalised area 0.5 + 0.5 * 0.15
    assert pro_score(masks, big_only) == pytest.approx(0.575)
    assert pro_score(masks, small_only) == pytest.approx(0.575)
    # the pixel-weighted view would call big_only almost perfect
    assert pixel_auroc(masks, big_only) > 0.99


def test_regions_are_8_connected_within_an_image_only():
    # 2x2 and 4x4 squares touching at a corner form ONE region of 20 px
    masks = np.zeros((2, 12, 12), bool)
    masks[0, 0:2, 0:2] = True
    masks[0, 2:6, 2:6] = True
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 2:6, 2:6] = 1.0  # only the 4x4 part is found -> overlap 16/20
    assert pro_score(masks, maps) == pytest.approx(0.8 + 0.2 * 0.15)
    # same-place regions in different images are separate regions
    masks = np.zeros((2, 12, 12), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 2:4, 2:4] = True
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 2:6, 2:6] = 1.0
    assert pro_score(masks, maps) == pytest.approx(0.5 + 0.5 * 0.15)


def test_pro_edge_cases():
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    assert math.isnan(pro_score(np.zeros((2, 8, 8), bool), maps))  # no defect regions
    assert math.isnan(pro_score(np.ones((2, 8, 8), bool), maps))  # no background
    single = np.zeros((8, 8), bool)
    single[2:4, 2:4] = True
    assert pro_score(single, single.astype(float)) == pytest.approx(1.0)  # one 2-D image
    with pytest.raises(ValueError):
        pro_score(single, single.astype(float), max_fpr=0.0)
    with pytest.raises(ValueError):
        pro_score(single, np.zeros((8, 7)))
    bad = single.astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pro_score(single, bad)


# -- station verdicts ----------------------------------------------------------------------------

def test_verdict_quality():
    labels = ["good", "good", "good", "good", "defect", "defect", "defect", "defect", "defect"]
    decisions = ["PASS", "PASS", "FAIL", "REVIEW", "PASS", "FAIL", "FAIL", "REVIEW", "REVIEW"]
    expected = {
        "escapes": 1,
        "false_rejects": 1,
        "review_rate": 3 / 9,
        "reviews": 3,
        "auto_decided": 6,
        "n_good": 4,
        "n_defect": 5,
        "correct_fail": 2,
        "correct_pass": 2,
        "good_reviewed": 1,
        "defect_reviewed": 2,
    }
    assert verdict_quality(labels, decisions) == expected
    # 0/1 labels and Decision members work the same
    numeric = [0 if lab == "good" else 1 for lab in labels]
    assert verdict_quality(numeric, [Decision(d) for d in decisions]) == expected
    empty = verdict_quality([], [])
    assert math.isnan(empty.pop("review_rate")) and set(empty.values()) == {0}
    with pytest.raises(ValueError):
        verdict_quality(["good"], ["MAYBE"])
    with pytest.raises(ValueError):
        verdict_quality(["good", "defect"], ["PASS"])


def test_roc_at_thresholds():
    labels = [0, 0, 0, 0, 1, 1]
    scores = [0.1, 0.5, 0.9, 1.0, 0.8, 1.2]
    assert roc_at_thresholds(labels, scores, [0.5, 1.0, 2.0, 0.0]) == [
        {"threshold": 0.5, "recall": 1.0, "false_reject_rate": 0.75},
        {"threshold": 1.0, "recall": 0.5, "false_reject_rate": 0.25},  # >= : 1.0 is rejected
        {"threshold": 2.0, "recall": 0.0, "false_reject_rate": 0.0},
        {"threshold": 0.0, "recall": 1.0, "false_reject_rate": 1.0},
    ]
    rows = roc_at_thresholds(["good", "good"], [0.1, 0.3], [0.2])
    assert math.isnan(rows[0]["recall"]) and rows[0]["false_reject_rate"] == 0.5
    assert roc_at_thresholds(labels, scores, []) == []
