"""Limits from good parts only, at two budgets the engineer chooses.

Given anomaly scores of good images that the model did *not* train on:

* the **FAIL limit** (``value``) is the score a good part reaches with probability ``budget``, the
  false-reject budget (default 1 in 200 good parts auto-FAILed);
* the **PASS limit** (``pass_limit``) is the score a good part exceeds with probability
  ``review_budget`` (default 1 in 10 good parts sent to REVIEW).

A part below the PASS limit passes, at or above the FAIL limit it fails, in between a person
looks. The PASS limit is the held-out scores' empirical quantile when there are enough of them
(``EMPIRICAL_TAIL`` above it); with a few dozen held-out images the 1-in-200 quantile lies beyond
the data, so the FAIL limit is estimated with a Gumbel fit (the law of a maximum, which is what an
image score is: the worst patch) and never below the empirical quantile.

The bootstrap band (``low``, ``high``: the 5th and 95th percentiles of the FAIL limit refitted on
resampled scores) says how well the held-out images pin the FAIL limit down. It is information
for the engineer; it no longer decides verdicts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_BUDGET = 1.0 / 200.0  # false-reject budget: good parts auto-FAILed
DEFAULT_REVIEW_BUDGET = 1.0 / 10.0  # review budget: good parts sent to REVIEW (or failed)
MIN_HALF_WIDTH = 0.03  # the bootstrap band is at least +-3% of the limit (score noise between captures)
MIN_SCORES = 3
EMPIRICAL_TAIL = 8  # held-out scores above a quantile for its empirical estimate to be used alone


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    value: float  # FAIL limit, raw units
    low: float  # bootstrap band of the FAIL limit, raw units (information)
    high: float
    budget: float  # false-reject budget the FAIL limit was set for
    n: int  # held-out good images used
    method: str
    expected_false_reject: float  # fitted probability that a good part scores at or above ``value``
    good_max: float  # largest held-out good score
    pass_limit: float = float("nan")  # PASS limit, raw units (nan: none, the FAIL limit is the only one)
    review_budget: float = float("nan")  # the budget the PASS limit was set for
    centre: float = 0.0  # median held-out good score (where fusion puts a model's zero)

    def normalise(self, raw: float) -> float:
        return float(raw) / self.value

    @property
    def pass_fraction(self) -> float:
        """The PASS limit as a fraction of the FAIL limit (1.0 when there is no review zone)."""
        p = self.pass_limit
        return float(min(1.0, p / self.value)) if math.isfinite(p) and self.value > 0 else 1.0

    @property
    def band(self) -> tuple[float, float]:
        """The REVIEW zone in normalised units: (PASS limit, FAIL limit) / FAIL limit."""
        return self.pass_fraction, 1.0

    @property
    def uncertainty(self) -> tuple[float, float]:
        """The bootstrap band of the FAIL limit, normalised."""
        return self.low / self.value, self.high / self.value

    def to_dict(self) -> dict:
        """A JSON-ready dict (a missing PASS limit is None, not NaN)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Threshold":
        vals = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("pass_limit", "review_budget"):
            if k in vals and vals[k] is None:
                vals[k] = float("nan")
        return cls(**vals)


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


def _quantile(x: np.ndarray, budget: float) -> float:
    """The score good parts exceed with probability ``budget``: empirical where enough held-out
    scores lie above it, else the Gumbel fit (never below the empirical quantile)."""
    if x.size * budget >= EMPIRICAL_TAIL:
        return float(np.quantile(x, 1.0 - budget))
    return _estimate(x, budget)


def check_budgets(budget: float, review_budget: float | None) -> None:
    if not 0.0 < budget < 0.5:
        raise CalibrationError("The false-reject budget must be between 0 and 0.5 (e.g. 0.005 = 1 in 200).")
    if review_budget is not None and not budget < review_budget < 1.0:
        raise CalibrationError(
            "The review budget must be larger than the false-reject budget and below 1 (e.g. 0.1 = 1 in 10)."
        )


def fit_threshold(
    good_scores, budget: float = DEFAULT_BUDGET, review_budget: float | None = DEFAULT_REVIEW_BUDGET, *,
    n_boot: int = 400, seed: int = 0
) -> Threshold:
    """FAIL limit at ``budget`` and PASS limit at ``review_budget`` (None: no review zone)."""
    x = np.asarray(good_scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < MIN_SCORES:
        raise CalibrationError(
            f"Calibration needs at least {MIN_SCORES} held-out good images (got {x.size})."
        )
    check_budgets(budget, review_budget)
    value = _estimate(x, budget)
    pass_limit = float("nan") if review_budget is None else min(value, _quantile(x, review_budget))
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
        expected_false_reject=float(_gumbel_sf(mu, beta, value)),
        good_max=float(x.max()),
        pass_limit=float(pass_limit),
        review_budget=float("nan") if review_budget is None else float(review_budget),
        centre=float(np.median(x)),
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
