"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling).

The greedy step is memory-bound: one pass over all training patches per selected centre. We run
it on a low-dimensional view of the patches (the leading principal components, which keep the
geometry far better than a random projection of the same width), as contiguous float32 that fits
the CPU's last-level cache, with the distance update done in place.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class Cancelled(Exception):
    """Raised when the caller's cancel check returns True during long work."""


def coreset_size(n_patches: int, ratio: float, minimum: int, maximum: int) -> int:
    """Memory-bank size: ``ratio`` of the patches, clamped to [minimum, maximum] and to n."""
    k = int(round(n_patches * ratio))
    return int(min(n_patches, max(minimum, min(maximum, k))))


def greedy_coreset(
    points: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Indices of ``k`` points chosen by greedy k-center (farthest-point) selection.

    ``points``: (N, d) float32, already reduced to a few dozen dimensions by the caller.
    Each step adds the point farthest from the current centres, so rare patches (the ones that
    cause false alarms when missing from the bank) are kept first.
    """
    z = np.ascontiguousarray(points, dtype=np.float32)
    n = z.shape[0]
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    sq = np.einsum("ij,ij->i", z, z)
    min_d = np.full(n, np.inf, dtype=np.float32)
    d = np.empty(n, dtype=np.float32)
    selected = np.empty(k, dtype=np.int64)
    idx = int(np.random.default_rng(seed).integers(n))
    step = max(1, k // 50)
    for i in range(k):
        selected[i] = idx
        np.dot(z, z[idx], out=d)  # d = |z|^2 + |c|^2 - 2 z.c, computed in place
        d *= -2.0
        d += sq
        d += sq[idx]
        np.minimum(min_d, d, out=min_d)
        idx = int(min_d.argmax())
        if i % step == 0:
            if cancel is not None and cancel():
                raise Cancelled()
            if progress is not None:
                progress(i / k)
    if progress is not None:
        progress(1.0)
    return selected
