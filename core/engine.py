"""The inspection engine: a recipe in, ``Inspection`` results out. No Qt, no global state.

    inspector = Inspector(load_recipe(path))          # ONNX Runtime when available, torch otherwise
    result = inspector.inspect(rgb_uint8_image)       # -> core.types.Inspection

An Inspector may be shared by threads: ``inspect`` keeps its working data local, ONNX Runtime
sessions serve concurrent runs, torch modules run in eval mode under ``no_grad``, and the two
members filled on first use (the ignore-zone mask per image size, the torch embedder) are behind a
lock (``tests/test_engine.py`` checks that four threads get the results one thread gets). Building
one changes no process-wide setting: thread pools are the process owner's (``core.runtime``).

The ONNX graphs stored in the recipe are checked against the torch modules when the inspector is
built (numeric tolerance below); on a mismatch or a missing runtime the inspector falls back to
torch and says why in ``fallback_reason``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from . import anomaly_map, onnx_runtime, preprocess
from .backbone import FEATURE_STRIDE, load_extractor, weights_digest
from .calibration import Threshold
from .fusion import fuse, model_score
from .images import ImageError, to_rgb8
from .gaussian import GaussianDistances, GaussianModel
from .networks import DefectClassifier, Embedder, PatchCoreDistances, Scorer
from .patchcore import PatchCore, position_channels
from .position_norm import PositionNorm
from .projection import Projection
from .recipe import Recipe, RecipeError, TensorKey
from .types import Inspection, frozen_mapping

log = logging.getLogger(__name__)

FEATURE_TOLERANCE = 2e-3  # max error relative to the feature magnitude, ONNX vs torch
OUTPUT_TOLERANCE = 1e-2  # Gaussian distances and classifier outputs
UNFAMILIAR_MARGIN = 1.75  # x the upper band of the held-out good parts' median patch distance


@dataclass
class RecipeModels:
    """The torch / NumPy models a recipe holds, rebuilt from its tensors."""

    projection: Projection
    patchcore: PatchCore
    gaussian: GaussianModel
    classifier: DefectClassifier | None
    scorer: Scorer  # PatchCore distances + Gaussian distances (+ classifier) as one torch module
    norms: dict[str, PositionNorm]  # per-position map normalisation by model (fixed framing; may be empty)

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "RecipeModels":
        t, K = recipe.tensors, TensorKey
        try:
            projection = Projection(t[K.PROJECTION_MEAN], t[K.PROJECTION_COMPONENTS], t[K.PROJECTION_VARIANCES])
            pc_info = recipe.model_info("patchcore")
            patchcore = PatchCore(t[K.PATCHCORE_MEMORY], t[K.PATCHCORE_SOURCE], float(pc_info.get("position_weight", 0.0)))
            g = recipe.model_info("gaussian")
            gaussian = GaussianModel(np.asarray(t[K.GAUSSIAN_MEAN], np.float32), np.asarray(t[K.GAUSSIAN_WHITEN], np.float32),
                                     (int(g["grid"][0]), int(g["grid"][1])), int(g["block"]))
            clf = None
            if recipe.model_info("classifier"):
                clf = DefectClassifier(**recipe.model_info("classifier"))
                clf.load_state_dict(_prefixed(t, K.CLASSIFIER_PREFIX))
            norms = {}
            grid = (recipe.working_shape[0] // FEATURE_STRIDE, recipe.working_shape[1] // FEATURE_STRIDE)
            for m in ("patchcore", "gaussian"):
                if K.position_norm(m, "mean") in t:
                    norm = PositionNorm(np.asarray(t[K.position_norm(m, "mean")], np.float32),
                                        np.asarray(t[K.position_norm(m, "scale")], np.float32))
                    if norm.grid != grid or norm.scale.shape != norm.mean.shape or not (norm.scale > 0).all():
                        raise ValueError(f"the {m} position normalisation does not fit the {grid[0]}x{grid[1]} grid")
                    norms[m] = norm
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise RecipeError(f"The recipe {recipe.label} is incomplete or damaged ({exc}).") from exc
        clf = clf.eval() if clf else None
        position = None
        if patchcore.position_weight > 0:
            h, w = recipe.working_shape
            position = position_channels(h // FEATURE_STRIDE, w // FEATURE_STRIDE, patchcore.position_weight)
        scorer = Scorer(PatchCoreDistances(patchcore.memory, position), GaussianDistances(gaussian), clf).eval()
        return cls(projection, patchcore, gaussian, clf, scorer, norms)


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix)}


class Inspector:
    def __init__(self, recipe: Recipe, backend: str = "auto", threads: int | None = None, verify: bool = True,
                 spin: bool = True):
        """``spin``: ONNX Runtime threads spin between operators (lowest latency; see
        ``onnx_runtime.session``). Pass False where other busy threads share the cores."""
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError("backend must be 'auto', 'onnx' or 'torch'")
        self.recipe = recipe
        self.models = RecipeModels.from_recipe(recipe)
        self.thresholds: dict[str, Threshold] = {m: recipe.threshold(m) for m in recipe.models}
        self.fusion = recipe.fusion
        self.framing = recipe.framing
        self.unfamiliar = recipe.unfamiliar_threshold
        self.threads = threads
        self.fallback_reason: str | None = None
        self._embedder: Embedder | None = None
        self._ort: dict[str, onnx_runtime.OrtModel] = {}
        self._reference_aspect = self.framing.reference_aspect
        self._mask_cache: dict[tuple[int, int], np.ndarray | None] = {}
        self._lock = threading.Lock()  # guards the two lazily filled members: mask cache, torch embedder

        want_onnx = backend in ("auto", "onnx")
        if want_onnx and not onnx_runtime.available():
            self.fallback_reason = "ONNX Runtime is not installed"
        elif want_onnx:
            try:
                graphs = self._graphs()
                # the embedder alone serves checks and feature extraction: it never spins
                self._ort["embedder"] = onnx_runtime.OrtModel(graphs["embedder"], threads, spin=False)
                self._ort["inspect"] = onnx_runtime.OrtModel(
                    onnx_runtime.chain(graphs["embedder"], graphs["scorer"]), threads, spin=spin
                )
                if verify:
                    self._verify()
            except Exception as exc:  # any failure here means: use torch
                self._ort = {}
                self.fallback_reason = f"ONNX check failed: {exc}"
        if self.fallback_reason:
            if backend == "onnx":
                raise RecipeError(f"Cannot use ONNX Runtime for {recipe.label}: {self.fallback_reason}.")
            log.warning("Using torch for %s: %s", recipe.label, self.fallback_reason)
        self.backend = "onnx" if self._ort else "torch"
        if self.backend == "torch":  # torch's thread count is the process owner's (core.runtime)
            self.torch_embedder()

    # -- models --------------------------------------------------------------------------
    def _graphs(self) -> dict[str, bytes]:
        """The inference graphs: the recipe's own if it carries them, else built from its tensors
        (the backbone graph comes from the user's cache; the scorer is exported in about a second).
        Either way they are checked against the torch modules before use (``_verify``)."""
        if "embedder" in self.recipe.onnx and "scorer" in self.recipe.onnx:
            return {"embedder": self.recipe.onnx["embedder"], "scorer": self.recipe.onnx["scorer"]}
        proj = self.models.projection
        embedder = onnx_runtime.append_projection(
            onnx_runtime.raw_extractor_graph(self.recipe.backbone), proj.mean, proj.components)
        h, w = self.recipe.working_shape
        example = torch.zeros(1, proj.dim, h // FEATURE_STRIDE, w // FEATURE_STRIDE)
        scorer = self.models.scorer
        return {"embedder": embedder,
                "scorer": onnx_runtime.export(scorer, example, scorer.output_names, spatial=scorer.any_size)}

    def torch_embedder(self) -> Embedder:
        with self._lock:
            return self._torch_embedder()

    def _torch_embedder(self) -> Embedder:
        if self._embedder is None:
            name = self.recipe.backbone
            expected = self.recipe.backbone_digest
            if expected and expected != weights_digest(name):
                raise RecipeError(
                    f"The recipe {self.recipe.label} was trained with other {name} weights than the "
                    "ones installed here."
                )
            self._embedder = Embedder(load_extractor(name), self.models.projection).eval()
        return self._embedder

    def _verify(self) -> None:
        """Compare every ONNX graph with its torch module on a fixed input."""
        h, w = self.recipe.working_shape  # free framing: the reference image's working size
        rng = np.random.default_rng(0)
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
        x = preprocess.to_tensor(img)
        with torch.no_grad():
            ref = self.torch_embedder()(torch.from_numpy(x)).numpy()
        got = self._ort["embedder"](x)[0]
        err = onnx_runtime.max_relative_error(ref, got)
        if err > FEATURE_TOLERANCE:
            raise RuntimeError(f"embedder differs from torch by {err:.2e}")
        with torch.no_grad():
            want = self.models.scorer(torch.from_numpy(ref))
        for name, a, b in zip(self.models.scorer.output_names, want, self._ort["inspect"](x)):
            err = onnx_runtime.max_relative_error(a.numpy(), b)
            if err > OUTPUT_TOLERANCE:
                raise RuntimeError(f"{name} differs from torch by {err:.2e}")

    # -- inference ------------------------------------------------------------------------
    def features(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, D, h, w) projected patch features."""
        if self._ort:
            return self._ort["embedder"](x)[0]
        with torch.no_grad():
            return self.torch_embedder()(torch.from_numpy(x)).numpy()

    def run_models(self, x: np.ndarray) -> list[np.ndarray]:
        """(1, 3, H, W) image -> [PatchCore distances, Gaussian distances (1, 1, h, w)(, probability, CAM)]."""
        if self._ort:
            return self._ort["inspect"](x)
        with torch.no_grad():
            return [t.numpy() for t in self.models.scorer(self.torch_embedder()(torch.from_numpy(x)))]

    def _ignore(self, geo: preprocess.Geometry) -> np.ndarray | None:
        if not self.framing.fixed or not self.recipe.ignore_zones:
            return None
        key = geo.image_hw
        with self._lock:
            if key not in self._mask_cache:
                self._mask_cache[key] = preprocess.ignore_mask(
                    self.recipe.ignore_zones, self.recipe.reference_size, geo
                )
            return self._mask_cache[key]

    def inspect(self, image: np.ndarray, *, source: str = "", frame_id: int = -1, with_maps: bool = True,
                map_side: int | None = None) -> Inspection:
        """Inspect one decoded image (RGB uint8; other layouts are converted).

        Maps cover the whole image; by default they have its size. ``map_side`` caps their
        longest side (batches use the working size: the patch grid holds no finer detail, and
        drawing code resizes a map to the image it is drawn on).
        """
        t0 = time.perf_counter()
        if image.size == 0 or image.ndim < 2 or min(image.shape[:2]) < 2:
            raise ImageError("unsupported_format", message=f"The image is empty or too small ({image.shape}).")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            image = to_rgb8(image, order="rgb")
        timings: dict[str, float] = {}
        geo = self.framing.geometry(image.shape[:2])
        working = preprocess.crop_resize(image, geo)
        notes = preprocess.framing_problems(geo.image_hw, working, self._reference_aspect)
        x = preprocess.to_tensor(self.framing.model_input(working))
        t1 = time.perf_counter()
        timings["preprocess"] = (t1 - t0) * 1e3

        outs = self.run_models(x)  # embedder + PatchCore + Gaussian (+ classifier)
        t3 = time.perf_counter()
        timings["models"] = (t3 - t1) * 1e3
        ignore = self._ignore(geo)
        grids: dict[str, np.ndarray] = {"patchcore": outs[0][0, 0], "gaussian": outs[1][0, 0]}
        if self.models.classifier is not None:
            prob, cam = float(outs[2][0]), outs[3][0, 0]
            peak = float(cam.max())
            grids["classifier"] = cam * (prob / peak) if peak > 0 else cam
        if ignore is not None:
            for g in grids.values():
                g[ignore] = 0.0
        pc = grids["patchcore"]
        smooth = {name: anomaly_map.smooth_grid(g, FEATURE_STRIDE) for name, g in grids.items()}
        if ignore is not None:  # smoothing must not carry a neighbour's score into an ignore zone
            for g in smooth.values():
                g[ignore] = 0.0
        for name, norm in self.models.norms.items():  # how unusual for this place (core.position_norm)
            smooth[name] = norm.apply(smooth[name], ignore)
        raw = {name: anomaly_map.image_score(g, ignore) for name, g in smooth.items()}
        if "classifier" in grids:
            raw["classifier"] = prob

        scores = [model_score(m, raw[m], self.thresholds[m]) for m in self.recipe.models]
        if self.unfamiliar is not None:
            # A defect changes a region; a wrong product, pose or lighting changes the typical patch.
            typical = float(np.median(pc if ignore is None else pc[~ignore]))
            if typical > self.unfamiliar.high * UNFAMILIAR_MARGIN:
                notes.append(
                    "The part does not look like the product this recipe was trained on "
                    f"(its typical area differs {typical / self.unfamiliar.value:.1f}x as much as usual): "
                    "wrong product, position or lighting?"
                )
        verdict = fuse(scores, self.fusion, notes)
        t5 = time.perf_counter()
        timings["fuse"] = (t5 - t3) * 1e3

        maps: dict[str, np.ndarray] = {}
        region = None
        if with_maps:
            roi = geo.roi if not geo.full_frame else None
            out_hw = anomaly_map.map_shape(geo.image_hw, map_side)
            for name, sm in smooth.items():
                sm = sm * np.float32(1.0 / self.thresholds[name].value)
                maps[name] = anomaly_map.to_image(sm, geo.image_hw, roi, out_hw)
                if name == "patchcore":
                    region = anomaly_map.region_in_image(
                        sm, geo.working_hw, geo.roi, self.thresholds["patchcore"].band[0]
                    )
        t6 = time.perf_counter()
        timings["maps"] = (t6 - t5) * 1e3
        latency = (t6 - t0) * 1e3
        return Inspection(
            verdict=verdict,
            maps=frozen_mapping(maps),
            region=region,
            image_shape=(int(image.shape[0]), int(image.shape[1])),
            latency_ms=latency,
            timings_ms=frozen_mapping(timings),
            recipe=self.recipe.product,
            recipe_version=self.recipe.version,
            source=source,
            frame_id=frame_id,
        )
