"""The inspection engine on generated parts (fixed seeds): verdicts, maps, bad input, backends."""
import numpy as np
import pytest

from station.demo import PartGenerator
from core.engine import Inspector
from core.images import load_image
from core.recipe import Recipe, RecipeError
from core.types import Decision, Reason

GEN = PartGenerator("bracket", (128, 128), seed=0)  # same generator as the tiny recipe (trained on 0..13)


@pytest.fixture(scope="module")
def inspector(tiny_recipe):
    return Inspector(tiny_recipe)


def test_good_parts_pass_and_defects_fail(inspector):
    goods = [inspector.inspect(GEN.good(i).image) for i in range(20, 32)]
    defects = [inspector.inspect(GEN.defective(i).image) for i in range(20, 32)]
    assert sum(r.decision is Decision.PASS for r in goods) >= 10
    assert not any(r.decision is Decision.FAIL for r in goods)
    assert all(r.decision is not Decision.PASS for r in defects)  # no escapes
    assert sum(r.decision is Decision.FAIL for r in defects) >= 10
    # every model ranks every defect above every good part of the same index
    for g, d in zip(goods, defects):
        for m in ("patchcore", "gaussian"):
            assert d.verdict.score_of(m).score > g.verdict.score_of(m).score


def test_maps_are_at_input_resolution_and_region_finds_the_defect(inspector):
    hits = 0
    for i in range(20, 30):
        part = GEN.defective(i)
        r = inspector.inspect(part.image)
        assert set(r.maps) == {"patchcore", "gaussian"}
        for m in r.maps.values():
            assert m.shape == part.image.shape[:2] and m.dtype == np.float32
            assert not m.flags.writeable
        ys, xs = np.nonzero(part.mask)
        if r.region is not None:
            x, y, w, h = r.region
            cy, cx = ys.mean(), xs.mean()
            hits += (x - 4 <= cx <= x + w + 4) and (y - 4 <= cy <= y + h + 4)
        # the map is hotter on the defect than off it
        pc = r.maps["patchcore"]
        assert pc[part.mask].mean() > 2 * pc[~part.mask].mean()
    assert hits >= 9


def test_scores_are_normalised_to_the_threshold(inspector, tiny_recipe):
    r = inspector.inspect(GEN.defective(21).image)
    for s in r.verdict.scores:
        thr = tiny_recipe.threshold(s.model)
        assert s.score == pytest.approx(s.raw / thr.value)
        assert s.band == pytest.approx(thr.band)
    assert r.latency_ms > 0 and {"preprocess", "models", "fuse", "maps"} <= set(r.timings_ms)
    assert r.recipe == "tiny" and r.recipe_version == 1


def test_onnx_and_torch_backends_agree(tiny_recipe):
    onnx = Inspector(tiny_recipe, backend="onnx")
    torch_ = Inspector(tiny_recipe, backend="torch")
    assert onnx.backend == "onnx" and torch_.backend == "torch"
    for part in (GEN.good(25), GEN.defective(25)):
        a, b = onnx.inspect(part.image), torch_.inspect(part.image)
        assert a.decision == b.decision
        for sa, sb in zip(a.verdict.scores, b.verdict.scores):
            assert sa.raw == pytest.approx(sb.raw, rel=1e-3)
        np.testing.assert_allclose(a.maps["patchcore"], b.maps["patchcore"], rtol=1e-3, atol=1e-3)


def test_a_mismatching_onnx_graph_falls_back_to_torch(tiny_recipe):
    graphs = Inspector(tiny_recipe)._graphs()  # built from the recipe's tensors
    broken = Recipe(tiny_recipe.manifest, tiny_recipe.tensors, {"embedder": graphs["embedder"],
                                                                "scorer": graphs["embedder"]}, path=tiny_recipe.path)
    # a wrong graph in the scorer's place
    ins = Inspector(broken)
    assert ins.backend == "torch" and "ONNX check failed" in ins.fallback_reason
    assert ins.inspect(GEN.good(20).image).decision in (Decision.PASS, Decision.REVIEW)
    with pytest.raises(RecipeError):
        Inspector(broken, backend="onnx")


