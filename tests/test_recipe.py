import json
import shutil

import numpy as np
import pytest

from core import recipe as recipe_mod
from core.calibration import Threshold
from core.recipe import Recipe, RecipeError, load_recipe, products, versions


def _copy(tiny_recipe_path, tmp_path):
    dst = tmp_path / "r" / "tiny" / "v0001"
    shutil.copytree(tiny_recipe_path, dst)
    return dst


def test_manifest_has_the_documented_fields(tiny_recipe):
    m = tiny_recipe.manifest
    for key in ("schema_version", "product", "version", "created", "backbone", "working_shape", "roi",
                "thresholds", "training", "files", "content_hash", "reference_size"):
        assert key in m
    assert m["backbone"]["name"] == "efficientnet-lite0"
    assert set(m["thresholds"]) == {"patchcore", "gaussian"}
    assert m["training"]["n_good"] == 14
    assert tiny_recipe.onnx == {}  # inference graphs are built from the tensors at load
    assert m["framing"]["kind"] == "fixed" and "why" in m["framing"]
    assert set(m["fusion"]["weights"]) == {"patchcore", "gaussian"} and m["fusion"]["threshold"]["value"] > 0
    syn = m["training"]["synthetic"]
    assert syn["n_defects"] > 0 and 0.0 <= syn["caught"] <= 1.0 and len(syn["by_size"]) == 3


def test_tensors_load_without_running_code(tiny_recipe_path):
    # JSON, safetensors and a PNG only: data a loader parses, nothing it executes (no pickle)
    import struct

    suffixes = set()
    for f in tiny_recipe_path.iterdir():
        data = f.read_bytes()
        suffixes.add(f.suffix)
        if f.suffix == ".json":
            json.loads(data)
        elif f.suffix == ".safetensors":  # 8-byte header length, then a JSON header
            (n,) = struct.unpack("<Q", data[:8])
            assert isinstance(json.loads(data[8 : 8 + n]), dict)
        else:
            assert f.suffix == ".png" and data.startswith(b"\x89PNG")
    assert suffixes == {".json", ".safetensors", ".png"}


def test_save_creates_next_version_atomically(tiny_recipe, tmp_path):
    root = tmp_path / "recipes"
    p1 = Recipe(dict(tiny_recipe.manifest), dict(tiny_recipe.tensors), dict(tiny_recipe.onnx), tiny_recipe.reference_png).save(root)
    p2 = Recipe(dict(tiny_recipe.manifest), dict(tiny_recipe.tensors), dict(tiny_recipe.onnx), tiny_recipe.reference_png).save(root)
    assert (p1.name, p2.name) == ("v0001", "v0002")
    assert versions(root, "tiny") == [1, 2] and products(root) == ["tiny"]
    assert not [p for p in (root / "tiny").iterdir() if p.name.startswith(".")]
    r2 = load_recipe(root, "tiny")
    assert r2.version == 2
    np.testing.assert_array_equal(r2.tensors["patchcore.memory"], tiny_recipe.tensors["patchcore.memory"])


def test_failed_save_leaves_nothing(tiny_recipe, tmp_path, monkeypatch):
    root = tmp_path / "recipes"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(recipe_mod.os, "rename", boom)
    with pytest.raises(OSError):
        Recipe(dict(tiny_recipe.manifest), dict(tiny_recipe.tensors), dict(tiny_recipe.onnx)).save(root)
    assert list((root / "tiny").iterdir()) == []


def test_other_schema_version_is_refused_with_a_clear_message(tiny_recipe_path, tmp_path):
    dst = _copy(tiny_recipe_path, tmp_path)
    m = json.loads((dst / "manifest.json").read_text())
    m["schema_version"] = 99
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RecipeError, match="schema version 99"):
        load_recipe(dst)


