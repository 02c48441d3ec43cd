"""Per-position normalisation of a model's smoothed anomaly map (fixed framing).

A distance map of good parts is not flat: edges, threads, reflections and the part's border score
higher than plain surface in every good image, so a small defect on a quiet spot can stay below the
normal peak of a busy one, and the image score (the map's peak) misses it. On a fixed-framing
product each position has its own normal level, measured on the held-out good maps the calibration
already computes: the map is brought to "how unusual for *this* place", z = (s - mean) / scale.

Measured with ``station-cli evaluate`` and the defaults (image AUROC; statistics from good images
only): PatchCore 0.912 -> 0.950 on ball-screw pitting and 0.956 -> 0.960 on solar cells; the
per-position Gaussian, already position-aware, 0.958 -> 0.959 and 0.953 -> 0.956 (the full table
with this turned off as an ablation: ``docs/BENCHMARKS.md``).

* The scale has a floor (``FLOOR`` x the median scale) so that a position that hardly varies in the
  good images cannot turn a tiny difference into a huge score.
* The statistics are shrunk towards the whole map's typical level by ``PRIOR`` pseudo-images, so a
  recipe from a few good images is close to the plain map.
* Held-out scores for calibration are leave-one-out: each good image's z uses statistics computed
  without it (exact, from running sums), so the limits are not fitted on images that set their own
  normal level.
Free framing has no positions to normalise: its maps are used as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

FLOOR = 0.5  # scale floor, as a share of the median per-position scale
PRIOR = 10.0  # pseudo-images pulling every position's statistics towards the map's typical ones
MIN_IMAGES = 5  # fewer held-out maps than this: no normalisation


@dataclass(frozen=True)
class PositionNorm:
    """z = (map - mean) / scale, cell by cell; ``mean`` and ``scale`` are (h, w) float32."""

    mean: np.ndarray
    scale: np.ndarray

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.mean.shape[0]), int(self.mean.shape[1])

    def apply(self, smooth: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
        if smooth.shape != self.mean.shape:
            raise ValueError(f"map {smooth.shape} differs from the normalisation grid {self.mean.shape}")
        z = (np.asarray(smooth, np.float32) - self.mean) / self.scale
        if ignore is not None:
            z[ignore] = 0.0
        return z

    @staticmethod
    def _stats(s1: np.ndarray, s2: np.ndarray, n: float, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        m0 = float(np.median(mean[valid]))
        v0 = float(np.median(var[valid]))
        mean = (n * mean + PRIOR * m0) / (n + PRIOR)
        var = (n * var + PRIOR * v0) / (n + PRIOR)
        scale = np.sqrt(var)
        floor = max(FLOOR * float(np.median(scale[valid])), 1e-6)
        return mean, np.maximum(scale, floor)

    @staticmethod
    def _sums(maps: Sequence[np.ndarray], ignore: np.ndarray | None):
        """(stacked maps, sum, sum of squares, the cells that count) in float64."""
        a = np.stack([np.asarray(m, np.float64) for m in maps])
        valid = np.ones(a.shape[1:], bool) if ignore is None or ignore.all() else ~ignore
        return a, a.sum(0), (a * a).sum(0), valid

    @classmethod
    def fit(cls, maps: Sequence[np.ndarray], ignore: np.ndarray | None = None) -> "PositionNorm":
        """Statistics of smoothed held-out good maps (all of one grid)."""
        a, s1, s2, valid = cls._sums(maps, ignore)
        mean, scale = cls._stats(s1, s2, float(len(a)), valid)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    @classmethod
    def leave_one_out_scores(cls, maps: Sequence[np.ndarray], ignore: np.ndarray | None = None) -> np.ndarray:
        """Each map's image score (peak z) under statistics fitted on all the other maps."""
        a, s1, s2, valid = cls._sums(maps, ignore)
        n = len(a)
        out = np.empty(n, np.float64)
        for i in range(n):
            mean, scale = cls._stats(s1 - a[i], s2 - a[i] * a[i], float(n - 1), valid)
            out[i] = float(((a[i] - mean) / scale)[valid].max())
        return out


def usable(n_maps: int) -> bool:
    return n_maps >= MIN_IMAGES
