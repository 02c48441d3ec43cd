"""Product recipes: one versioned folder per product version, loaded without running code.

    <root>/<product>/v0003/
        manifest.json          schema version, backbone, framing (fixed/free, scale, lighting),
                               working size, ROI, limits per model, fusion, synthetic-defect check,
                               training summary, creation time, per-file sha256, content hash
        tensors.safetensors    projection, memory bank, Gaussian model, classifier weights,
                               held-out calibration scores
        embedder.onnx          exported inference graphs (data, not code)
        scorer.onnx
        reference.png          a good part, for drawing the region of interest

        signature.ed25519      optional: an Ed25519 signature of the content hash (``core.signing``)

Saves are atomic: everything is written and fsynced into a hidden temporary folder which is then
renamed to the next free version number, so a crash leaves either a complete version or none.
Loading checks the schema version, the content hash, every field the station reads
(``core.recipe_schema``), every file's hash and, when the caller trusts only signed recipes, the
signature; it refuses anything else with a message. ``load_latest_good`` is the one place that
picks "the newest usable recipe": a version that fails is named and the next older one tried.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .atomic import fsync_dir, write_durable
from .calibration import Threshold

if TYPE_CHECKING:
    from .signing import TrustedKeys

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: Gaussian second model, framing, PASS and FAIL limits, fusion
MODELS = ("patchcore", "gaussian", "classifier")  # the models a recipe may hold, in display order
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
REFERENCE = "reference.png"
SIGNATURE = "signature.ed25519"  # beside the manifest, outside the content hash (see core.signing)
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_PRODUCT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")


class RecipeError(Exception):
    """A recipe cannot be used; ``str()`` says why in plain words."""


class TensorKey:
    """The names of a recipe's tensors: the trainer writes them, the engine and the station read them."""

    PROJECTION_MEAN = "projection.mean"
    PROJECTION_COMPONENTS = "projection.components"
    PROJECTION_VARIANCES = "projection.variances"
    PATCHCORE_MEMORY = "patchcore.memory"
    PATCHCORE_SOURCE = "patchcore.source"
    GAUSSIAN_MEAN = "gaussian.mean"
    GAUSSIAN_WHITEN = "gaussian.whiten"
    CLASSIFIER_PREFIX = "classifier."  # + the torch state_dict keys of the defect classifier
    TYPICAL = "calibration.typical"  # PatchCore's typical patch distance of held-out good parts (unfamiliar check)
    CLASSIFIER_DEFECT = "calibration.classifier_defect"  # out-of-fold classifier scores of the labelled defects

    @staticmethod
    def position_norm(name: str, part: str) -> str:
        """A model's per-position map normalisation (fixed framing): ``part`` "mean" or "scale", (h, w)."""
        return f"position_norm.{name}.{part}"

    @staticmethod
    def calibration(name: str) -> str:
        """Held-out good-part scores of a model (raw units), or ``"fused"`` for the combined score."""
        return f"calibration.{name}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def check_product_name(name: str) -> str:
    name = str(name).strip()
    if not _PRODUCT_RE.match(name):
        raise RecipeError(
            "A product name must start with a letter or digit and use only letters, digits, "
            "spaces, '-', '_' or '.' (at most 64 characters)."
        )
    return name


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Recipe:
    manifest: dict[str, Any]
    tensors: dict[str, np.ndarray]
    onnx: dict[str, bytes] = field(default_factory=dict)  # model name -> serialized graph
    reference_png: bytes | None = None
    path: Path | None = None
    signed_by: str | None = None  # id of the trusted key whose signature was checked at load, else None

    # -- convenient views ----------------------------------------------------------------
    @property
    def product(self) -> str:
        return self.manifest["product"]

    @property
    def version(self) -> int:
        return int(self.manifest.get("version", 0))

    @property
    def label(self) -> str:
        return f"{self.product} v{self.version}"

    @property
    def backbone(self) -> str:
        return self.manifest["backbone"]["name"]

    @property
    def working_shape(self) -> tuple[int, int]:
        h, w = self.manifest["working_shape"]
        return int(h), int(w)

    @property
    def roi(self) -> tuple[int, int, int, int] | None:
        roi = self.manifest.get("roi")
        return None if roi is None else (int(roi[0]), int(roi[1]), int(roi[2]), int(roi[3]))

    @property
    def reference_size(self) -> tuple[int, int] | None:
        ref = self.manifest.get("reference_size")
        return None if ref is None else (int(ref[0]), int(ref[1]))

    @property
    def ignore_zones(self) -> list[tuple[int, int, int, int]]:
        return [(int(z[0]), int(z[1]), int(z[2]), int(z[3])) for z in self.manifest.get("ignore_zones", [])]

    @property
    def models(self) -> list[str]:
        return [m for m in MODELS if m in self.manifest["thresholds"]]

    def threshold(self, name: str) -> Threshold:
        return Threshold.from_dict(self.manifest["thresholds"][name])

    @property
    def framing(self):
        """The recipe's ``preprocess.Framing`` (how images become working images)."""
        from .preprocess import FIXED, Framing

        f = self.manifest.get("framing") or {}
        kind = f.get("kind", FIXED)
        return Framing(
            kind=kind,
            scale=float(f.get("scale", 1.0)),
            working_hw=self.working_shape if kind == FIXED else None,
            roi=self.roi if kind == FIXED else None,
            reference_wh=self.reference_size,
            normalise=bool(f.get("normalise", False)),
        )

    @property
    def fusion(self):
        """The recipe's ``fusion.Fusion`` (weights, standardisation, fused limits), or None."""
        from .fusion import Fusion

        f = self.manifest.get("fusion")
        return Fusion.from_dict(f) if f else None

    def calibration_scores(self, name: str) -> np.ndarray | None:
        """Held-out good scores of a model (raw units; ``"fused"`` for the fused score), or None."""
        v = self.tensors.get(TensorKey.calibration(name))
        return None if v is None else np.asarray(v, dtype=np.float64)

    def normalised_calibration_scores(self, name: str) -> np.ndarray | None:
        """The same, divided by the model's FAIL limit (1.0 = the limit); None when there are none."""
        raw = self.calibration_scores(name)
        if raw is None or raw.size == 0:
            return None
        if name == "fused":
            fusion = self.fusion
            if fusion is None or fusion.threshold is None:
                return None
            return raw / fusion.threshold.value
        return raw / self.threshold(name).value

    def model_info(self, name: str) -> dict:
        """The manifest's description of one model (sizes, grid, hyper-parameters); {} when absent."""
        return dict((self.manifest.get("models") or {}).get(name) or {})

    @property
    def unfamiliar_threshold(self) -> Threshold | None:
        """The limit of the unfamiliar-input check (PatchCore's typical patch distance), or None."""
        checks = self.manifest.get("checks") or {}
        return Threshold.from_dict(checks["unfamiliar"]) if "unfamiliar" in checks else None

    @property
    def backbone_digest(self) -> str | None:
        return (self.manifest.get("backbone") or {}).get("weights_sha256")

    @property
    def training(self) -> dict:
        """The training summary (counts, timings, budgets, config, sources...); {} for an old recipe."""
        return dict(self.manifest.get("training") or {})

    @property
    def budgets(self) -> tuple[float | None, float | None]:
        """(false-reject budget, review budget) the limits were fitted for, as probabilities (None: unknown)."""
        t = self.training
        return t.get("false_reject_budget"), t.get("review_budget")

    @property
    def framing_why(self) -> dict[str, str]:
        """Why the recipe chose its framing, lighting and resolution, in words, per choice."""
        return dict((self.manifest.get("framing") or {}).get("why") or {})

    @property
    def synthetic_check(self) -> dict | None:
        """The synthetic-defect self-check's summary (caught by size, AUROC), or None."""
        return self.training.get("synthetic") or None

    def with_thresholds(self, changes: dict[str, Threshold], note: str = "",
                        budgets: tuple[float, float] | None = None) -> "Recipe":
        """A copy with some thresholds replaced (saved later as a new version); ``budgets``: the
        (false-reject, review) budgets the new limits were fitted for."""
        manifest = json.loads(json.dumps(self.manifest))
        if budgets is not None:
            training = manifest.setdefault("training", {})
            training["false_reject_budget"], training["review_budget"] = float(budgets[0]), float(budgets[1])
        for name, thr in changes.items():
            if name == "fused" and manifest.get("fusion"):
                manifest["fusion"]["threshold"] = thr.to_dict()
                continue
            if name not in manifest["thresholds"]:
                raise RecipeError(f"This recipe has no '{name}' model.")
            manifest["thresholds"][name] = thr.to_dict()
        manifest.setdefault("history", []).append(
            {"from_version": self.version, "change": "thresholds", "note": note, "time": now_iso()}
        )
        return Recipe(manifest, dict(self.tensors), dict(self.onnx), self.reference_png, None)

    def size_bytes(self) -> int:
        """What the recipe takes on disk (tensors, graphs, reference image, manifest)."""
        tensors = st_save({k: np.ascontiguousarray(v) for k, v in self.tensors.items()})
        return (len(tensors) + sum(len(v) for v in self.onnx.values()) + len(self.reference_png or b"")
                + len(json.dumps(self.manifest).encode()))

    # -- persistence ---------------------------------------------------------------------
    def save(self, root: str | os.PathLike) -> Path:
        """Write this recipe as the next version of its product under ``root``; returns the folder."""
        product = check_product_name(self.product)
        product_dir = Path(root) / product
        product_dir.mkdir(parents=True, exist_ok=True)
        tmp = product_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            files: dict[str, bytes] = {TENSORS: st_save({k: np.ascontiguousarray(v) for k, v in self.tensors.items()})}
            for name, data in self.onnx.items():
                files[f"{name}.onnx"] = data
            if self.reference_png is not None:
                files[REFERENCE] = self.reference_png
            for fname, data in files.items():
                write_durable(tmp / fname, data)
            while True:
                version = next_version(root, product)
                manifest = dict(self.manifest)
                manifest.update(
                    schema_version=SCHEMA_VERSION,
                    product=product,
                    version=version,
                    created=manifest.get("created") or now_iso(),
                    files={fname: _sha256(data) for fname, data in sorted(files.items())},
                )
                manifest["content_hash"] = _content_hash(manifest)
                write_durable(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
                fsync_dir(tmp)
                target = product_dir / f"v{version:04d}"
                try:
                    os.rename(tmp, target)  # atomic; fails if the target exists (a concurrent save)
                except OSError:
                    if target.exists():
                        continue
                    raise
                break
            fsync_dir(product_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, trusted_keys: "TrustedKeys | str | os.PathLike | None" = None, *,
             product: str | None = None) -> "Recipe":
        """Load and check a recipe folder.

        ``trusted_keys``: None accepts an unsigned recipe; anything else (a ``signing.TrustedKeys``,
        or a folder of ``*.pub`` keys for ``signing.load_trusted_keys``) requires a signature by one
        of those keys. ``product``: the product folder the recipe was found in (a root layout); the
        manifest must name that same product.
        """
        from . import recipe_schema

        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise RecipeError(f"'{path}' is not a recipe folder (no {MANIFEST}).")
        try:
            if mpath.stat().st_size > recipe_schema.MAX_MANIFEST_BYTES:
                raise RecipeError(f"The recipe at '{path}' is damaged: its manifest is larger than "
                                  f"{recipe_schema.MAX_MANIFEST_BYTES >> 20} MB.")
            text = mpath.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"The recipe at '{path}' is damaged: its manifest cannot be read ({exc}).") from exc
        manifest = recipe_schema.parse_json(text, path)
        if not isinstance(manifest, dict):
            raise RecipeError(f"The recipe at '{path}' is damaged: its manifest is not a JSON object.")
        schema = manifest.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise RecipeError(
                f"The recipe at '{path}' uses schema version {_short(schema)}; this station reads version "
                f"{SCHEMA_VERSION}. Re-train the product with this station, or use a station of the "
                "matching version."
            )
        files = manifest.get("files")
        if not isinstance(files, dict) or TENSORS not in files:
            raise RecipeError(f"The recipe at '{path}' is damaged: its file list is missing.")
        recipe_schema.check_structure(manifest, path)  # bounded before it is hashed
        if manifest.get("content_hash") != _content_hash(manifest):
            raise RecipeError(f"The recipe at '{path}' is damaged: its manifest was altered.")
        # the checksum says the files agree with the manifest; now: is the manifest itself sane?
        recipe_schema.validate_manifest(manifest, path)
        if product is not None and manifest["product"] != product:
            raise RecipeError(
                f"Recipe {path}: its manifest names product {manifest['product']!r}, but it lies in the folder of "
                f"product {product!r}; a recipe is used only under its own product's folder."
            )
        blobs: dict[str, bytes] = {}
        for fname, digest in files.items():
            fpath = path / fname
            if "/" in fname or "\\" in fname or not fpath.is_file():
                raise RecipeError(f"The recipe at '{path}' is damaged: file '{fname}' is missing.")
            data = fpath.read_bytes()
            if _sha256(data) != digest:
                raise RecipeError(
                    f"The recipe at '{path}' is damaged: file '{fname}' does not match its checksum."
                )
            blobs[fname] = data
        signed_by = None
        if trusted_keys is not None:
            from .signing import check_signature

            signed_by = check_signature(path, manifest["content_hash"], trusted_keys)
        try:
            tensors = st_load(blobs.pop(TENSORS))
        except Exception as exc:  # safetensors raises its own error types
            raise RecipeError(f"The recipe at '{path}' is damaged: its tensors cannot be read ({exc}).") from exc
        reference = blobs.pop(REFERENCE, None)
        onnx = {fname[: -len(".onnx")]: data for fname, data in blobs.items() if fname.endswith(".onnx")}
        return cls(manifest=manifest, tensors=tensors, onnx=onnx, reference_png=reference, path=path,
                   signed_by=signed_by)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the recipe library on disk ----------------------------------------------------------
