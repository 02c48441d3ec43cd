"""Evaluation metrics for anomaly detection on MVTec AD-style data.

Labels: 1 (or "defect") is a defect, 0 (or "good") is good. Higher scores are more anomalous.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from core.selfcheck import auroc
from core.types import Decision

_LABELS = {"good": 0, "defect": 1, "0": 0, "1": 1}


def _binary_labels(labels: Iterable) -> np.ndarray:
    """0/1 int array from 0/1, bools or 'good'/'defect' (case-insensitive)."""
    out = []
    for lab in labels:
        key = str(getattr(lab, "value", lab)).strip().lower()
        if isinstance(lab, (bool, np.bool_)):
            key = str(int(lab))
        elif isinstance(lab, (int, np.integer, float, np.floating)) and float(lab) in (0.0, 1.0):
            key = str(int(lab))
        if key not in _LABELS:
            raise ValueError(f"label must be 0/1 or 'good'/'defect', got {lab!r}")
        out.append(_LABELS[key])
    return np.asarray(out, dtype=np.int8)


def image_auroc(labels: Sequence | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Image-level ROC AUC; nan when only one class is present."""
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{y.shape[0]} labels but {s.shape} scores")
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def _masks_and_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks).astype(bool, copy=False)
    maps = np.asarray(maps, dtype=np.float32)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3:
        raise ValueError(f"expected N x H x W arrays, got shape {masks.shape}")
    return masks, maps


def pixel_auroc(masks, maps) -> float:
    """ROC AUC over all pixels of all images (masks bool N x H x W, maps float N x H x W)."""
    masks, maps = _masks_and_maps(masks, maps)
    return auroc(maps[~masks], maps[masks])


def default_pro_thresholds(
    background: np.ndarray, max_fpr: float = 0.3, num_thresholds: int = 200
) -> np.ndarray:
    """Thresholds whose FPRs are spread evenly over [0, max_fpr].

    ``background`` is the sorted scores of the pixels outside the masks. The thresholds are its
    quantiles at FPR = 0 ... max_fpr plus the smallest value above its maximum (FPR exactly 0).
    """
    n = background.size
    fprs = np.linspace(0.0, max_fpr, max(int(num_thresholds), 2))
    idx = np.clip(np.floor(n * (1.0 - fprs)).astype(np.int64), 0, n - 1)
    top = np.nextafter(background[-1], np.float32(np.inf))
    return np.unique(np.append(background[idx], top))


def _ceil_float32(t: np.ndarray) -> np.ndarray:
    """Smallest float32 >= each t, so that ``v >= t`` is unchanged for float32 scores v."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    low = t32.astype(np.float64) < t
    t32[low] = np.nextafter(t32[low], np.float32(np.inf))
    return t32


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) from x[0] to x_max; x non-decreasing, interpolated at x_max."""
    i = int(np.searchsorted(x, x_max, side="right"))  # points [:i] have x <= x_max
    xs, ys = x[:i], y[:i]
    if i < x.size:  # add the exact point at x_max, between points i-1 and i
        y_max = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        xs, ys = np.append(xs, x_max), np.append(ys, y_max)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def pro_score(
    masks,
    maps,
    max_fpr: float = 0.3,
    num_thresholds: int = 200,
    thresholds: Sequence[float] | None = None,
) -> float:
    """Normalised area under the PRO-vs-FPR curve up to ``max_fpr`` (Bergmann et al., IJCV 2021).

    Regions are the 8-connected components of each mask. At threshold t (pixel flagged when
    map >= t), PRO is the mean over all regions of the flagged share of the region and FPR the
    flagged share of all pixels outside the masks. The curve through the thresholds, anchored at
    (0, 0) and (1, 1), is integrated with trapezoids up to ``max_fpr`` (interpolated there) and
    divided by ``max_fpr``: a perfect map scores 1.0. nan when there is no defect region.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    masks, maps = _masks_and_maps(masks, maps)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True  # 8-connectivity within an image, never across images
    labels, n_regions = ndimage.label(masks, structure=in_plane)
    if n_regions == 0:
        return float("nan")
    background = np.sort(maps[~masks])
    if background.size == 0:
        return float("nan")

    # PRO(t) = sum over region pixels >= t of 1 / (region size * number of regions)
    region_ids = labels[masks]
    weights = 1.0 / (np.bincount(region_ids)[region_ids] * float(n_regions))
    region_scores = maps[masks]
    order = np.argsort(region_scores, kind="stable")
    region_scores = region_scores[order]
    pro_at = np.append(np.cumsum(weights[order][::-1])[::-1], 0.0)  # pixels k.. flagged
    if np.isnan(background[-1]) or np.isnan(region_scores[-1]):  # NaNs sort last
        raise ValueError("anomaly maps contain NaN")

    if thresholds is None:
        t = default_pro_thresholds(background, max_fpr, num_thresholds)
    else:
        t = np.asarray(thresholds, dtype=np.float64).ravel()
        t = np.unique(_ceil_float32(t[~np.isnan(t)]))
    t = t[::-1]  # descending threshold -> FPR and PRO ascending
    pro = np.clip(pro_at[np.searchsorted(region_scores, t, side="left")], 0.0, 1.0)
    fpr = (background.size - np.searchsorted(background, t, side="left")) / background.size

    fpr = np.concatenate([[0.0], fpr, [1.0]])
    pro = np.concatenate([[0.0], pro, [1.0]])
    return _area_up_to(fpr, pro, max_fpr) / max_fpr


def _decision(d) -> str:
    return Decision(str(getattr(d, "value", d)).strip().upper()).value


def verdict_quality(labels: Sequence, decisions: Sequence) -> dict:
    """Counts of how station verdicts fared against ground truth.

    escapes: defects auto-PASSed; false_rejects: goods auto-FAILed; review_rate: share of REVIEW
    among all (nan when empty).
    """
    y = _binary_labels(labels)
    d = np.asarray([_decision(x) for x in decisions], dtype=object)
    if y.shape != d.shape:
        raise ValueError(f"{y.size} labels but {d.size} decisions")
    good, defect = y == 0, y == 1
    passed, failed, review = d == "PASS", d == "FAIL", d == "REVIEW"
    n = int(y.size)
    return {
        "escapes": int(np.sum(defect & passed)),
        "false_rejects": int(np.sum(good & failed)),
        "review_rate": float(review.sum() / n) if n else float("nan"),
        "reviews": int(review.sum()),
        "auto_decided": int(np.sum(passed | failed)),
        "n_good": int(good.sum()),
        "n_defect": int(defect.sum()),
        "correct_fail": int(np.sum(defect & failed)),
        "correct_pass": int(np.sum(good & passed)),
        "good_reviewed": int(np.sum(good & review)),
        "defect_reviewed": int(np.sum(defect & review)),
    }


def roc_at_thresholds(labels: Sequence, scores: Sequence[float], thresholds: Iterable[float]
                      ) -> list[dict]:
    """For each threshold: recall (defects >= t) and false_reject_rate (goods >= t); nan if none."""
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.shape} scores")
    defect, good = s[y == 1], s[y == 0]
    out = []
    for t in thresholds:
        t = float(t)
        out.append({
            "threshold": t,
            "recall": float(np.mean(defect >= t)) if defect.size else float("nan"),
            "false_reject_rate": float(np.mean(good >= t)) if good.size else float("nan"),
        })
    return out
