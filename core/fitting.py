"""Gradient training loops for the two learned heads, on precomputed feature maps (CPU-sized)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .coreset import Cancelled
from .networks import DefectClassifier, FeatureAutoencoder

AE_BATCH = 32
AE_EPOCHS = 10
AE_MIN_STEPS = 60
AE_MAX_STEPS = 120
AE_LR = 4e-3
AE_CROP = 16  # train on random 16x16-cell crops: 4x cheaper steps at 256 px, same accuracy (bottle)


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def ae_steps(n_images: int) -> int:
    """Optimiser steps: about ten epochs, at least enough for small sets, capped for time."""
    return int(min(AE_MAX_STEPS, max(AE_MIN_STEPS, math.ceil(AE_EPOCHS * n_images / AE_BATCH))))


def train_autoencoder(
    feats: np.ndarray,
    variances: np.ndarray,
    *,
    seed: int = 0,
    steps: int | None = None,
    crop: int = AE_CROP,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> FeatureAutoencoder:
    """Fit the feature autoencoder on good feature maps (N, D, h, w).

    The network is fully convolutional, so it trains on random crops of the maps (aligned to its
    4-cell stride) and runs on whole maps at inference.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n, d, h, w = feats.shape
    ch, cw = min(crop, h) // 4 * 4, min(crop, w) // 4 * 4
    model = FeatureAutoencoder(channels=d)
    with torch.no_grad():
        model.scale.copy_(torch.from_numpy(1.0 / np.sqrt(np.asarray(variances, dtype=np.float32))))
    data = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    steps = steps or ae_steps(n)
    opt = torch.optim.AdamW(model.parameters(), lr=AE_LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, AE_LR, total_steps=steps)
    model.train()
    order = rng.permutation(n)
    pos = 0
    for step in range(steps):
        if pos + AE_BATCH > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos : pos + AE_BATCH]
        pos += AE_BATCH
        oy = int(rng.integers(0, (h - ch) // 4 + 1)) * 4
        ox = int(rng.integers(0, (w - cw) // 4 + 1)) * 4
        z = model.whiten(data[idx, :, oy : oy + ch, ox : ox + cw])
        loss = F.mse_loss(model.reconstruct(z), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 5 == 0:
            _check(cancel)
            if progress:
                progress(step / steps)
    model.eval()
    return model


def train_classifier(
    good: np.ndarray,
    defect: np.ndarray,
    variances: np.ndarray,
    *,
    seed: int = 0,
    steps: int = 150,
    lr: float = 3e-3,
    cancel: Callable[[], bool] | None = None,
) -> DefectClassifier:
    """Fit the defect classifier head on good (Ng, D, h, w) and defect (Nd, D, h, w) feature maps.

    Batches draw goods and defects equally, so a handful of labelled defects is not drowned out.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d, h, w = good.shape[1:]
    top_k = max(1, (h * w) // 64)
    model = DefectClassifier(channels=d, top_k=top_k)
    with torch.no_grad():
        model.scale.copy_(torch.from_numpy(1.0 / np.sqrt(np.asarray(variances, dtype=np.float32))))
    g = torch.from_numpy(np.ascontiguousarray(good, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(defect, dtype=np.float32))
    half = 8
    target = torch.cat([torch.zeros(half), torch.ones(half)])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    model.train()
    for step in range(steps):
        x = torch.cat([g[rng.integers(0, len(g), half)], b[rng.integers(0, len(b), half)]])
        loss = F.binary_cross_entropy_with_logits(model.logit(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            _check(cancel)
    model.eval()
    return model


def classifier_probabilities(model: DefectClassifier, feats: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model.logit(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)))).numpy()
