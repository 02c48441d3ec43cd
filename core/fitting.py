"""Gradient training of the defect classifier head, on precomputed feature maps (CPU-sized)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .coreset import Cancelled
from .networks import DefectClassifier

def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


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
