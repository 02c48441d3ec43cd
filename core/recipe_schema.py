"""What a recipe manifest may hold: checked before anything in it is used (``Recipe.load``).

A recipe comes from disk, possibly from another machine: its content hash proves only that the
files agree with the manifest, not that the manifest is sane (anyone who edits it can recompute the
hash). So every field the station reads is checked here for presence, type and range, and every
name that becomes a path or selects code (product, backbone, model names) against what is known.
A failed check raises ``RecipeError`` with one sentence naming the recipe folder and the field:

    Recipe /data/recipes/bracket/v0002: thresholds.patchcore.value must be a positive finite
    number of at most 1e+12 (got 1e+308).

Plain Python (and NumPy for the ignore-zone coverage); no schema library. Unknown keys are allowed
where the trainer may add fields (the top level, ``training``, ``models``, ``framing``, ``checks``,
the limits' own dicts): nothing reads them, and the size limits below still bound them.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NoReturn

from .recipe import MODELS, SIGNATURE, TENSORS, RecipeError, check_product_name

SCORE_NAMES = (*MODELS, "fused")  # every score a recipe sets limits for
FRAMING_KINDS = ("fixed", "free")
MAX_MANIFEST_BYTES = 64 << 20  # a real manifest is a few tens of KB (a long skipped-files list: a few MB)
MAX_INT_DIGITS = 30  # JSON integers longer than this are refused before Python converts them
MAX_DEPTH = 32
MAX_NODES = 2_000_000
MAX_LIST = 1_000_000
MAX_STRING = 1 << 20
MAX_TEXT = 1 << 16  # a field the station shows or parses (a limit's method, a history note)
MAX_MAGNITUDE = 1e12  # raw scores: distances can be large, but not astronomically
MAX_SIDE = 65536  # working image side, pixels
MAX_WORKING_PIXELS = 1 << 26  # 64 M working pixels (the free framing's own cap is 4 M)
MAX_IMAGE_SIDE = 1_000_000  # reference image side, pixels
MAX_ZONES = 256
MAX_FILES = 64
MAX_COUNT = 1_000_000_000
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_THRESHOLD_KEYS = ("value", "low", "high", "budget", "n", "method", "expected_false_reject", "good_max")


class _HugeNumber(ValueError):
    def __init__(self, digits: int):
        super().__init__(digits)
        self.digits = digits


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _HugeNumber(digits)
    return int(text)


def parse_json(text: str, where: str | Path, what: str = "manifest") -> Any:
    """JSON from a recipe's file, refusing integers of more than MAX_INT_DIGITS digits and nesting
    deep enough to exhaust the stack (both would otherwise escape as ValueError / RecursionError)."""
    try:
        return json.loads(text, parse_int=_parse_int)
    except _HugeNumber as exc:
        raise RecipeError(
            f"Recipe {where}: its {what} holds a number with {exc.digits} digits; numbers of more than "
            f"{MAX_INT_DIGITS} digits are refused."
        ) from None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        raise RecipeError(f"The recipe at '{where}' is damaged: its {what} cannot be read ({exc}).") from None


def _show(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".6g")
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)[:80]
    return text if len(text) <= 80 else text[:77] + "..."


class _Checker:
    def __init__(self, where: str | Path):
        self.where = str(where)

    def fail(self, field: str, must: str, got: Any = ...) -> NoReturn:
        shown = "" if got is ... else f" (got {_show(got)})"
        raise RecipeError(f"Recipe {self.where}: {field} {must}{shown}.")

    # -- containers --------------------------------------------------------------------------
    def get(self, d: dict, key: str, field: str) -> Any:
        if key not in d:
            raise RecipeError(f"Recipe {self.where}: {field} is missing.")
        return d[key]

    def dict(self, v: Any, field: str) -> dict:
        if not isinstance(v, dict):
            self.fail(field, "must be a JSON object", v)
        return v

    def list(self, v: Any, field: str, max_len: int, length: int | None = None) -> list:
        if not isinstance(v, list):
            self.fail(field, "must be a list", v)
        if length is not None and len(v) != length:
            self.fail(field, f"must be a list of {length} values", v)
        if len(v) > max_len:
            self.fail(field, f"must hold at most {max_len} entries (it holds {len(v)})")
        return v

    # -- scalars -----------------------------------------------------------------------------
    def number(self, v: Any, field: str, lo: float = -MAX_MAGNITUDE, hi: float = MAX_MAGNITUDE, *,
               lo_open: bool = False, hi_open: bool = False, must: str | None = None) -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok:
            ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            if must is None:
                left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
                must = f"must be a finite number in {left}{_show(float(lo))}, {_show(float(hi))}{right}"
            self.fail(field, must, v)
        return float(v)

    def positive(self, v: Any, field: str, hi: float = MAX_MAGNITUDE) -> float:
        return self.number(v, field, 0.0, hi, lo_open=True,
                           must=f"must be a positive finite number of at most {_show(float(hi))}")

    def integer(self, v: Any, field: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
        if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
            self.fail(field, f"must be a whole number from {lo} to {hi}", v)
        return int(v)

    def boolean(self, v: Any, field: str) -> bool:
        if not isinstance(v, bool):
            self.fail(field, "must be true or false", v)
        return v

    def text(self, v: Any, field: str, max_len: int = MAX_TEXT) -> str:
        if not isinstance(v, str):
            self.fail(field, "must be a string", v)
        if len(v) > max_len:
            self.fail(field, f"must be at most {max_len} characters long (it has {len(v)})")
        return v

    def choice(self, v: Any, field: str, allowed) -> str:
        if not isinstance(v, str) or v not in allowed:
            self.fail(field, f"must be one of {', '.join(allowed)}", v)
        return v

    def box(self, v: Any, field: str) -> tuple[int, int, int, int]:
        """An (x, y, w, h) box in reference pixels, w and h positive."""
        self.list(v, field, 4, length=4)
        x, y = (self.integer(c, f"{field}[{i}]", -MAX_IMAGE_SIDE, MAX_IMAGE_SIDE) for i, c in enumerate(v[:2]))
        w, h = (self.integer(c, f"{field}[{i + 2}]", 1, MAX_IMAGE_SIDE) for i, c in enumerate(v[2:]))
        return x, y, w, h


def _bounded(c: _Checker, manifest: dict) -> None:
    """Depth, size and string limits over the whole manifest (known and unknown keys alike)."""
    stack: list[tuple[Any, int]] = [(manifest, 0)]
    nodes = 0
    while stack:
        obj, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            c.fail("the manifest", f"must hold at most {MAX_NODES} values")
        if depth > MAX_DEPTH:
            c.fail("the manifest", f"must not nest deeper than {MAX_DEPTH} levels")
        if isinstance(obj, str):
            if len(obj) > MAX_STRING:
                c.fail("the manifest", f"must not hold strings longer than {MAX_STRING} characters")
        elif isinstance(obj, list):
            if len(obj) > MAX_LIST:
                c.fail("the manifest", f"must not hold lists longer than {MAX_LIST} entries")
            stack.extend((v, depth + 1) for v in obj)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if len(k) > MAX_STRING:
                    c.fail("the manifest", f"must not hold keys longer than {MAX_STRING} characters")
                stack.append((v, depth + 1))


def check_structure(manifest: dict, where: str | Path) -> None:
    """The size limits alone (before the content hash is computed over the manifest)."""
    _bounded(_Checker(where), manifest)


def _threshold(c: _Checker, t: Any, field: str, band_holds_value: bool = False) -> None:
    """A ``calibration.Threshold`` as ``to_dict`` writes it: a positive FAIL limit, the PASS limit at
    most the FAIL limit, a bootstrap band 0 <= low <= high, budgets as ``calibration.check_budgets``
    wants them. The band is information for the engineer: a limit set by hand may leave it (the
    station scales it along, other callers need not), so ``low <= value <= high`` is required only
    with ``band_holds_value`` (the unfamiliar check, whose upper band the engine uses as its limit)."""
    t = c.dict(t, field)
    for key in _THRESHOLD_KEYS:
        c.get(t, key, f"{field}.{key}")
    value = c.positive(t["value"], f"{field}.value")
    high = c.positive(t["high"], f"{field}.high")
    c.number(t["low"], f"{field}.low", 0.0, high,
             must=f"must be a finite number from 0 to {field}.high ({_show(high)})")
    if band_holds_value and not float(t["low"]) <= value <= high:
        c.fail(f"{field}.value", f"must lie in its band {field}.low..{field}.high "
                                 f"({_show(float(t['low']))}..{_show(high)})", value)
    budget = c.number(t["budget"], f"{field}.budget", 0.0, 0.5, lo_open=True, hi_open=True,
                      must="must be a false-reject budget between 0 and 0.5")
    if t.get("review_budget") is not None:
        c.number(t["review_budget"], f"{field}.review_budget", budget, 1.0, lo_open=True, hi_open=True,
                 must=f"must be a review budget between the false-reject budget ({_show(budget)}) and 1")
    if t.get("pass_limit") is not None:
        c.number(t["pass_limit"], f"{field}.pass_limit", 0.0, value,
                 must=f"must be a finite number from 0 to the FAIL limit {field}.value ({_show(value)})")
    c.integer(t["n"], f"{field}.n", 1)
    c.text(t["method"], f"{field}.method")
    c.number(t["expected_false_reject"], f"{field}.expected_false_reject", 0.0, 1.0)
    c.number(t["good_max"], f"{field}.good_max")
    if "centre" in t:
        c.number(t["centre"], f"{field}.centre")


def _ignore_zones(c: _Checker, zones: list, ref_wh: tuple[int, int] | None, manifest: dict) -> None:
    if not zones:
        return
    if ref_wh is None:
        c.fail("reference_size", "is missing (the ignore zones are given in its pixels)")
    rw, rh = ref_wh
    clipped = []
    for i, z in enumerate(zones):
        x, y, w, h = c.box(z, f"ignore_zones[{i}]")
        x0, y0, x1, y1 = max(0, x), max(0, y), min(rw, x + w), min(rh, y + h)
        if x1 <= x0 or y1 <= y0:
            c.fail(f"ignore_zones[{i}]", f"must lie inside the reference image ({rw}x{rh} px)", z)
        clipped.append((x0, y0, x1, y1))
    # the union's area, exactly (the zones' edges split the image into cells)
    import numpy as np

    xs = np.unique([0, rw, *[b[0] for b in clipped], *[b[2] for b in clipped]])
    ys = np.unique([0, rh, *[b[1] for b in clipped], *[b[3] for b in clipped]])
    covered = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for x0, y0, x1, y1 in clipped:
        covered[np.searchsorted(ys, y0):np.searchsorted(ys, y1), np.searchsorted(xs, x0):np.searchsorted(xs, x1)] = True
    area = float((np.diff(ys)[:, None] * np.diff(xs)[None, :] * covered).sum())
    if area >= float(rw) * float(rh):
        c.fail("ignore_zones", "must leave part of the image to inspect (together they cover all of it)")
    framing = manifest.get("framing") or {}
    if framing.get("kind", "fixed") == "fixed":  # what the engine ignores: patch cells whose centre is in a zone
        from . import preprocess

        h, w = manifest["working_shape"]
        geo = preprocess.geometry((rh, rw), (h, w), manifest.get("roi"), (rw, rh))
        mask = preprocess.ignore_mask([list(z) for z in zones], (rw, rh), geo)
        if mask is not None and bool(mask.all()):
            c.fail("ignore_zones", "must leave part of the image to inspect (they cover every patch the models "
                                   "look at)")


def _training(c: _Checker, t: Any) -> None:
    t = c.dict(t, "training")
    for key in ("n_good", "n_defect", "gaussian_folds", "calibration_images"):
        if key in t:
            c.integer(t[key], f"training.{key}")
    fr = t.get("false_reject_budget")
    if fr is not None:
        fr = c.number(fr, "training.false_reject_budget", 0.0, 0.5, lo_open=True, hi_open=True,
                      must="must be a false-reject budget between 0 and 0.5")
    if t.get("review_budget") is not None:
        lo = fr if fr is not None else 0.0
        c.number(t["review_budget"], "training.review_budget", lo, 1.0, lo_open=True, hi_open=True,
                 must="must be a review budget between the false-reject budget and 1")
    if t.get("parent_version") is not None:
        c.integer(t["parent_version"], "training.parent_version")
    for key in ("skipped",):
        if key in t:
            for i, s in enumerate(c.list(t[key], f"training.{key}", MAX_LIST)):
                c.dict(s, f"training.{key}[{i}]")
    for key in ("sources", "stage_seconds", "resolution"):
        if t.get(key) is not None:
            c.dict(t[key], f"training.{key}")
    for key in ("synthetic", "classifier"):
        if t.get(key) is not None:
            c.dict(t[key], f"training.{key}")
    if t.get("config") is not None:
        _train_config(c, c.dict(t["config"], "training.config"))


def _train_config(c: _Checker, cfg: dict) -> None:
    """The TrainConfig a retrain reuses (``station.retrain.config_from``): sane values only."""
    from .backbone import BACKBONES

    f = "training.config"
    for key in ("size", "fine_size"):
        if key in cfg:
            c.integer(cfg[key], f"{f}.{key}", 1, MAX_SIDE)
    for key in ("pca_dim", "pca_images", "pca_samples", "bank_min", "bank_max", "bank_pool", "gaussian_folds",
                "calibration_images", "calibration_patches", "synthetic_images", "synthetic_per_image", "min_good"):
        if key in cfg:
            c.integer(cfg[key], f"{f}.{key}")
    if "bank_ratio" in cfg:
        c.number(cfg["bank_ratio"], f"{f}.bank_ratio", 0.0, 1.0, lo_open=True)
    if "position_weight" in cfg:
        c.number(cfg["position_weight"], f"{f}.position_weight", 0.0, 1e6)
    if "seed" in cfg:
        c.integer(cfg["seed"], f"{f}.seed", -(2**63), 2**63 - 1)
    if cfg.get("threads") is not None:
        c.integer(cfg["threads"], f"{f}.threads", 1, 4096)
    if "backbone" in cfg:
        c.choice(cfg["backbone"], f"{f}.backbone", tuple(BACKBONES))
    for key, allowed in (("resolution", ("auto", "base", "fine")), ("framing", ("auto", "fixed", "free")),
                         ("normalise", ("auto", "on", "off"))):
        if key in cfg:
            c.choice(cfg[key], f"{f}.{key}", allowed)
    fr = cfg.get("false_reject_budget")
    if fr is not None:
        fr = c.number(fr, f"{f}.false_reject_budget", 0.0, 0.5, lo_open=True, hi_open=True,
                      must="must be a false-reject budget between 0 and 0.5")
    if cfg.get("review_budget") is not None:
        c.number(cfg["review_budget"], f"{f}.review_budget", fr or 0.0, 1.0, lo_open=True, hi_open=True,
                 must="must be a review budget between the false-reject budget and 1")
    if cfg.get("roi") is not None:
        c.box(cfg["roi"], f"{f}.roi")
    if cfg.get("ignore_zones") is not None:
        for i, z in enumerate(c.list(cfg["ignore_zones"], f"{f}.ignore_zones", MAX_ZONES)):
            c.box(z, f"{f}.ignore_zones[{i}]")


def validate_manifest(manifest: Any, where: str | Path) -> None:
    """Raise ``RecipeError`` unless ``manifest`` is a recipe this station can use safely."""
    from .backbone import BACKBONES, MIN_SIDE, SIZE_MULTIPLE

    c = _Checker(where)
    m = c.dict(manifest, "the manifest")
    _bounded(c, m)

    # names: the product becomes folder names, the backbone selects the network
    product = c.get(m, "product", "product")
    if not isinstance(product, str):
        c.fail("product", "must be a string", product)
    try:
        ok = check_product_name(product) == product
    except RecipeError:
        ok = False
    if not ok:
        c.fail("product", "must be a product name: a letter or digit first, then only letters, digits, spaces, "
                          "'-', '_' or '.', at most 64 characters", product)
    backbone = c.dict(c.get(m, "backbone", "backbone"), "backbone")
    c.choice(c.get(backbone, "name", "backbone.name"), "backbone.name", tuple(BACKBONES))
    digest = backbone.get("weights_sha256")
    if digest is not None and not (isinstance(digest, str) and _HEX64.match(digest)):
        c.fail("backbone.weights_sha256", "must be a sha256 in hex", digest)

    # geometry
    ws = c.list(c.get(m, "working_shape", "working_shape"), "working_shape", 2, length=2)
    h, w = (c.integer(v, f"working_shape[{i}]", MIN_SIDE, MAX_SIDE) for i, v in enumerate(ws))
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        c.fail("working_shape", f"must be multiples of {SIZE_MULTIPLE} pixels", ws)
    if h * w > MAX_WORKING_PIXELS:
        c.fail("working_shape", f"must hold at most {MAX_WORKING_PIXELS} pixels", ws)
    ref_wh = None
    if m.get("reference_size") is not None:
        ref = c.list(m["reference_size"], "reference_size", 2, length=2)
        rw, rh = (c.integer(v, f"reference_size[{i}]", 1, MAX_IMAGE_SIDE) for i, v in enumerate(ref))
        ref_wh = (rw, rh)
    if m.get("roi") is not None:
        x, y, bw, bh = c.box(m["roi"], "roi")
        if x < 0 or y < 0 or (ref_wh is not None and (x + bw > ref_wh[0] or y + bh > ref_wh[1])):
            where_ref = f" ({ref_wh[0]}x{ref_wh[1]} px)" if ref_wh else ""
            c.fail("roi", f"must lie inside the reference image{where_ref}", m["roi"])
    if m.get("framing") is not None:
        fr = c.dict(m["framing"], "framing")
        if "kind" in fr:
            c.choice(fr["kind"], "framing.kind", FRAMING_KINDS)
        if "scale" in fr:
            c.number(fr["scale"], "framing.scale", 0.0, 1e4, lo_open=True,
                     must="must be a positive finite number of at most 1e+04")
        if "normalise" in fr:
            c.boolean(fr["normalise"], "framing.normalise")
        if fr.get("why") is not None:
            for k, v in c.dict(fr["why"], "framing.why").items():
                c.text(v, f"framing.why.{k}")
    zones = m.get("ignore_zones")
    if zones is not None:
        _ignore_zones(c, c.list(zones, "ignore_zones", MAX_ZONES), ref_wh, m)

    # models and their limits
    thresholds = c.dict(c.get(m, "thresholds", "thresholds"), "thresholds")
    for name in thresholds:
        if name not in MODELS:
            c.fail(f"thresholds.{name}", f"is not a model this station knows (models: {', '.join(MODELS)})")
    for name in ("patchcore", "gaussian"):
        c.get(thresholds, name, f"thresholds.{name}")
    for name, t in thresholds.items():
        _threshold(c, t, f"thresholds.{name}")
    models = c.dict(m.get("models") or {}, "models")
    gauss = c.dict(c.get(models, "gaussian", "models.gaussian"), "models.gaussian")
    grid = c.list(c.get(gauss, "grid", "models.gaussian.grid"), "models.gaussian.grid", 2, length=2)
    for i, v in enumerate(grid):
        c.integer(v, f"models.gaussian.grid[{i}]", 0, MAX_SIDE)  # (0, 0): free framing
    c.integer(c.get(gauss, "block", "models.gaussian.block"), "models.gaussian.block", 1, MAX_SIDE)
    if "per_position" in gauss:
        c.boolean(gauss["per_position"], "models.gaussian.per_position")
    for key in ("dim",):
        if key in gauss:
            c.integer(gauss[key], f"models.gaussian.{key}", 1, 1 << 16)
    if models.get("patchcore") is not None:
        pc = c.dict(models["patchcore"], "models.patchcore")
        if "position_weight" in pc:
            c.number(pc["position_weight"], "models.patchcore.position_weight", 0.0, 1e6)
        for key in ("bank_size", "dim"):
            if key in pc:
                c.integer(pc[key], f"models.patchcore.{key}", 1)
    clf = models.get("classifier")
    if clf:
        clf = c.dict(clf, "models.classifier")
        for key in ("channels", "hidden", "top_k"):
            c.integer(c.get(clf, key, f"models.classifier.{key}"), f"models.classifier.{key}", 1, 1 << 16)
    if bool(clf) != ("classifier" in thresholds):
        c.fail("thresholds.classifier", "and models.classifier must be both present or both absent")

    if m.get("fusion") is not None:
        fu = c.dict(m["fusion"], "fusion")
        weights = c.dict(c.get(fu, "weights", "fusion.weights"), "fusion.weights")
        if not weights:
            c.fail("fusion.weights", "must name at least one model")
        for key in ("centres", "scales"):
            part = c.dict(c.get(fu, key, f"fusion.{key}"), f"fusion.{key}")
            for name in part:
                if name not in MODELS:
                    c.fail(f"fusion.{key}.{name}", f"is not a model this station knows (models: {', '.join(MODELS)})")
        total = 0.0
        for name, v in weights.items():
            if name not in thresholds:
                c.fail(f"fusion.weights.{name}", "must be one of the recipe's models "
                                                 f"({', '.join(n for n in MODELS if n in thresholds)})")
            total += c.number(v, f"fusion.weights.{name}", 0.0, 1e6)
            c.number(c.get(fu["centres"], name, f"fusion.centres.{name}"), f"fusion.centres.{name}")
            c.positive(c.get(fu["scales"], name, f"fusion.scales.{name}"), f"fusion.scales.{name}")
        if total <= 0.0:
            c.fail("fusion.weights", "must not all be zero", weights)
        if fu.get("threshold") is not None:
            _threshold(c, fu["threshold"], "fusion.threshold")
        if "chosen_by" in fu:
            c.text(fu["chosen_by"], "fusion.chosen_by")
        if fu.get("candidates") is not None:
            for i, cand in enumerate(c.list(fu["candidates"], "fusion.candidates", 256)):
                c.dict(cand, f"fusion.candidates[{i}]")
    if m.get("checks") is not None:
        checks = c.dict(m["checks"], "checks")
        if checks.get("unfamiliar") is not None:
            _threshold(c, checks["unfamiliar"], "checks.unfamiliar", band_holds_value=True)

    # bookkeeping
    if m.get("training") is not None:
        _training(c, m["training"])
    if m.get("history") is not None:
        for i, entry in enumerate(c.list(m["history"], "history", 100_000)):
            c.dict(entry, f"history[{i}]")
    if "version" in m:
        c.integer(m["version"], "version", 1)
    if m.get("size") is not None:
        c.integer(m["size"], "size", 1, MAX_SIDE)
    if m.get("created") is not None:
        c.text(m["created"], "created", 64)
    files = c.dict(c.get(m, "files", "files"), "files")
    if TENSORS not in files:
        c.fail("files", f"must list {TENSORS}")
    if len(files) > MAX_FILES:
        c.fail("files", f"must list at most {MAX_FILES} files (it lists {len(files)})")
    for fname, digest in files.items():
        if not _FILE_RE.match(fname) or len(fname) > 128 or fname == SIGNATURE:
            c.fail("files", "must list plain file names of this folder", fname)
        if not (isinstance(digest, str) and _HEX64.match(digest)):
            c.fail(f"files.{fname}", "must be a sha256 in hex", digest)
    content_hash = c.get(m, "content_hash", "content_hash")
    if not (isinstance(content_hash, str) and _HEX64.match(content_hash)):
        c.fail("content_hash", "must be a sha256 in hex", content_hash)
