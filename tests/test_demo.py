"""Tests for the procedural demo-part generator (core/demo.py)."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from station.demo import (
    CHANGE_THRESHOLD,
    DEFECT_TYPES,
    MASK_AREA_RANGE,
    PART_KINDS,
    DemoPart,
    PartGenerator,
    write_dataset,
)

SIZE = (96, 128)  # small and non-square keeps the file fast
N_INDICES = 10  # per kind and defect type in the mask tests


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).sum(axis=2) > CHANGE_THRESHOLD


@pytest.fixture(scope="module")
def generators() -> dict[str, PartGenerator]:
    return {kind: PartGenerator(kind, SIZE, seed=3) for kind in PART_KINDS}


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", PART_KINDS)
def test_same_arguments_render_identical_parts(kind):
    a, b = PartGenerator(kind, SIZE, seed=7), PartGenerator(kind, SIZE, seed=7)
    for index in (0, 5):
        assert np.array_equal(a.good(index).image, b.good(index).image)
        for defect in DEFECT_TYPES:
            pa, pb = a.defective(index, defect), b.defective(index, defect)
            assert np.array_equal(pa.image, pb.image)
            assert np.array_equal(pa.mask, pb.mask)
    # rendering order does not matter: nothing depends on hidden state
    later = a.defective(2, "crack")
    a.good(9)
    assert np.array_equal(a.defective(2, "crack").image, later.image)


@pytest.mark.parametrize("kind", PART_KINDS)
def test_index_and_seed_change_the_part(kind):
    gen = PartGenerator(kind, SIZE, seed=0)
    images = [gen.good(i).image for i in range(4)]
    for x, y in itertools.combinations(images, 2):
        assert not np.array_equal(x, y)
    assert not np.array_equal(gen.good(0).image, PartGenerator(kind, SIZE, seed=1).good(0).image)
    # each defect type and the default choice are distinct parts of the same base
    defects = [gen.defective(4, d).image for d in DEFECT_TYPES]
    for x, y in itertools.combinations(defects, 2):
        assert not np.array_equal(x, y)


def test_default_defect_is_chosen_by_index(generators):
    gen = generators["bracket"]
    chosen = [gen.defective(i).defect for i in range(6)]
    assert chosen == [DEFECT_TYPES[i % len(DEFECT_TYPES)] for i in range(6)]
    assert np.array_equal(gen.defective(4).image, gen.defective(4, chosen[4]).image)


# --------------------------------------------------------------------------- shapes and types


@pytest.mark.parametrize("kind", PART_KINDS)
@pytest.mark.parametrize("size", [(64, 64), (96, 160), (128, 512), (200, 72)])
def test_shapes_and_dtypes(kind, size):
    gen = PartGenerator(kind, size)
    for part in (gen.good(1), gen.defective(1)):
        assert isinstance(part, DemoPart)
        assert part.index == 1
        assert part.image.shape == (*size, 3) and part.image.dtype == np.uint8
        assert part.mask.shape == size and part.mask.dtype == np.bool_
        assert not part.image.flags.writeable and not part.mask.flags.writeable
    assert gen.good(1).defect is None
    assert gen.defective(1).defect in DEFECT_TYPES


def test_parts_use_a_real_intensity_range(generators):
    for kind, gen in generators.items():
        img = gen.good(0).image
        assert img.std() > 10, kind  # an object with structure, not a flat frame
        assert 0 < img.mean() < 255, kind


def test_washer_gray_has_equal_channels(generators):
    gen = generators["washer_gray"]
    parts = [gen.good(0), gen.good(1)] + [gen.defective(2, d) for d in DEFECT_TYPES]
    for part in parts:
        assert np.array_equal(part.image[..., 0], part.image[..., 1])
        assert np.array_equal(part.image[..., 0], part.image[..., 2])


def test_colour_kinds_are_not_gray(generators):
    for kind in ("bracket", "fabric", "rod"):
        img = generators[kind].good(0).image.astype(int)
        assert np.abs(img[..., 0] - img[..., 2]).max() > 10, kind


# --------------------------------------------------------------------------- masks


def test_good_parts_have_empty_masks(generators):
    for gen in generators.values():
        for i in range(3):
            part = gen.good(i)
            assert part.defect is None and not part.mask.any()


@pytest.mark.parametrize("kind", PART_KINDS)
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_masks_are_exact_ground_truth(generators, kind, defect):
    gen = generators[kind]
    lo, hi = MASK_AREA_RANGE
    kernel = np.ones((3, 3), np.uint8)
    for i in range(N_INDICES):
        good, bad = gen.good(i), gen.defective(i, defect)
        assert bad.defect == defect and bad.index == i
        area = bad.mask.mean()
        assert lo <= area <= hi, (i, area)
        changed = _changed(bad.image, good.image)
        assert changed.any()
        # every noticeably changed pixel is in the mask; the mask is those pixels dilated once
        assert not (changed & ~bad.mask).any()
        dilated = cv2.dilate(changed.astype(np.uint8), kernel).astype(bool)
        assert np.array_equal(bad.mask, dilated)
        # the defect is the only difference from the good twin: identical outside the mask
        assert np.array_equal(bad.image[~bad.mask], good.image[~bad.mask])
        # and it is clearly visible, not a faint tint
        diff = np.abs(bad.image.astype(int) - good.image).sum(axis=2)
        assert np.percentile(diff[bad.mask], 90) > 30


@pytest.mark.parametrize("kind", ["bracket", "washer_gray"])
def test_defects_lie_on_the_part_not_the_background(generators, kind):
    gen = generators[kind]
    for i in range(N_INDICES):
        brightness = gen.good(i).image.mean(axis=2)
        assert np.percentile(brightness[:4, :4], 99) < 60  # the background is dark...
        for defect in DEFECT_TYPES:
            mask = gen.defective(i, defect).mask
            assert brightness[mask].min() > 80, (i, defect)  # ...and the defect is not on it


def test_rod_defects_lie_on_the_shaft():
    h, w = 128, 512
    gen = PartGenerator("rod", (h, w))
    radius = min(0.24 * h, 0.11 * w)
    for i in range(N_INDICES):
        for defect in DEFECT_TYPES:
            ys, xs = np.nonzero(gen.defective(i, defect).mask)
            assert np.abs(ys - h / 2).max() <= radius + 0.04 * h  # within the shaft's pose range
            assert np.abs(xs - w / 2).max() <= 0.46 * w


def test_masks_are_non_empty_across_many_indices():
    for kind in PART_KINDS:
        gen = PartGenerator(kind, (64, 80), seed=11)
        for i in range(30):
            assert gen.defective(i).mask.sum() > 0, (kind, i)


# --------------------------------------------------------------------------- stream


def test_stream_rate_and_determinism():
    gen = PartGenerator("fabric", (64, 64), seed=2)
    items = list(itertools.islice(gen.stream(defect_rate=0.3), 400))
    assert [p.index for p in items] == list(range(400))
    flags = np.array([p.defect is not None for p in items])
    assert abs(flags.mean() - 0.3) < 0.06
    assert {p.defect for p in items if p.defect} == set(DEFECT_TYPES)
    assert all(p.mask.any() == (p.defect is not None) for p in items)
    again = list(itertools.islice(PartGenerator("fabric", (64, 64), seed=2).stream(0.3), 60))
    assert [p.defect for p in again] == [p.defect for p in items[:60]]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(items, again))


def test_stream_start_and_extreme_rates(generators):
    gen = generators["fabric"]
    first = next(gen.stream(defect_rate=0.5, start=17))
    expected = gen.good(17) if first.defect is None else gen.defective(17, first.defect)
    assert first.index == 17 and np.array_equal(first.image, expected.image)
    assert all(p.defect is None for p in itertools.islice(gen.stream(0.0), 15))
    assert all(p.defect is not None for p in itertools.islice(gen.stream(1.0), 15))


# --------------------------------------------------------------------------- dataset


def test_write_dataset_layout_and_contents(tmp_path):
    size = (64, 96)
    root = write_dataset(tmp_path / "demo", kind="rod", size=size, n_train=3, n_test_good=2,
                         n_test_defect_each=2, seed=5)
    assert root == tmp_path / "demo"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    expected = [f"train/good/00{i}.png" for i in range(3)]
    expected += [f"test/good/00{i}.png" for i in range(2)]
    for d in DEFECT_TYPES:
        expected += [f"test/{d}/00{i}.png" for i in range(2)]
        expected += [f"ground_truth/{d}/00{i}_mask.png" for i in range(2)]
    assert files == sorted(expected)

    gen = PartGenerator("rod", size, seed=5)
    train0 = cv2.cvtColor(cv2.imread(str(root / "train/good/000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(train0, gen.good(0).image)  # lossless, RGB on disk as BGR PNG
    images = []
    for rel in expected:
        img = cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED)
        assert img is not None, rel
        if rel.startswith("ground_truth"):
            assert img.shape == size and img.dtype == np.uint8
            assert set(np.unique(img)) == {0, 255}
            image_rel = rel.replace("ground_truth", "test").replace("_mask", "")
            assert cv2.imread(str(root / image_rel)).shape[:2] == img.shape
        else:
            assert img.shape == (*size, 3) and img.dtype == np.uint8
            images.append(img)
    # every image is a different part (train and test never share an index)
    for a, b in itertools.combinations(images, 2):
        assert not np.array_equal(a, b)


# --------------------------------------------------------------------------- arguments


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError):
        PartGenerator("gear")
    with pytest.raises(ValueError):
        PartGenerator("rod", (16, 256))
    gen = PartGenerator("bracket", (64, 64))
    with pytest.raises(ValueError):
        gen.defective(0, "dent")
    with pytest.raises(ValueError):
        gen.good(-1)
    with pytest.raises(ValueError):
        next(gen.stream(defect_rate=1.5))
