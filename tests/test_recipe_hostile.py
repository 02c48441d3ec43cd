"""Recipes from a hostile or careless source: every manifest field checked before use, paths kept
inside the data folder, optional Ed25519 signatures, and a fallback past a bad newest version.

Each hostile edit recomputes the content hash the way an attacker would (the checksum passes), so
what refuses the recipe is the schema check, not the checksum. One tiny recipe is trained per
session (``tiny_recipe_path`` in conftest) and copied for each test.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from core.recipe import Recipe, RecipeError, load_recipe


def _attacker_hash(manifest: dict) -> str:
    """The content hash as anyone can recompute it (sha256 of the sorted, compact JSON body)."""
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _copy(src: Path, root: Path, product: str = "tiny", version: int = 1) -> Path:
    dst = root / product / f"v{version:04d}"
    shutil.copytree(src, dst)
    return dst


def _edit(folder: Path, edit=None, raw=None) -> None:
    """Apply ``edit(manifest)``, recompute the content hash, write it back (``raw``: then edit the text)."""
    m = json.loads((folder / "manifest.json").read_text())
    if edit is not None:
        edit(m)
    m["content_hash"] = _attacker_hash(m)
    text = json.dumps(m, indent=2)
    (folder / "manifest.json").write_text(raw(text) if raw else text)


def _set(*path, value=KeyError):
    def edit(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


def _huge_number(text: str) -> str:
    return text.replace('"size": 128', '"size": ' + "9" * 5000, 1)


def _deep(text: str) -> str:
    return text.replace('"roi": null', '"roi": ' + "[" * 100_000 + "]" * 100_000, 1)


HOSTILE = {  # id: (edit, raw-text edit, what the message must name)
    "product_traversal": (_set("product", value="../../../../escaped/evil"), None, "product"),
    "product_other_folder": (_set("product", value="other"), None, "product 'other'"),
    "no_thresholds": (_set("thresholds"), None, "thresholds is missing"),
    "no_working_shape": (_set("working_shape"), None, "working_shape is missing"),
    "no_backbone": (_set("backbone"), None, "backbone is missing"),
    "no_product": (_set("product"), None, "product is missing"),
    "threshold_without_low": (_set("thresholds", "patchcore", "low"), None, "thresholds.patchcore.low is missing"),
    "5000_digit_number": (None, _huge_number, "5000 digits"),
    "deep_nesting": (None, _deep, "damaged"),
    "backbone_path": (_set("backbone", "name", value="../etc/passwd"), None, "backbone.name"),
    "threshold_1e308": (_set("thresholds", "patchcore", "value", value=1e308), None, "thresholds.patchcore.value"),
    "threshold_inf": (_set("thresholds", "patchcore", "value", value=math.inf), None, "thresholds.patchcore.value"),
    "low_above_high": (lambda m: m["thresholds"]["patchcore"].update(low=m["thresholds"]["patchcore"]["high"] * 2),
                       None, "thresholds.patchcore.low"),
    "pass_above_fail": (lambda m: m["thresholds"]["gaussian"].update(pass_limit=m["thresholds"]["gaussian"]["value"] * 3),
                        None, "thresholds.gaussian.pass_limit"),
    "budget_too_big": (_set("thresholds", "gaussian", "budget", value=0.7), None, "thresholds.gaussian.budget"),
    "review_below_budget": (_set("training", "review_budget", value=0.001), None, "training.review_budget"),
    "ignore_everything": (_set("ignore_zones", value=[[0, 0, 128, 128]]), None, "ignore_zones"),
    "ignore_every_patch": (_set("ignore_zones", value=[[2, 2, 124, 124]]), None, "every patch"),
    "ignore_outside": (_set("ignore_zones", value=[[500, 500, 10, 10]]), None, "ignore_zones[0]"),
    "value_zero": (_set("thresholds", "gaussian", "value", value=0), None, "thresholds.gaussian.value"),
    "value_null": (_set("thresholds", "gaussian", "value", value=None), None, "thresholds.gaussian.value"),
    "value_nan": (_set("thresholds", "gaussian", "value", value=math.nan), None, "thresholds.gaussian.value"),
    "value_negative": (_set("thresholds", "gaussian", "value", value=-1.0), None, "thresholds.gaussian.value"),
    "value_string": (_set("thresholds", "gaussian", "value", value="4.2"), None, "thresholds.gaussian.value"),
    "fused_limit_zero": (_set("fusion", "threshold", "value", value=0.0), None, "fusion.threshold.value"),
    "unfamiliar_negative": (_set("checks", "unfamiliar", "high", value=-1.0), None, "checks.unfamiliar.high"),
    "weights_all_zero": (_set("fusion", "weights", value={"patchcore": 0.0, "gaussian": 0.0}), None, "fusion.weights"),
    "weight_unknown_model": (_set("fusion", "weights", value={"evil": 1.0}), None, "fusion.weights.evil"),
    "unknown_model": (lambda m: m["thresholds"].update(evil=m["thresholds"]["patchcore"]), None, "thresholds.evil"),
    "working_shape_odd": (_set("working_shape", value=[100, 128]), None, "working_shape"),
    "working_shape_huge": (_set("working_shape", value=[1 << 20, 1 << 20]), None, "working_shape[0]"),
    "working_shape_bool": (_set("working_shape", value=[True, 128]), None, "working_shape[0]"),
    "roi_outside": (_set("roi", value=[64, 64, 128, 128]), None, "roi"),
    "gaussian_grid_missing": (_set("models", "gaussian", "grid"), None, "models.gaussian.grid is missing"),
    "classifier_without_model": (lambda m: m["thresholds"].update(classifier=m["thresholds"]["patchcore"]),
                                 None, "models.classifier"),
    "file_outside": (lambda m: m["files"].update({"../x": "0" * 64}), None, "files must list plain file names"),
    "retrain_size_huge": (_set("training", "config", "size", value=10**12), None, "training.config.size"),
    "long_list": (_set("ignore_zones", value=[[0, 0, 1, 1]] * 300), None, "ignore_zones"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_manifest_is_refused_naming_the_field(case, tiny_recipe_path, tmp_path):
    edit, raw, named = HOSTILE[case]
    folder = _copy(tiny_recipe_path, tmp_path / "recipes")
    _edit(folder, edit, raw)
    loads = [lambda: load_recipe(tmp_path / "recipes", "tiny"), lambda: load_recipe(tmp_path / "recipes", "tiny", 1)]
    if case != "product_other_folder":  # a folder loaded on its own has no product folder to match
        loads.append(lambda: load_recipe(folder))
    for load in loads:
        with pytest.raises(RecipeError) as err:  # a RecipeError, never a KeyError/ValueError traceback
            load()
        message = str(err.value)
        assert named in message, message
        assert str(folder) in message and message.endswith(".") and len(message) < 600


def test_every_recipe_the_trainer_and_the_station_write_passes_the_schema(tiny_recipe, tmp_path):
    from core.calibration import Threshold
    from core.recipe_schema import validate_manifest

    root = tmp_path / "recipes"
    saved = Recipe(dict(tiny_recipe.manifest), dict(tiny_recipe.tensors), {}, tiny_recipe.reference_png).save(root)
    r1 = load_recipe(saved)
    thr = r1.threshold("patchcore")
    r2 = r1.with_thresholds({"patchcore": Threshold(**{**thr.to_dict(), "value": thr.value * 1.2,
                                                        "high": thr.high * 1.2})}, "what-if", budgets=(0.01, 0.2))
    r2 = load_recipe(r2.save(root))
    assert r2.version == 2
    for r in (tiny_recipe, r1, r2):
        validate_manifest(r.manifest, r.path)  # what the trainer and a what-if save are valid as they are
    # fields the trainer may add later are allowed where it adds them
    folder = _copy(tiny_recipe.path, tmp_path / "more")
    _edit(folder, lambda m: (m["training"].update(new_stat=[1, 2]), m["models"].update(new_model={"x": 1}),
                             m["framing"].update(new_choice="yes"), m["checks"].update(new_check={"y": 2}),
                             m.update(new_top_level={"z": 3})))
    assert load_recipe(folder).label == "tiny v1"


# -- paths stay inside the data folder ------------------------------------------------------------
def test_a_traversing_product_name_is_refused_and_nothing_is_written_outside(tiny_recipe_path, tmp_path):
    from core.store import StoredInspection
    from core.types import Decision
    from station.context import StationContext
    from station.teach_back import teach_back

    data = tmp_path / "a" / "b" / "data"  # products/../../../../ would be tmp_path
    ctx = StationContext(data_dir=data, config_dir=tmp_path / "config")
    try:
        folder = _copy(tiny_recipe_path, ctx.recipes_root)
        _edit(folder, _set("product", value="../../../../escaped/evil"))
        assert ctx.active_recipe() is None  # refused, logged
        with pytest.raises(RecipeError, match=r"product must be a product name.*escaped/evil"):
            ctx.load_recipe("tiny")
        kept = data / "images" / "part.png"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(b"\x89PNG kept image")
        record = StoredInspection(id=1, ts="2026-01-01T00:00:00", source="cam", recipe="../../../../escaped/evil",
                                  recipe_version=1, decision=Decision.FAIL, image_path=str(kept))
        with pytest.raises(ValueError, match="not a product name"):
            teach_back(ctx, record, "good")  # e.g. a row stored by an older station
        for bad in ("../evil", "..", "a/b", "/etc", " tiny"):
            with pytest.raises(ValueError):
                ctx.product_dir(bad)
        assert ctx.product_dir("tiny") == ctx.products_root.resolve() / "tiny"
    finally:
        ctx.close()
    outside = [p for p in tmp_path.rglob("*") if not (p.is_relative_to(data) or p.is_relative_to(tmp_path / "config")
                                                      or p in (tmp_path / "a", tmp_path / "a" / "b"))]
    assert outside == [] and not (tmp_path / "escaped").exists()


# -- signatures -------------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    from core.signing import generate_key

    private, public = generate_key(tmp_path / "keys" / "line1")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(public, trusted / "line1.pub")
    return private, trusted


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    from core.signing import SigningError, generate_key, key_id, load_private_key, load_public_key

    private, public = generate_key(tmp_path / "k")
    assert public == tmp_path / "k.pub" and b"PRIVATE KEY" in private.read_bytes()
    if os.name == "posix":
        assert (private.stat().st_mode & 0o777) == 0o600
    assert key_id(load_private_key(private).public_key()) == key_id(load_public_key(public))
    with pytest.raises(SigningError, match="already exists"):
        generate_key(tmp_path / "k")  # never overwritten


def test_a_signed_recipe_loads_and_keeps_its_identity(tiny_recipe_path, tmp_path, keys):
    from core.signing import sign_recipe, verify_recipe

    private, trusted = keys
    folder = _copy(tiny_recipe_path, tmp_path / "recipes")
    manifest_before = (folder / "manifest.json").read_bytes()
    sig = sign_recipe(folder, private)
    assert sig == folder / "signature.ed25519"
    assert (folder / "manifest.json").read_bytes() == manifest_before  # same content hash, same recipe
    kid = verify_recipe(folder, trusted)
    r = Recipe.load(folder, trusted)
    assert r.signed_by == kid and r.manifest["content_hash"] == json.loads(manifest_before)["content_hash"]
    assert load_recipe(folder).signed_by is None  # no keys given: not checked


def _tamper_tensor(folder: Path) -> None:
    data = bytearray((folder / "tensors.safetensors").read_bytes())
    data[-10] ^= 0x01
    (folder / "tensors.safetensors").write_bytes(bytes(data))
    _edit(folder, lambda m: m["files"].update({"tensors.safetensors": hashlib.sha256(data).hexdigest()}))


@pytest.mark.parametrize("tamper, message", [
    ("tensor", "changed after it was signed"),
    ("manifest", "changed after it was signed"),
    ("reference", "changed after it was signed"),
    ("forged_hash", "does not verify"),
    ("other_key", "not among the trusted keys"),
    ("garbage", "damaged"),
    ("unsigned", "is not signed"),
])
def test_a_tampered_or_unsigned_recipe_is_refused_when_signatures_are_required(
        tiny_recipe_path, tmp_path, keys, tamper, message):
    from core.signing import generate_key, sign_recipe

    private, trusted = keys
    folder = _copy(tiny_recipe_path, tmp_path / "recipes")
    if tamper != "unsigned":
        sign_recipe(folder, private)
    if tamper == "tensor":
        _tamper_tensor(folder)
    elif tamper == "manifest":
        _edit(folder, lambda m: m["thresholds"]["patchcore"].update(value=m["thresholds"]["patchcore"]["value"] * 1.01))
    elif tamper == "reference":
        png = (folder / "reference.png").read_bytes() + b"\0"
        (folder / "reference.png").write_bytes(png)
        _edit(folder, lambda m: m["files"].update({"reference.png": hashlib.sha256(png).hexdigest()}))
    elif tamper == "forged_hash":
        _tamper_tensor(folder)
        sig = json.loads((folder / "signature.ed25519").read_text())
        sig["content_hash"] = json.loads((folder / "manifest.json").read_text())["content_hash"]
        (folder / "signature.ed25519").write_text(json.dumps(sig))
    elif tamper == "other_key":
        other, _ = generate_key(tmp_path / "other")
        sign_recipe(folder, other)
    elif tamper == "garbage":
        (folder / "signature.ed25519").write_text("{" + "9" * 5000)
    with pytest.raises(RecipeError, match=message) as err:
        Recipe.load(folder, trusted)
    assert str(folder) in str(err.value)
    if tamper == "unsigned":
        assert load_recipe(folder).signed_by is None  # accepted when signatures are not required


def test_the_station_setting_requires_signed_recipes(tiny_recipe_path, tmp_path, keys):
    from core.signing import sign_recipe
    from station.context import StationContext, StationSettings

    private, trusted = keys
    ctx = StationContext(data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    try:
        folder = _copy(tiny_recipe_path, ctx.recipes_root)
        assert StationSettings().require_signed_recipes is False
        assert ctx.load_recipe("tiny").version == 1  # off by default: unsigned is fine
        ctx.settings.require_signed_recipes = True  # the default trusted-keys folder is empty
        assert ctx.trusted_keys_dir == tmp_path / "config" / "trusted-keys"
        with pytest.raises(RecipeError, match="is not signed"):
            ctx.load_recipe("tiny")
        assert ctx.active_recipe() is None
        sign_recipe(folder, private)
        with pytest.raises(RecipeError, match="not among the trusted keys"):
            ctx.load_recipe("tiny", 1)
        ctx.settings.trusted_keys_dir = str(trusted)
        ctx.save_settings()
        assert StationSettings.load(ctx.settings_path).require_signed_recipes is True
        assert ctx.load_recipe("tiny").signed_by and ctx.active_recipe().signed_by
    finally:
        ctx.close()


def test_the_cli_makes_keys_and_signs_recipes(tiny_recipe_path, tmp_path, capsys):
    from core.signing import verify_recipe
    from training.cli import main

    folder = _copy(tiny_recipe_path, tmp_path / "recipes")
    assert main(["keygen", str(tmp_path / "k" / "release")]) == 0
    assert main(["keygen", str(tmp_path / "k" / "release")]) == 2  # never overwritten
    assert main(["sign-recipe", str(folder.parent), "--key", str(tmp_path / "k" / "release")]) == 0  # product folder
    out = capsys.readouterr()
    assert "release.pub" in out.out and "already exists" in out.err and "Signed" in out.out
    assert verify_recipe(folder, tmp_path / "k" / "release.pub")
    _edit(folder, _set("thresholds", "patchcore", "value", value=1e308))
    assert main(["sign-recipe", str(folder), "--key", str(tmp_path / "k" / "release")]) == 2  # never signs a bad one
    assert "thresholds.patchcore.value" in capsys.readouterr().err


# -- the newest usable version ------------------------------------------------------------------------
def test_a_bad_newest_version_is_skipped_for_the_previous_one(tiny_recipe_path, tmp_path, caplog):
    from core.recipe import load_latest_good

    root = tmp_path / "recipes"
    _copy(tiny_recipe_path, root, version=1)
    v2 = _copy(tiny_recipe_path, root, version=2)
    _edit(v2, lambda m: (m.update(version=2), m.pop("thresholds")))
    recipe, skipped = load_latest_good(root, "tiny")
    assert recipe.version == 1 and recipe.path == root / "tiny" / "v0001"
    assert [p for p, _ in skipped] == [v2] and "thresholds is missing" in skipped[0][1]
    assert "v0002" in caplog.text and "thresholds is missing" in caplog.text
    assert load_recipe(root, "tiny").version == 1 and load_recipe(root / "tiny").version == 1
    with pytest.raises(RecipeError, match="thresholds is missing"):
        load_recipe(root, "tiny", 2)  # asked for by number: no fallback
    _edit(root / "tiny" / "v0001", _set("working_shape"))
    with pytest.raises(RecipeError, match="No recipe of product 'tiny'.*thresholds is missing.*working_shape"):
        load_latest_good(root, "tiny")


def test_an_unsigned_newest_version_falls_back_to_the_signed_one(tiny_recipe_path, tmp_path, keys):
    from core.recipe import load_latest_good
    from core.signing import sign_recipe

    private, trusted = keys
    root = tmp_path / "recipes"
    sign_recipe(_copy(tiny_recipe_path, root, version=1), private)
    _copy(tiny_recipe_path, root, version=2)
    recipe, skipped = load_latest_good(root, "tiny", trusted)
    assert recipe.path.name == "v0001" and recipe.signed_by and "is not signed" in skipped[0][1]


def test_the_station_passes_over_a_bad_recipe_that_sorts_first(tiny_recipe_path, tmp_path):
    from station.context import StationContext

    ctx = StationContext(data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    try:
        bad = _copy(tiny_recipe_path, ctx.recipes_root, product="aaa")  # sorts before "tiny"
        _edit(bad, lambda m: (m.update(product="aaa"), m["thresholds"]["patchcore"].update(value=1e308)))
        _copy(tiny_recipe_path, ctx.recipes_root, product="tiny", version=1)
        v2 = _copy(tiny_recipe_path, ctx.recipes_root, product="tiny", version=2)
        _edit(v2, lambda m: m.update(version=2, backbone={"name": "../etc/passwd"}))
        assert ctx.products() == ["aaa", "tiny"]
        recipe = ctx.active_recipe()
        assert recipe is not None and recipe.label == "tiny v1"
        assert [p for p, _ in ctx.skipped_recipes] == [bad, v2]
        assert "aaa v0001" in ctx.skipped_words() and "tiny v0002" in ctx.skipped_words()
        ctx.settings.active_product, ctx.settings.active_version = "tiny", 2  # a pinned version gone bad
        assert ctx.active_recipe().label == "tiny v1"
        assert ctx.load_recipe("tiny").label == "tiny v1" and ctx.skipped_recipes == [(v2, ctx.skipped_recipes[0][1])]
    finally:
        ctx.close()


def test_the_station_window_names_a_skipped_recipe_and_runs_on_the_previous_one(station, tiny_recipe_path, qtbot):
    ctx, make = station
    v2 = _copy(tiny_recipe_path, ctx.recipes_root, product="tiny", version=2)
    _edit(v2, lambda m: (m.update(version=2), m.pop("thresholds")))
    win = make()
    with qtbot.waitSignal(win.pipeline.recipe_changed, timeout=30000) as blocker:
        win.start()
    assert blocker.args[0].recipe.label == "tiny v1"
    assert "Skipped unusable recipe" in win.alert.text and "tiny v0002" in win.alert.text