def test_grayscale_16bit_and_alpha_arrays_are_converted_and_inspected(inspector):
    rgb = GEN.good(22).image
    base = inspector.inspect(rgb)
    gray16 = (rgb.mean(axis=2) * 257).astype(np.uint16)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgb16 = rgb.astype(np.uint16) * 257
    for arr in (gray16, rgba, rgb16):
        r = inspector.inspect(arr)
        assert r.image_shape == rgb.shape[:2]
        # a grey picture of a coloured part is not the trained product: never a PASS
        assert r.decision is not Decision.PASS if arr is gray16 else r.decision is base.decision
    # opaque alpha and exact 16-bit scaling change nothing
    assert inspector.inspect(rgba).verdict.score_of("patchcore").raw == pytest.approx(base.verdict.score_of("patchcore").raw, rel=1e-5)
    assert inspector.inspect(rgb16).verdict.score_of("patchcore").raw == pytest.approx(base.verdict.score_of("patchcore").raw, rel=1e-5)


def test_files_of_other_resolution_and_depth_are_inspected(inspector, tmp_path):
    import cv2

    part = GEN.defective(23)
    big = cv2.resize(part.image, (384, 384), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big16.png"
    cv2.imwrite(str(path), (big[:, :, ::-1].astype(np.uint16) * 257))
    r = inspector.inspect(load_image(path))
    assert r.image_shape == (384, 384) and r.maps["patchcore"].shape == (384, 384)
    assert r.decision is not Decision.PASS


def test_smaller_maps_cover_the_same_image(inspector):
    """``map_side`` (batches): maps at a capped size, aligned with the image, the same heatmap."""
    import cv2

    part = GEN.defective(26)
    big = cv2.resize(part.image, (384, 256), interpolation=cv2.INTER_CUBIC)  # 3:2, not the recipe's 1:1
    full = inspector.inspect(big)
    small = inspector.inspect(big, map_side=96)
    assert small.verdict == full.verdict and small.region == full.region
    for m, amap in small.maps.items():
        assert amap.shape == (64, 96) and amap.dtype == np.float32 and not amap.flags.writeable
        shrunk = cv2.resize(full.maps[m], (96, 64), interpolation=cv2.INTER_AREA)
        assert np.abs(amap - shrunk).max() < 0.05 * float(full.maps[m].max())
    assert inspector.inspect(big, map_side=1000).maps["patchcore"].shape == (256, 384)  # never enlarged


def test_map_to_image_places_a_scaled_roi():
    from core import anomaly_map

    grid = np.ones((8, 8), np.float32)
    roi = (90, 30, 600, 300)  # x, y, w, h in a 900 x 450 image
    full = anomaly_map.to_image(grid, (450, 900), roi)
    out_hw = anomaly_map.map_shape((450, 900), 300)
    assert out_hw == (150, 300)
    small = anomaly_map.to_image(grid, (450, 900), roi, out_hw)
    assert small.shape == (150, 300)
    ys, xs = np.nonzero(small)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (30, 230, 10, 110)  # the ROI / 3
    assert np.nonzero(full)[1].min() == 90 and np.nonzero(full)[1].max() + 1 == 690
    assert anomaly_map.map_shape((450, 900), None) == (450, 900)


@pytest.mark.parametrize("kind", ["noise", "blank", "other_product", "wrong_aspect"])
def test_unfamiliar_input_goes_to_review_with_a_reason(inspector, kind):
    rng = np.random.default_rng(0)
    image = {
        "noise": lambda: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        "blank": lambda: np.full((128, 128, 3), 40, np.uint8),
        "other_product": lambda: PartGenerator("fabric", (128, 128), seed=3).good(0).image,
        "wrong_aspect": lambda: np.ascontiguousarray(np.tile(GEN.good(24).image, (1, 2, 1))),
    }[kind]()
    r = inspector.inspect(image)
    assert r.decision is Decision.REVIEW
    assert Reason.UNFAMILIAR_INPUT in r.verdict.reasons
    assert r.verdict.notes


def test_empty_arrays_are_refused_with_a_clear_error(inspector):
    from core.images import ImageError

    for arr in (np.zeros((0, 0, 3), np.uint8), np.zeros((1, 5, 3), np.uint8)):
        with pytest.raises(ImageError, match="empty or too small"):
            inspector.inspect(arr)


def test_overlay_blends_only_where_the_map_is_hot():
    import cv2

    from core import overlay

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    grid = np.zeros((12, 16), np.float32)
    grid[3:6, 4:8] = 2.5
    amap = cv2.resize(grid, (160, 120), interpolation=cv2.INTER_LINEAR)
    out = overlay.blend(image, amap)
    rgb, alpha = overlay.colorize(amap)  # the float formula, for reference
    want = image * (1.0 - alpha[:, :, None]) + rgb * alpha[:, :, None]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out - want).max() <= 1.0  # rounding only
    cold = amap <= overlay.OVERLAY_FLOOR
    assert np.array_equal(out[cold], image[cold]) and not np.array_equal(out[~cold], image[~cold])
    # a smaller map covering the same image gives the same picture, give or take interpolation
    small = overlay.blend(image, cv2.resize(amap, (80, 60), interpolation=cv2.INTER_AREA))
    assert np.mean(np.abs(small.astype(int) - out)) < 2.0
    # nothing hot: the part as it is, not the same buffer; the region box in the verdict's colour
    calm = overlay.blend(image, np.zeros((120, 160), np.float32), (10, 20, 30, 40), "PASS")
    assert calm is not image and np.array_equal(calm[70:, 60:], image[70:, 60:])
    assert calm[20, 25].tolist() == [40, 170, 60]


