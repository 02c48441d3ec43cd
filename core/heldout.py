"""Held-out scores: what each model says about good images (and synthetic defects) it did not see.

Limits and fusion weights are set from scores of images a model was *not* fitted on:

* PatchCore: leave-one-image-out, each image scored against the bank without the entries it
  contributed (``PatchCore.distance_grid(exclude_source=i)``);
* Gaussian: k-fold, each image scored by the model of the other folds (cheap, because the model
  is kept as sums: the other folds' model is the total minus this fold).

A synthetic defect pasted into good image ``i`` is scored by exactly the models that did not see
image ``i``, so the synthetic-defect check is held out too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from . import anomaly_map, position_norm
from .backbone import FEATURE_STRIDE
from .gaussian import GaussianModel, GaussianSums, accumulate
from .patchcore import POSITION_WEIGHT, PatchCore, position_channels
from .position_norm import PositionNorm


@dataclass
class GaussianFolds:
    """The Gaussian model's sums per fold, and the model of all images."""

    folds: np.ndarray  # fold of each image
    sums: list[GaussianSums]
    per_position: bool
    grid: tuple[int, int]
    block: int

    @classmethod
    def fit(cls, feats: Sequence[np.ndarray], k: int, per_position: bool, block: int, seed: int,
            tick: Callable[[float], None] | None = None, dim: int | None = None) -> "GaussianFolds":
        n = len(feats)
        k = int(max(2, min(k, n)))
        folds = np.random.default_rng(seed).permutation(n) % k
        grid = tuple(feats[0].shape[1:]) if per_position else (0, 0)
        sums = []
        for f in range(k):
            idx = np.flatnonzero(folds == f)
            part: GaussianSums | None = None
            for j in range(0, len(idx), 16):  # bounded memory: a few maps at a time
                maps = [feats[i][:dim] for i in idx[j : j + 16]]
                s = accumulate(np.stack(maps), True, block) if per_position else _sum_free(maps)
                part = s if part is None else part + s
            if part is None:
                raise ValueError(f"fold {f} of the Gaussian cross-fit holds no image")
            sums.append(part)
            if tick is not None:
                tick((f + 1) / k)
        return cls(folds, sums, per_position, grid, block)

    def total(self) -> GaussianSums:
        out = self.sums[0]
        for s in self.sums[1:]:
            out = out + s
        return out

    def model(self) -> GaussianModel:
        return GaussianModel.from_sums(self.total(), self.grid, self.block)

    def fold_model(self, f: int) -> GaussianModel:
        return GaussianModel.from_sums(self.total() - self.sums[f], self.grid, self.block)


def _sum_free(maps: Sequence[np.ndarray]) -> GaussianSums:
    out: GaussianSums | None = None
    for m in maps:
        s = accumulate(m[None], False)
        out = s if out is None else out + s
    if out is None:
        raise ValueError("no feature maps to sum")
    return out


def position_weight(fixed: bool, variances: np.ndarray, dim: int, weight: float = POSITION_WEIGHT) -> float:
    """PatchCore's position weight in feature units (``weight`` x the features' spread): only fixed
    framing knows where a patch belongs."""
    return float(weight * np.sqrt(np.sum(np.asarray(variances)[:dim]))) if fixed and weight > 0 else 0.0


def fit_patchcore(feats: Sequence[np.ndarray], ignore: np.ndarray | None, weight: float, config, *,
                  minimum: int | None = None, maximum: int | None = None,
                  cancel: Callable[[], bool] | None = None, progress: Callable[[float], None] | None = None) -> PatchCore:
    """The memory bank from good feature maps (D, h, w); ignored cells never enter it."""
    rows, ids = [], []
    for i, f in enumerate(feats):
        d, h, w = f.shape
        flat = f.reshape(d, -1)
        if weight > 0:
            flat = np.concatenate([flat, position_channels(h, w, weight).reshape(2, -1)])
        flat = flat.T
        if ignore is not None:
            flat = flat[~ignore.ravel()]
        rows.append(flat)
        ids.append(np.full(len(flat), i, dtype=np.int32))
    return PatchCore.fit(
        np.concatenate(rows), np.concatenate(ids), ratio=config.bank_ratio,
        minimum=config.bank_min if minimum is None else minimum,
        maximum=config.bank_max if maximum is None else maximum,
        pool=config.bank_pool, seed=config.seed, position_weight=weight, cancel=cancel, progress=progress,
    )


