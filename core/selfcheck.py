"""The recipe's own estimate of how well it detects defects, from good images only.

Synthetic defects (``core.synthetic``: spots, scratches, textured blobs, cut-and-paste pieces, at
2, 4 and 8 % of the short side) are pasted into good images and scored by the models that did not
see those images (``core.heldout``). Against the held-out scores of the clean images this gives:

* a synthetic-defect AUROC per model and fused, which **chooses the fusion weights** (the
  weighting that separates synthetic defects best, equal weights unless another is clearly better)
  and, in ``core.autoconfig``, the working resolution;
* the share of synthetic defects the recipe would **catch** (not PASS) at its limits, by size and
  kind: "this recipe would catch about N % of defects of size X px".

Synthetic defects are not real ones: the figures are estimates, reported beside the real AUROC in
``make bench-accuracy`` to show how well they track.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from . import heldout, preprocess, synthetic
from .calibration import Threshold
from .fusion import Fusion, fuse, model_score
from .position_norm import PositionNorm
from .types import Decision

WEIGHTINGS = ({"patchcore": 1.0, "gaussian": 1.0}, {"patchcore": 2.0, "gaussian": 1.0},
              {"patchcore": 1.0, "gaussian": 2.0})
SYNTHETIC_BIG = 4096  # patch cells per image above which each held-out image gets one synthetic defect
WEIGHT_MARGIN = 0.005  # another weighting must beat equal weights by this much synthetic AUROC


def auroc(negatives, positives) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney, the same value as sklearn's
    roc_auc_score), O(n log n); nan if either is empty. Also what ``training.metrics.pixel_auroc`` uses."""
    neg, pos = np.sort(np.ravel(negatives)), np.ravel(positives)  # no float64 copy: pixel sets are large
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    u = below.sum(dtype=np.float64) + 0.5 * ties.sum(dtype=np.float64)
    return float(u / (float(neg.size) * float(pos.size)))


@dataclass
class SyntheticScores:
    scores: dict[str, np.ndarray]  # model -> image score of each synthetic defect
    kinds: list[str] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    sizes_px: list[int] = field(default_factory=list)


def _in_zones(defect: synthetic.SyntheticDefect, zones, reference_wh) -> bool:
    if not zones or reference_wh is None:
        return False
    h, w = defect.mask.shape
    ys, xs = np.nonzero(defect.mask)
    if ys.size == 0:
        return True
    cy, cx = float(ys.mean()), float(xs.mean())
    for z in zones:
        x, y, zw, zh = preprocess.scale_box(z, reference_wh, (w, h))
        if x <= cx < x + zw and y <= cy < y + zh:
            return True
    return False


def synthetic_scores(originals: Mapping[int, np.ndarray], framing: preprocess.Framing, embedding, patchcore,
                     folds: heldout.GaussianFolds, classifier, ignore, *, per_image: int = 2, seed: int = 0,
                     zones=(), norms: Mapping[str, PositionNorm] | None = None,
                     tick: Callable[[float], None] | None = None) -> SyntheticScores:
    """Score one synthetic defect per (image, kind, size) of ``synthetic.plan`` with held-out models.

    ``originals`` maps a good image's index among the training images (its PatchCore source and
    Gaussian fold) to the image as loaded, before any resizing.
    """
    keys = sorted(originals)
    todo = synthetic.plan(len(keys), per_image, seed)
    feats, sources, out = [], [], SyntheticScores({})
    for n_done, (i, kind, frac, s) in enumerate(todo):
        src = keys[i]
        image = originals[src]
        box = None
        if framing.fixed and framing.roi is not None and framing.reference_wh is not None:
            box = preprocess.scale_box(framing.roi, framing.reference_wh, (image.shape[1], image.shape[0]))
        for attempt in range(6):
            d = synthetic.make_defect(image, kind, frac, s + 7919 * attempt, box)
            if not _in_zones(d, zones, framing.reference_wh):
                break
        working = framing.prepare(d.image)[0]
        feats.append(embedding(working))
        sources.append(src)
        out.kinds.append(kind)
        out.fractions.append(float(frac))
        out.sizes_px.append(int(d.size_px))
        if tick is not None:
            tick(0.8 * (n_done + 1) / len(todo))
    norms = norms or {}
    out.scores["patchcore"] = heldout.scores(heldout.patchcore_grids(patchcore, feats, sources), ignore,
                                             norms.get("patchcore"))
    out.scores["gaussian"] = heldout.scores(heldout.gaussian_grids(folds, feats, sources), ignore,
                                            norms.get("gaussian"))
    if classifier is not None:  # the classifier saw every good image: not held out, a rough figure
        with torch.no_grad():
            out.scores["classifier"] = np.array(
                [float(classifier(torch.from_numpy(np.ascontiguousarray(f[None])))[0][0]) for f in feats])
    if tick is not None:
        tick(1.0)
    return out


