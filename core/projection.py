"""PCA projection of the concatenated patch features, fitted on good parts only.

The raw patch features are wide (1056 channels for Lite0). Projecting them onto their leading
principal components keeps the neighbourhood structure PatchCore needs (measured on MVTec bottle:
pixel AUROC 0.990 at 128 components vs 0.990 unprojected) while making every distance 8x cheaper.
The components come out ordered by variance, which the coreset step uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Projection:
    mean: np.ndarray  # (C,)
    components: np.ndarray  # (C, D), orthonormal columns
    variances: np.ndarray  # (D,) variance along each component (for whitening)

    @property
    def dim(self) -> int:
        return self.components.shape[1]

    def apply(self, patches: np.ndarray) -> np.ndarray:
        """(N, C) -> (N, D)."""
        return (patches - self.mean) @ self.components

    def apply_map(self, fmap: np.ndarray) -> np.ndarray:
        """(C, h, w) -> (D, h, w)."""
        c, h, w = fmap.shape
        return (self.apply(fmap.reshape(c, -1).T)).T.reshape(self.dim, h, w)


def fit_projection(patches: np.ndarray, dim: int, max_samples: int = 60000, seed: int = 0) -> Projection:
    """PCA from (N, C) patches via the covariance of at most ``max_samples`` rows."""
    n, c = patches.shape
    dim = int(min(dim, c, n))
    rng = np.random.default_rng(seed)
    rows = patches if n <= max_samples else patches[rng.choice(n, max_samples, replace=False)]
    rows = np.asarray(rows, dtype=np.float32)
    mean = rows.mean(axis=0, dtype=np.float64)
    centred = rows - mean.astype(np.float32)
    cov = (centred.T @ centred).astype(np.float64) / max(1, rows.shape[0] - 1)  # float32 GEMM, float64 eigh
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:dim]
    comps = evecs[:, order]
    # fix the sign so the projection is reproducible across LAPACK builds
    signs = np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(dim)])
    comps = comps * np.where(signs == 0, 1.0, signs)
    return Projection(
        mean=mean.astype(np.float32),
        components=np.ascontiguousarray(comps, dtype=np.float32),
        variances=np.maximum(evals[order], 1e-12).astype(np.float32),
    )