def patchcore_grids(pc: PatchCore, feats: Sequence[np.ndarray], sources: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Leave-one-image-out distance grids: ``feats[j]`` scored without bank entries of ``sources[j]``."""
    return [pc.distance_grid(f, exclude_source=int(s)) for f, s in zip(feats, sources)]


def gaussian_grids(folds: GaussianFolds, feats: Sequence[np.ndarray],
                   sources: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """k-fold held-out distance grids: ``feats[j]`` scored by the model without ``sources[j]``'s fold."""
    out: list[np.ndarray | None] = [None] * len(feats)
    fold_of = [int(folds.folds[int(s)]) for s in sources]
    for f in sorted(set(fold_of)):
        model = folds.fold_model(f)
        for j, fj in enumerate(fold_of):
            if fj == f:
                out[j] = model.distances(feats[j][None])[0]
    return out  # type: ignore[return-value]


def scores(grids: Sequence[np.ndarray], ignore: np.ndarray | None = None,
           norm: PositionNorm | None = None) -> np.ndarray:
    """Image scores (peaks of the smoothed grids, per-position normalised with ``norm``), as at inspection."""
    if norm is None:
        return anomaly_map.smoothed_scores(grids, ignore, FEATURE_STRIDE)
    return np.array([anomaly_map.image_score(norm.apply(m, ignore), ignore) for m in smoothed_maps(grids, ignore)])


def smoothed_maps(grids: Sequence[np.ndarray], ignore: np.ndarray | None = None) -> list[np.ndarray]:
    """The smoothed grids as inspection computes them (ignored cells zeroed before and after)."""
    return [anomaly_map.smoothed_map(g, ignore, FEATURE_STRIDE) for g in grids]


def model_scores(grids: Mapping[str, Sequence[np.ndarray]], ignore: np.ndarray | None, normalise: bool
                 ) -> tuple[dict[str, np.ndarray], dict[str, PositionNorm]]:
    """Held-out image scores of each model's good grids and the per-position normalisations fitted
    on them (``normalise``: fixed framing with normalisation on; otherwise plain peaks, no norms)."""
    held: dict[str, np.ndarray] = {}
    norms: dict[str, PositionNorm] = {}
    for m, g in grids.items():
        norm, held[m] = normalised_scores(g, ignore) if normalise else (None, scores(g, ignore))
        if norm is not None:
            norms[m] = norm
    return held, norms


def normalised_scores(grids: Sequence[np.ndarray], ignore: np.ndarray | None = None
                      ) -> tuple[PositionNorm | None, np.ndarray]:
    """Held-out good grids -> (the per-position normalisation fitted on them, their leave-one-out
    image scores under it); (None, plain scores) when there are too few grids to fit one."""
    if not position_norm.usable(len(grids)):
        return None, scores(grids, ignore)
    maps = smoothed_maps(grids, ignore)
    loo = PositionNorm.leave_one_out_scores(maps, ignore)
    if not (np.isfinite(loo).all() and np.quantile(loo, 0.5) > 0):
        # degenerate good maps (near-identical images): nothing to normalise against, keep them plain
        return None, scores(grids, ignore)
    return PositionNorm.fit(maps, ignore), loo


def typical(grids: Sequence[np.ndarray], ignore: np.ndarray | None = None) -> np.ndarray:
    """Median patch distance per image: the unfamiliar-input statistic."""
    return np.array([float(np.median(g if ignore is None else g[~ignore])) for g in grids])