def test_building_an_inspector_leaves_the_process_thread_pools_alone(tiny_recipe):
    import cv2
    import torch

    from core.engine import Inspector

    cv_before, torch_before = cv2.getNumThreads(), torch.get_num_threads()
    Inspector(tiny_recipe, threads=1)
    Inspector(tiny_recipe, backend="torch", threads=1)
    assert (cv2.getNumThreads(), torch.get_num_threads()) == (cv_before, torch_before)


def test_one_inspector_shared_by_four_threads_gives_the_results_of_one(tiny_recipe):
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from core.batch import batch_inspector
    from station.demo import PartGenerator

    recipe = dataclasses.replace(tiny_recipe, manifest={**tiny_recipe.manifest, "ignore_zones": [[0, 0, 16, 16]]})
    gen = PartGenerator("bracket", (128, 128), seed=3)
    # different sizes, so the threads race to fill the ignore-zone mask cache
    images = [gen.good(i).image if i % 3 else gen.defective(i).image for i in range(12)]
    images = [img if i % 2 else np.ascontiguousarray(img[: 120 - 2 * i]) for i, img in enumerate(images)]
    alone = batch_inspector(recipe, verify=False)
    want = [alone.inspect(img).verdict for img in images]
    shared = batch_inspector(recipe, verify=False)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda img: shared.inspect(img).verdict, images * 3))
    assert got == want * 3


def test_kept_overlays_of_large_images_are_made_at_a_bounded_size():
    from core import overlay

    small = np.full((300, 400, 3), 90, np.uint8)
    amap = np.zeros((30, 40), np.float32)
    amap[10:20, 10:20] = 3.0
    assert np.array_equal(overlay.blend_bounded(small, amap, (100, 100, 100, 100), "FAIL"),
                          overlay.blend(small, amap, (100, 100, 100, 100), "FAIL"))
    big = np.full((3000, 5000, 3), 90, np.uint8)
    out = overlay.blend_bounded(big, amap, (3000, 2000, 1000, 500), "FAIL", max_side=1000)
    assert out.shape == (600, 1000, 3)
    assert (out[250:350, 300:400] != 90).any()  # the tinted defect, where the map puts it
    assert (out[400, 620:780] != 90).all() and (out[50, :] == 90).all()  # the region's box, scaled by 0.2
