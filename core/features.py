"""Patch features for training: the backbone's raw taps, the projection fitted on them, embedding.

Inference embeds through the recipe's exported graph (``core.engine``); training uses the very
same graphs here (ONNX Runtime when installed, torch otherwise), so the features the models are
fitted on are the features inspection will see. Graphs take any working size (fully
convolutional), so freely framed images of different sizes share one session.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from . import onnx_runtime, preprocess
from .backbone import aggregate, load_extractor, upsample2x
from .networks import Embedder
from .projection import Projection, fit_projection


class FeatureExtractor:
    """Raw patch features of a backbone (before the projection), for fitting the projection."""

    def __init__(self, backbone: str, threads: int | None = None):
        self.backbone = backbone
        self.threads = threads
        self.use_ort = onnx_runtime.available()
        self._raw = onnx_runtime.OrtModel(onnx_runtime.raw_extractor_graph(backbone), threads) if self.use_ort else None

    def raw(self, working: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 working image -> (C, H/8, W/8) float32 aggregated patch features."""
        x = preprocess.to_tensor(working)
        with torch.no_grad():
            if self._raw is not None:
                f4, t8, t16 = (torch.from_numpy(t) for t in self._raw(x))
                f = torch.cat([f4, aggregate(t8), upsample2x(aggregate(t16))], dim=1)
            else:
                f = load_extractor(self.backbone)(torch.from_numpy(x))
        return f[0].numpy()

    def fit_projection(self, workings: Sequence[np.ndarray], dim: int, samples: int, seed: int,
                       tick: Callable[[float], None] | None = None) -> Projection:
        """PCA of raw patch features sampled evenly from ``workings``."""
        rng = np.random.default_rng(seed)
        per_image = max(64, samples // max(1, len(workings)))
        rows = []
        for i, w in enumerate(workings):
            f = self.raw(w)
            flat = f.reshape(f.shape[0], -1).T
            rows.append(flat[rng.choice(len(flat), min(per_image, len(flat)), replace=False)])
            if tick is not None:
                tick((i + 1) / len(workings))
        return fit_projection(np.concatenate(rows), dim, max_samples=samples, seed=seed)


class Embedding:
    """Projected patch features through the recipe's embedder graph (or its torch module)."""

    def __init__(self, backbone: str, projection: Projection, threads: int | None = None):
        self.projection = projection
        self.module = Embedder(load_extractor(backbone), projection).eval()
        self.graph: bytes | None = None
        self._ort = None
        if onnx_runtime.available():
            self.graph = onnx_runtime.append_projection(
                onnx_runtime.raw_extractor_graph(backbone), projection.mean, projection.components
            )
            self._ort = onnx_runtime.OrtModel(self.graph, threads)

    def __call__(self, working: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (D, H/8, W/8) float32 projected features."""
        x = preprocess.to_tensor(working)
        if self._ort is not None:
            return self._ort(x)[0][0]
        with torch.no_grad():
            return self.module(torch.from_numpy(x))[0].numpy()

    def many(self, workings: Sequence[np.ndarray], tick: Callable[[float], None] | None = None) -> list[np.ndarray]:
        out = []
        for i, w in enumerate(workings):
            out.append(self(w))
            if tick is not None:
                tick((i + 1) / max(1, len(workings)))
        return out
