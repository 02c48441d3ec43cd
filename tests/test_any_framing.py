"""What a recipe chooses from its good images: fixed or free framing, lighting normalisation."""
import numpy as np
import pytest

from core import preprocess
from station.demo import PartGenerator
from core.engine import Inspector
from core.trainer import TrainConfig, TrainingError, train_recipe
from core.types import Decision, Reason

FAST = dict(min_good=10, gaussian_folds=3, synthetic_images=12, synthetic_per_image=1, resolution="base")


def test_framing_is_fixed_when_the_good_images_agree_and_free_when_they_vary():
    same = [(300, 300)] * 40
    assert preprocess.choose_framing(same)[0] == preprocess.FIXED
    # a few odd ones do not make a product freely framed (they are skipped at training)
    assert preprocess.choose_framing(same + [(300, 600)] * 2)[0] == preprocess.FIXED
    rng = np.random.default_rng(0)
    varied = [(int(h), int(w)) for h, w in rng.integers(80, 400, size=(40, 2))]
    kind, why = preprocess.choose_framing(varied)
    assert kind == preprocess.FREE and "vary" in why
    # same proportions but other sizes: another field of view, so free as well
    assert preprocess.choose_framing([(s, s) for s in range(100, 500, 10)])[0] == preprocess.FREE


def test_lighting_is_normalised_only_when_the_good_images_brightness_varies():
    gen = PartGenerator("bracket", (96, 96), seed=2)
    even = [gen.good(i).image for i in range(12)]
    assert preprocess.choose_normalise(even)[0] is False
    rng = np.random.default_rng(1)
    uneven = [np.clip(im * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8) for im in even]
    on, why = preprocess.choose_normalise(uneven)
    assert on and "normalised" in why
    # normalised: the same part under another exposure gives nearly the same working image
    a = preprocess.normalise_lighting(even[0])
    b = preprocess.normalise_lighting(np.clip(even[0] * 0.7, 0, 255).astype(np.uint8))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4.0
    assert preprocess.normalise_lighting(np.full((8, 8, 3), 40, np.uint8)).std() == 0.0  # blank stays blank


def _crop(image, rng, h, w):
    y = int(rng.integers(0, image.shape[0] - h + 1))
    x = int(rng.integers(0, image.shape[1] - w + 1))
    return np.ascontiguousarray(image[y : y + h, x : x + w])


@pytest.fixture(scope="module")
def free_recipe():
    gen = PartGenerator("fabric", (256, 256), seed=5)
    rng = np.random.default_rng(3)
    goods = [_crop(gen.good(i).image, rng, int(rng.integers(96, 200)), int(rng.integers(96, 240))) for i in range(18)]
    return train_recipe(goods, product="fabric-crops", config=TrainConfig(size=128, **FAST)), gen


def test_freely_framed_goods_train_a_free_recipe_that_judges_any_size(free_recipe):
    recipe, gen = free_recipe
    assert recipe.framing.kind == preprocess.FREE
    assert recipe.manifest["models"]["gaussian"]["per_position"] is False
    assert recipe.manifest["models"]["patchcore"]["position_weight"] == 0.0
    ins = Inspector(recipe)
    assert ins.backend == "onnx", ins.fallback_reason  # one graph for every size
    rng = np.random.default_rng(9)
    for h, w in ((112, 248), (224, 96), (160, 160)):
        good = _crop(gen.good(40).image, rng, h, w)
        r = ins.inspect(good)
        assert r.maps["patchcore"].shape == (h, w)
        assert Reason.UNFAMILIAR_INPUT not in r.verdict.reasons, r.verdict.notes  # no framing is unfamiliar
        assert r.decision is not Decision.FAIL
    # a defect inside a crop of yet another size is found
    caught = 0
    for i in range(41, 47):
        part = gen.defective(i)
        ys, xs = np.nonzero(part.mask)
        cy, cx = int(ys.mean()), int(xs.mean())
        y0, x0 = max(0, min(cy - 60, 256 - 128)), max(0, min(cx - 90, 256 - 176))
        caught += ins.inspect(part.image[y0 : y0 + 128, x0 : x0 + 176]).decision is not Decision.PASS
    assert caught >= 5


def test_free_framing_refuses_a_region_of_interest(free_recipe):
    _, gen = free_recipe
    rng = np.random.default_rng(4)
    goods = [_crop(gen.good(i).image, rng, int(rng.integers(96, 200)), int(rng.integers(96, 240))) for i in range(12)]
    with pytest.raises(TrainingError, match="need fixed framing"):
        train_recipe(goods, product="x", config=TrainConfig(size=128, roi=(0, 0, 50, 50), **FAST))


def test_a_lighting_normalised_recipe_judges_structure_not_exposure():
    gen = PartGenerator("washer_gray", (128, 128), seed=4)
    rng = np.random.default_rng(2)
    goods = [np.clip(gen.good(i).image * rng.uniform(0.65, 1.3), 0, 255).astype(np.uint8) for i in range(16)]
    recipe = train_recipe(goods, product="washer", config=TrainConfig(size=128, **FAST))
    assert recipe.framing.normalise and "normalised" in recipe.manifest["framing"]["why"]["lighting"]
    ins = Inspector(recipe)
    part = gen.good(30).image
    dim, bright = (np.clip(part * f, 0, 255).astype(np.uint8) for f in (0.7, 1.25))
    a, b = ins.inspect(dim), ins.inspect(bright)
    assert a.decision is not Decision.FAIL and b.decision is not Decision.FAIL
    d = ins.inspect(gen.defective(30).image)
    assert d.decision is not Decision.PASS
    # exposure moves a model's score (in units of its FAIL limit) far less than a defect does
    for m in ("patchcore", "gaussian"):
        sa, sb, sd = (x.verdict.score_of(m).score for x in (a, b, d))
        assert abs(sa - sb) < 0.5 * (sd - max(sa, sb)), (m, sa, sb, sd)