def equal_weight_auroc(held: Mapping[str, np.ndarray], syn: Mapping[str, np.ndarray]) -> float:
    """Synthetic-defect AUROC of PatchCore and the Gaussian model averaged with equal weights."""
    from .calibration import fit_threshold

    thr = {m: fit_threshold(held[m], review_budget=None) for m in ("patchcore", "gaussian")}
    fusion = Fusion.from_thresholds(thr, WEIGHTINGS[0])
    return auroc(fusion.combine(held), fusion.combine(syn))


@dataclass
class Check:
    fusion: Fusion  # weights chosen, limits not yet set
    held: Mapping[str, np.ndarray]
    syn: SyntheticScores
    per_model: dict

    def summary(self, fusion: Fusion, thresholds: Mapping[str, Threshold]) -> dict:
        """What the synthetic defects say about the finished recipe (``fusion`` with its limits)."""
        models = [m for m in thresholds if m in self.syn.scores]
        decisions = []
        for j in range(len(self.syn.kinds)):
            scores = [model_score(m, float(self.syn.scores[m][j]), thresholds[m]) for m in models]
            decisions.append(fuse(scores, fusion).decision)
        caught = np.array([d is not Decision.PASS for d in decisions])
        failed = np.array([d is Decision.FAIL for d in decisions])
        fused_syn = fusion.combine({m: self.syn.scores[m] for m in fusion.weights})
        fused_held = fusion.combine({m: self.held[m] for m in fusion.weights})
        fr = np.array(self.syn.fractions)
        kinds = np.array(self.syn.kinds)
        px = np.array(self.syn.sizes_px)
        by_size = []
        for f in sorted(set(self.syn.fractions)):
            sel = fr == f
            by_size.append({"fraction": f, "size_px": int(np.median(px[sel])), "n": int(sel.sum()),
                            "caught": round(float(caught[sel].mean()), 3), "failed": round(float(failed[sel].mean()), 3),
                            "auroc": round(auroc(fused_held, fused_syn[sel]), 4)})
        by_kind = {}
        for k in synthetic.KINDS:
            sel = kinds == k
            if sel.any():
                by_kind[k] = {"n": int(sel.sum()), "caught": round(float(caught[sel].mean()), 3),
                              "auroc": round(auroc(fused_held, fused_syn[sel]), 4)}
        return {
            "n_images": int(len(self.held[models[0]])) if models else 0,
            "n_defects": int(len(self.syn.kinds)),
            "auroc": {**self.per_model, "fused": round(auroc(fused_held, fused_syn), 4)},
            "caught": round(float(caught.mean()), 3),
            "failed": round(float(failed.mean()), 3),
            "by_size": by_size,
            "by_kind": by_kind,
        }


def run(originals, framing, embedding, patchcore, folds, classifier, ignore, config,
        thresholds: Mapping[str, Threshold], held: Mapping[str, np.ndarray],
        norms: Mapping[str, PositionNorm] | None = None,
        tick: Callable[[float], None] | None = None) -> Check:
    """The synthetic-defect check of a trained recipe; chooses the fusion weights."""
    cells = max(1, int(folds.grid[0] * folds.grid[1])) if folds.per_position else 0
    per_image = 1 if cells > SYNTHETIC_BIG else config.synthetic_per_image
    syn = synthetic_scores(originals, framing, embedding, patchcore, folds, classifier, ignore,
                           per_image=per_image, seed=config.seed + 11,
                           zones=config.ignore_zones, norms=norms, tick=tick)
    per_model = {m: round(auroc(held[m], syn.scores[m]), 4) for m in syn.scores if m in held}
    extra = {"classifier": 1.0} if "classifier" in thresholds else {}
    tried = []
    for w in WEIGHTINGS:
        fusion = Fusion.from_thresholds(thresholds, {**w, **extra})
        tried.append((auroc(fusion.combine(held), fusion.combine({m: syn.scores[m] for m in fusion.weights})), w))
    best_auc, best = max(tried, key=lambda t: t[0])
    if best_auc < tried[0][0] + WEIGHT_MARGIN:
        best_auc, best = tried[0]
    fusion = Fusion.from_thresholds(thresholds, {**best, **extra})
    words = ("equal weights" if best == WEIGHTINGS[0] else
             f"PatchCore x{best['patchcore']:g}, Gaussian x{best['gaussian']:g}")
    candidates = tuple({"weights": dict(w), "synthetic_auroc": round(a, 4)} for a, w in tried)
    fusion = Fusion(fusion.weights, fusion.centres, fusion.scales, None,
                    f"{words}: the weighting that separated synthetic defects best ({best_auc:.3f})", candidates)
    return Check(fusion, held, syn, per_model)
