"""Gradient training of the defect classifier head, on precomputed feature maps (CPU-sized)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .calibration import fit_threshold, tradeoff
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


def _common_crop(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Feature maps of possibly different sizes (free framing) centre-cropped to a common size."""
    h = min(m.shape[1] for m in maps)
    w = min(m.shape[2] for m in maps)
    out = []
    for m in maps:
        y0, x0 = (m.shape[1] - h) // 2, (m.shape[2] - w) // 2
        out.append(m[:, y0 : y0 + h, x0 : x0 + w])
    return np.stack(out)


def fit_classifier(feats: Sequence[np.ndarray], defect_feats: Sequence[np.ndarray], variances: np.ndarray, *,
                   seed: int, false_reject_budget: float, review_budget: float | None,
                   tick: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[DefectClassifier, dict[str, Any]]:
    """k-fold out-of-fold probabilities (for calibration), then the final head on everything.

    Returns the head and its summary: the out-of-fold good and defect scores, the folds, the recall
    at the budgets' limits and the trade-off table the result page shows."""
    both = _common_crop(list(feats) + list(defect_feats))
    good, bad = both[: len(feats)], both[len(feats):]
    rng = np.random.default_rng(seed + 1)
    k = int(min(5, len(bad)))
    g_fold = rng.permutation(len(good)) % k
    b_fold = rng.permutation(len(bad)) % k
    g_oof = np.empty(len(good), dtype=np.float32)
    b_oof = np.empty(len(bad), dtype=np.float32)
    for f in range(k):
        m = train_classifier(good[g_fold != f], bad[b_fold != f], variances, seed=seed + f, cancel=cancel)
        g_oof[g_fold == f] = classifier_probabilities(m, good[g_fold == f])
        b_oof[b_fold == f] = classifier_probabilities(m, bad[b_fold == f])
        if tick is not None:
            tick((f + 1) / (k + 1))
    clf = train_classifier(good, bad, variances, seed=seed, cancel=cancel)
    grid = sorted({float(v) for v in np.quantile(np.concatenate([g_oof, b_oof]), np.linspace(0, 1, 21))})
    thr = fit_threshold(np.maximum(g_oof, 1e-6), false_reject_budget, review_budget, seed=seed)
    summary = {
        "good_scores": g_oof,
        "defect_scores": b_oof,
        "folds": k,
        "recall_at_fail_limit": float(np.mean(b_oof >= thr.value)),
        "recall_at_pass_limit": float(np.mean(b_oof >= thr.pass_limit)),
        "tradeoff": tradeoff(g_oof, b_oof, grid),
    }
    return clf, summary
