"""The second opinion: a Gaussian model of good-part patch features (PaDiM-style, Defard et al. 2021).

Where PatchCore asks "is there a good patch like this one anywhere?" (non-parametric, any position,
Euclidean distance on the leading components), this model asks "is this patch typical for *this*
place on the part?" (parametric, position-aware, Mahalanobis distance, which weighs the rare
directions of variation that Euclidean distance on the leading components hardly sees). Measured
on four products, the two disagree on different images (score correlation 0.78-0.92), so
averaging them catches more than either.

* **Fixed framing** (every good image shows the part the same way): one Gaussian per position of
  the patch grid, estimated from that position and its eight neighbours in every good image (so
  a part shifted by a few pixels is still typical). Large grids share one Gaussian per block of
  ``block x block`` cells (estimated from the block and the cells one step around it) so the
  model stays small.
* **Free framing** (textures, webs, crops of any size): one Gaussian for every position.

Covariances are shrunk towards a scaled identity (``SHRINK``) so they stay invertible with few
images. Everything is kept as sums (count, sum, sum of outer products) while fitting, so the model
of "all good images but one fold" is the total minus that fold: k-fold held-out scores for
calibration cost one fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SHRINK = 0.1  # covariance + SHRINK * mean variance * identity
MAX_POSITIONS = 2304  # more grid positions than this share Gaussians by blocks of cells


def block_size(grid_hw: tuple[int, int]) -> int:
    """Cells per side of a block sharing one Gaussian, so that at most MAX_POSITIONS remain."""
    h, w = grid_hw
    b = 1
    while math.ceil(h / b) * math.ceil(w / b) > MAX_POSITIONS:
        b += 1
    return b


@dataclass
class GaussianSums:
    """Sufficient statistics per Gaussian position: count (P,), sum (P, D), outer products (P, D, D)."""

    count: np.ndarray
    s1: np.ndarray
    s2: np.ndarray

    def __sub__(self, other: "GaussianSums") -> "GaussianSums":
        return GaussianSums(self.count - other.count, self.s1 - other.s1, self.s2 - other.s2)

    def __add__(self, other: "GaussianSums") -> "GaussianSums":
        return GaussianSums(self.count + other.count, self.s1 + other.s1, self.s2 + other.s2)


def _blocks(feats: np.ndarray, block: int) -> np.ndarray:
    """(n, D, h, w) -> (n, bh, bw, block*block, D), the grid padded by repeating its last cells."""
    n, d, h, w = feats.shape
    bh, bw = math.ceil(h / block), math.ceil(w / block)
    x = feats
    if bh * block != h or bw * block != w:
        x = np.pad(feats, ((0, 0), (0, 0), (0, bh * block - h), (0, bw * block - w)), mode="edge")
    x = x.reshape(n, d, bh, block, bw, block).transpose(0, 2, 4, 3, 5, 1)
    return x.reshape(n, bh, bw, block * block, d)


def _window_sums(a: np.ndarray, block: int, reach: int = 1) -> np.ndarray:
    """Per block of ``block`` x ``block`` cells, the sum of ``a`` (cells on axes 0, 1) over the block
    and ``reach`` cells around it (borders: what exists), via an integral image."""
    h, w = a.shape[:2]
    bh, bw = math.ceil(h / block), math.ceil(w / block)
    ii = np.zeros((h + 1, w + 1) + a.shape[2:], dtype=np.float64)
    ii[1:, 1:] = a.cumsum(axis=0).cumsum(axis=1)
    y0 = np.clip(np.arange(bh) * block - reach, 0, h)
    y1 = np.clip(np.arange(bh) * block + block + reach, 0, h)
    x0 = np.clip(np.arange(bw) * block - reach, 0, w)
    x1 = np.clip(np.arange(bw) * block + block + reach, 0, w)
    return (ii[y1][:, x1] - ii[y0][:, x1] - ii[y1][:, x0] + ii[y0][:, x0])


def accumulate(feats: np.ndarray, per_position: bool, block: int = 1) -> GaussianSums:
    """Sums of (n, D, h, w) feature maps: per grid position (or block of cells), pooled with the
    cells one step around it, or one set of sums for every position (free framing)."""
    x = np.asarray(feats, dtype=np.float32)
    n, d, h, w = x.shape
    if not per_position:
        rows = x.transpose(0, 2, 3, 1).reshape(-1, d).astype(np.float64)
        return GaussianSums(np.array([rows.shape[0]], np.float64), rows.sum(0)[None], (rows.T @ rows)[None])
    cells = x.transpose(2, 3, 0, 1)  # (h, w, n, D)
    s1 = cells.sum(axis=2, dtype=np.float64)
    s2 = np.einsum("yxki,yxkj->yxij", cells, cells, optimize=True)
    count = np.full((h, w), float(n))
    s1, s2, count = (_window_sums(v, block) for v in (s1, s2, count))
    bh, bw = count.shape
    return GaussianSums(count.reshape(-1), s1.reshape(bh * bw, d), s2.reshape(bh * bw, d, d))


@dataclass(frozen=True)
class GaussianModel:
    """Per-position mean (P, D) and whitening matrices (P, D, D): distance = |W (x - mean)|."""

    mean: np.ndarray
    whiten: np.ndarray
    grid: tuple[int, int]  # the feature grid it was fitted on (h, w); (0, 0) for free framing
    block: int  # cells per side sharing one Gaussian (1: one per cell)

    @property
    def per_position(self) -> bool:
        return self.grid != (0, 0)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    @classmethod
    def from_sums(cls, sums: GaussianSums, grid: tuple[int, int], block: int, shrink: float = SHRINK) -> "GaussianModel":
        cnt = np.maximum(sums.count, 1.0)
        mean = sums.s1 / cnt[:, None]
        cov = sums.s2 / cnt[:, None, None] - mean[:, :, None] * mean[:, None, :]
        d = mean.shape[1]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        scale = np.maximum(np.trace(cov, axis1=1, axis2=2) / d, 1e-8)
        cov += (shrink * scale)[:, None, None] * np.eye(d)[None]
        # cov = L L^T  ->  W = L^-1, so |W (x - m)|^2 = (x - m)^T cov^-1 (x - m)
        chol = np.linalg.cholesky(cov)
        eye = np.broadcast_to(np.eye(d), cov.shape)
        whiten = np.linalg.solve(chol, eye)
        return cls(mean.astype(np.float32), np.ascontiguousarray(whiten, dtype=np.float32),
                   (int(grid[0]), int(grid[1])), int(block))

    # -- scoring in NumPy (training and calibration) -----------------------------------------
    def distances(self, feats: np.ndarray) -> np.ndarray:
        """(n, D', h, w) features (the leading ``dim`` channels are used) -> (n, h, w) distances."""
        x = np.asarray(feats[:, : self.dim], dtype=np.float32)
        n, d, h, w = x.shape
        if not self.per_position:
            rows = x.transpose(0, 2, 3, 1).reshape(-1, d) - self.mean[0]
            y = rows @ self.whiten[0].T
            return np.sqrt(np.einsum("ij,ij->i", y, y)).reshape(n, h, w)
        if (h, w) != self.grid:
            raise ValueError(f"feature grid {h}x{w} differs from the model's {self.grid[0]}x{self.grid[1]}")
        cells = _blocks(x, self.block)  # (n, bh, bw, c, D)
        bh, bw, c = cells.shape[1:4]
        flat = cells.transpose(1, 2, 0, 3, 4).reshape(bh * bw, n * c, d) - self.mean[:, None, :]
        y = np.matmul(flat, self.whiten.transpose(0, 2, 1))
        dist = np.sqrt(np.einsum("pki,pki->pk", y, y)).reshape(bh, bw, n, self.block, self.block)
        dist = dist.transpose(2, 0, 3, 1, 4).reshape(n, bh * self.block, bw * self.block)
        return dist[:, :h, :w]


class GaussianDistances(nn.Module):
    """The same distances as :meth:`GaussianModel.distances`, as an exportable torch module.

    (B, D', h, w) -> (B, 1, h, w). Per-position models need the grid they were fitted on (a fixed
    working size); the free-framing model is a 1x1 convolution and takes any size.
    """

    mean: torch.Tensor  # buffers (register_buffer), typed for the checker
    whiten_t: torch.Tensor

    def __init__(self, model: GaussianModel):
        super().__init__()
        self.dim = model.dim
        self.block = model.block
        self.grid = tuple(model.grid)
        self.per_position = model.per_position
        self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(model.mean)))
        self.register_buffer("whiten_t", torch.from_numpy(np.ascontiguousarray(model.whiten.transpose(0, 2, 1))))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats[:, : self.dim]
        if not self.per_position:
            y = torch.einsum("bdyx,ed->beyx", x - self.mean[0].view(1, -1, 1, 1), self.whiten_t[0].T)
            return torch.sqrt((y * y).sum(dim=1, keepdim=True))
        b = self.block
        h, w = self.grid
        bh, bw = -(-h // b), -(-w // b)
        n, d = x.shape[0], self.dim
        if bh * b != h or bw * b != w:
            x = torch.nn.functional.pad(x, (0, bw * b - w, 0, bh * b - h), mode="replicate")
        cells = x.reshape(n, d, bh, b, bw, b).permute(2, 4, 0, 3, 5, 1).reshape(bh * bw, n * b * b, d)
        y = torch.matmul(cells - self.mean[:, None, :], self.whiten_t)
        dist = torch.sqrt((y * y).sum(dim=2))  # (P, n*b*b)
        dist = dist.reshape(bh, bw, n, b, b).permute(2, 0, 3, 1, 4).reshape(n, 1, bh * b, bw * b)
        return dist[:, :, :h, :w]