def versions(root: str | os.PathLike, product: str) -> list[int]:
    d = Path(root) / product
    if not d.is_dir():
        return []
    out = []
    for child in d.iterdir():
        m = _VERSION_RE.match(child.name)
        if m and child.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def next_version(root: str | os.PathLike, product: str) -> int:
    v = versions(root, product)
    return (v[-1] + 1) if v else 1


def products(root: str | os.PathLike) -> list[str]:
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted(p.name for p in r.iterdir() if p.is_dir() and not p.name.startswith(".") and versions(r, p.name))


def recipe_path(root: str | os.PathLike, product: str, version: int | None = None) -> Path:
    if not isinstance(product, str) or not _PRODUCT_RE.match(product) or product != product.strip():
        raise RecipeError(f"There is no recipe for product {_short(product)}: it is not a valid product name.")
    v = versions(root, product)
    if not v:
        raise RecipeError(f"There is no recipe for product '{product}'.")
    if version is None:
        version = v[-1]
    if version not in v:
        raise RecipeError(f"Product '{product}' has no version {version} (versions: {', '.join(map(str, v))}).")
    return Path(root) / product / f"v{version:04d}"


Skipped = list[tuple[Path, str]]  # (recipe folder, why it was not used)


def load_latest_good(root: str | os.PathLike, product: str | Sequence[str] | None = None,
                     trusted_keys: "TrustedKeys | str | os.PathLike | None" = None, *,
                     version: int | None = None) -> tuple[Recipe, Skipped]:
    """The newest recipe that loads and passes every check, and the ones skipped on the way.

    ``product``: one product (its versions newest first); a list of products (each in turn, newest
    version first); None: every product under ``root`` in ``products()`` order. ``version``: the
    first product's version to try before its others (a pinned version). A version that fails
    (damaged, invalid manifest, unsigned or wrongly signed when ``trusted_keys`` is given) is logged
    with its reason and skipped. Raises ``RecipeError`` naming every failure when none loads.
    """
    names = products(root) if product is None else [product] if isinstance(product, str) else list(product)
    skipped: Skipped = []
    for i, name in enumerate(names):
        try:
            recipe_path(root, name)  # a valid name with at least one version
        except RecipeError as exc:
            skipped.append((Path(root) / str(name), str(exc)))
            continue
        order = sorted(versions(root, name), reverse=True)
        if i == 0 and version:
            order = [version] + [v for v in order if v != version]
        for v in order:
            folder = Path(root) / name / f"v{v:04d}"
            try:
                recipe = Recipe.load(recipe_path(root, name, v), trusted_keys, product=name)
            except RecipeError as exc:
                log.warning("Skipping recipe %s: %s", folder, exc)
                skipped.append((folder, str(exc)))
                continue
            if skipped:
                log.warning("Using %s instead (%d newer or preferred recipe(s) skipped)", recipe.label, len(skipped))
            return recipe, skipped
    if not names:
        raise RecipeError(f"There is no recipe under '{root}'.")
    what = f"product '{names[0]}'" if len(names) == 1 else "any product"
    if len(skipped) == 1:
        raise RecipeError(skipped[0][1])
    raise RecipeError(f"No recipe of {what} can be used: " + " ".join(f"[{p.name}] {why}" for p, why in skipped))


def load_recipe(path_or_root: str | os.PathLike, product: str | None = None, version: int | None = None,
                trusted_keys: "TrustedKeys | str | os.PathLike | None" = None) -> Recipe:
    """Load a recipe from its folder, or by product (and version, default: the newest usable one,
    see ``load_latest_good``) under a root. A product folder may be given for ``path_or_root``."""
    if product is None:
        p = Path(path_or_root)
        if not (p / MANIFEST).is_file() and p.is_dir() and versions(p.parent, p.name):
            product, path_or_root = p.name, p.parent  # a product folder
        else:
            return Recipe.load(p, trusted_keys)
    if version is None:
        return load_latest_good(path_or_root, product, trusted_keys)[0]
    return Recipe.load(recipe_path(path_or_root, product, version), trusted_keys, product=product)
