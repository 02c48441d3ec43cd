"""Thresholds from good parts only, at a false-reject budget the user chooses.

Given anomaly scores of good images that the model did *not* train on, the threshold is the score
that a good part exceeds with probability ``budget`` (default 1 in 200). With a few dozen held-out
images that quantile lies beyond the data, so we fit a Gumbel distribution (the law of a maximum,
which is what an image score is: the worst patch) and never go below the empirical quantile.

The uncertainty band is the spread of that threshold estimate: a bootstrap over the held-out scores
gives the 5th and 95th percentiles of the refitted threshold. A part whose score falls inside the
band is neither clearly good nor clearly bad for that model, and goes to review.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_BUDGET = 1.0 / 200.0
MIN_HALF_WIDTH = 0.03  # the band is at least +-3% of the threshold (score noise between captures)
MIN_SCORES = 3


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    value: float  # raw-score threshold
    low: float  # uncertainty band, raw units
    high: float
    budget: float  # false-reject budget the threshold was set for
    n: int  # held-out good images used
    method: str
    expected_false_reject: float  # fitted probability that a good part scores above ``high``
    good_max: float  # largest held-out good score

    def normalise(self, raw: float) -> float:
        return float(raw) / self.value

    @property
    def band(self) -> tuple[float, float]:
        return self.low / self.value, self.high / self.value

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Threshold":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _gumbel_fit(x: np.ndarray) -> tuple[float, float]:
    """Method-of-moments Gumbel fit (robust, closed form): location, scale."""
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    beta = max(sd * math.sqrt(6.0) / math.pi, 1e-12)
    mu = float(np.mean(x)) - 0.5772156649015329 * beta
    return mu, beta


def _gumbel_quantile(mu: float, beta: float, p: float) -> float:
    return mu - beta * math.log(-math.log(p))


def _gumbel_sf(mu: float, beta: float, x: float) -> float:
    return 1.0 - math.exp(-math.exp(-(x - mu) / beta))


def _estimate(x: np.ndarray, budget: float) -> float:
    mu, beta = _gumbel_fit(x)
    parametric = _gumbel_quantile(mu, beta, 1.0 - budget)
    empirical = float(np.quantile(x, 1.0 - budget)) if x.size > 1 else float(x[0])
    return max(parametric, empirical)


def fit_threshold(
    good_scores, budget: float = DEFAULT_BUDGET, *, n_boot: int = 400, seed: int = 0
) -> Threshold:
    x = np.asarray(good_scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < MIN_SCORES:
        raise CalibrationError(
            f"Calibration needs at least {MIN_SCORES} held-out good images (got {x.size})."
        )
    if not 0.0 < budget < 0.5:
        raise CalibrationError("The false-reject budget must be between 0 and 0.5.")
    value = _estimate(x, budget)
    rng = np.random.default_rng(seed)
    boots = np.array([_estimate(rng.choice(x, x.size), budget) for _ in range(n_boot)])
    low, high = (float(v) for v in np.quantile(boots, [0.05, 0.95]))
    spread = max(abs(value) * MIN_HALF_WIDTH, 1e-12)
    low = min(low, value - spread)
    high = max(high, value + spread)
    low = max(low, 0.0) if value > 0 else low
    mu, beta = _gumbel_fit(x)
    return Threshold(
        value=float(value),
        low=float(low),
        high=float(high),
        budget=float(budget),
        n=int(x.size),
        method="gumbel+empirical, bootstrap band",
        expected_false_reject=float(_gumbel_sf(mu, beta, high)),
        good_max=float(x.max()),
    )


def expected_false_reject(good_scores, value: float) -> float:
    """Fitted probability (the calibration's Gumbel law) that a good part scores at or above ``value``."""
    x = np.asarray(good_scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < MIN_SCORES:
        raise CalibrationError(f"Need at least {MIN_SCORES} good scores (got {x.size}).")
    mu, beta = _gumbel_fit(x)
    return float(_gumbel_sf(mu, beta, float(value)))


def tradeoff(good_scores, defect_scores, thresholds) -> list[dict]:
    """Recall and false-reject rate at each threshold (for recipes with labelled defects)."""
    g = np.asarray(good_scores, dtype=np.float64)
    d = np.asarray(defect_scores, dtype=np.float64)
    rows = []
    for t in thresholds:
        rows.append(
            {
                "threshold": float(t),
                "recall": float(np.mean(d >= t)) if d.size else float("nan"),
                "false_reject_rate": float(np.mean(g >= t)) if g.size else float("nan"),
            }
        )
    return rows