@pytest.mark.parametrize("damage", ["flip_tensor_byte", "drop_reference", "edit_threshold", "garbage_manifest"])
def test_damaged_recipe_is_refused(tiny_recipe_path, tmp_path, damage):
    dst = _copy(tiny_recipe_path, tmp_path)
    if damage == "flip_tensor_byte":
        data = bytearray((dst / "tensors.safetensors").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (dst / "tensors.safetensors").write_bytes(bytes(data))
    elif damage == "drop_reference":
        (dst / "reference.png").unlink()
    elif damage == "edit_threshold":
        m = json.loads((dst / "manifest.json").read_text())
        m["thresholds"]["patchcore"]["value"] *= 2
        (dst / "manifest.json").write_text(json.dumps(m))
    else:
        (dst / "manifest.json").write_text("{not json")
    with pytest.raises(RecipeError, match="damaged"):
        load_recipe(dst)


def test_with_thresholds_makes_a_new_version_and_keeps_the_old(tiny_recipe_path, tmp_path):
    dst = _copy(tiny_recipe_path, tmp_path)
    root = dst.parent.parent
    r1 = load_recipe(dst)
    old = r1.threshold("patchcore")
    new = Threshold(**{**old.to_dict(), "value": old.value * 1.1})
    p = r1.with_thresholds({"patchcore": new}, note="what-if").save(root)
    assert p.name == "v0002"
    assert load_recipe(root, "tiny", 2).threshold("patchcore").value == pytest.approx(old.value * 1.1)
    assert load_recipe(root, "tiny", 1).threshold("patchcore") == old
    with pytest.raises(RecipeError):
        r1.with_thresholds({"nope": new})


def test_bad_product_names_and_missing_versions(tmp_path):
    with pytest.raises(RecipeError):
        recipe_mod.check_product_name("../etc")
    with pytest.raises(RecipeError, match="no recipe"):
        load_recipe(tmp_path, "nothing")
    with pytest.raises(RecipeError, match="not a recipe folder"):
        load_recipe(tmp_path / "x")


def test_the_schema_is_read_through_the_recipe_and_the_tensor_keys(tiny_recipe):
    from core.recipe import TensorKey

    K = TensorKey
    for key in (K.PROJECTION_MEAN, K.PROJECTION_COMPONENTS, K.PROJECTION_VARIANCES, K.PATCHCORE_MEMORY,
                K.PATCHCORE_SOURCE, K.GAUSSIAN_MEAN, K.GAUSSIAN_WHITEN, K.TYPICAL):
        assert key in tiny_recipe.tensors, key  # the trainer wrote what the engine reads
    for m in tiny_recipe.models:
        raw = tiny_recipe.calibration_scores(m)
        norm = tiny_recipe.normalised_calibration_scores(m)
        assert raw is not None and raw.size > 0
        np.testing.assert_allclose(norm, raw / tiny_recipe.threshold(m).value)
    fused = tiny_recipe.normalised_calibration_scores("fused")
    np.testing.assert_allclose(fused, tiny_recipe.calibration_scores("fused") / tiny_recipe.fusion.threshold.value)
    assert tiny_recipe.normalised_calibration_scores("classifier") is None  # this recipe has none
    assert tiny_recipe.model_info("patchcore")["bank_size"] == len(tiny_recipe.tensors[K.PATCHCORE_MEMORY])
    assert tiny_recipe.model_info("classifier") == {}
    fr, rv = tiny_recipe.budgets
    assert 0 < fr < rv < 1
    assert tiny_recipe.unfamiliar_threshold is not None and tiny_recipe.backbone_digest
    assert set(tiny_recipe.framing_why) and tiny_recipe.training["n_good"] > 0


def test_new_limits_carry_the_budgets_they_were_fitted_for(tiny_recipe):
    new = tiny_recipe.with_thresholds({}, "tighter", budgets=(0.001, 0.05))
    assert new.budgets == (0.001, 0.05) and tiny_recipe.budgets != (0.001, 0.05)
    assert new.manifest["history"][-1]["note"] == "tighter"
