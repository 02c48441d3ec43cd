import math

import numpy as np
import pytest

from core.calibration import CalibrationError, Threshold, fit_threshold, tradeoff
from core.fusion import fuse, model_score
from core.types import Decision, ModelState, Reason


def test_threshold_estimates_the_budget_quantile_of_a_gumbel_population():
    rng = np.random.default_rng(0)
    mu, beta = 10.0, 0.5
    true_q = mu - beta * math.log(-math.log(1 - 1 / 200))
    scores = rng.gumbel(mu, beta, size=400)
    thr = fit_threshold(scores, 1 / 200)
    assert thr.low <= thr.value <= thr.high
    assert thr.low <= true_q <= thr.high * 1.02
    assert abs(thr.value - true_q) / true_q < 0.03
    # the population exceeds the upper band edge about as rarely as the budget allows
    big = rng.gumbel(mu, beta, size=200_000)
    assert np.mean(big >= thr.value) < 2.5 / 200


def test_threshold_never_below_empirical_quantile_and_band_has_minimum_width():
    scores = np.array([1.0] * 50 + [5.0])  # a heavy tail a Gumbel fit would understate
    thr = fit_threshold(scores, 1 / 20)
    assert thr.value >= np.quantile(scores, 1 - 1 / 20)
    lo, hi = thr.band
    assert lo <= 0.97 + 1e-9 and hi >= 1.03 - 1e-9
    assert thr.good_max == 5.0 and thr.n == 51


def test_threshold_round_trips_and_rejects_bad_input():
    thr = fit_threshold(np.linspace(1, 2, 20))
    assert Threshold.from_dict(thr.to_dict()) == thr
    with pytest.raises(CalibrationError):
        fit_threshold([1.0, 2.0])
    with pytest.raises(CalibrationError):
        fit_threshold(np.ones(10), budget=0.7)


def test_tradeoff_counts_recall_and_false_rejects():
    rows = tradeoff([0.1, 0.2, 0.9], [0.5, 0.95, 0.99], [0.5, 0.95])
    assert rows[0] == {"threshold": 0.5, "recall": 1.0, "false_reject_rate": pytest.approx(1 / 3)}
    assert rows[1]["recall"] == pytest.approx(2 / 3) and rows[1]["false_reject_rate"] == 0.0


def _thr(value=1.0, low=0.9, high=1.1):
    return Threshold(value=value, low=low, high=high, budget=0.005, n=10, method="t", expected_false_reject=0.0, good_max=value)


def test_model_score_normalises_and_classes_against_the_band():
    t = _thr(2.0, 1.8, 2.2)
    s = model_score("patchcore", 1.0, t)
    assert s.score == 0.5 and s.band == (0.9, 1.1) and s.state is ModelState.NORMAL
    assert model_score("patchcore", 2.0, t).state is ModelState.UNCERTAIN
    assert model_score("patchcore", 2.2, t).state is ModelState.DEFECT
    assert model_score("patchcore", float("nan"), t).state is ModelState.UNCERTAIN


@pytest.mark.parametrize(
    "raws, decision, reason",
    [
        ((0.5, 0.5), Decision.PASS, Reason.AGREE_NORMAL),
        ((2.0, 3.0), Decision.FAIL, Reason.AGREE_DEFECT),
        ((0.5, 3.0), Decision.REVIEW, Reason.MODELS_DISAGREE),
        ((1.0, 0.5), Decision.REVIEW, Reason.NEAR_THRESHOLD),
        ((1.0, 3.0), Decision.REVIEW, Reason.NEAR_THRESHOLD),
    ],
)
def test_fusion_rules(raws, decision, reason):
    scores = [model_score(m, r, _thr()) for m, r in zip(("patchcore", "autoencoder"), raws)]
    v = fuse(scores)
    assert v.decision is decision
    assert reason in v.reasons
    assert v.fused == pytest.approx(np.mean(raws))
    assert v.score_of("autoencoder").raw == raws[1]


def test_unfamiliar_input_always_goes_to_review():
    scores = [model_score(m, 0.1, _thr()) for m in ("patchcore", "autoencoder")]
    v = fuse(scores, ["The image is almost uniform"])
    assert v.decision is Decision.REVIEW
    assert v.reasons == (Reason.UNFAMILIAR_INPUT,)
    assert "uniform" in v.notes[0]


def test_three_models_must_all_agree():
    t = _thr()
    v = fuse([model_score("patchcore", 2, t), model_score("autoencoder", 2, t), model_score("classifier", 0.2, t)])
    assert v.decision is Decision.REVIEW and Reason.MODELS_DISAGREE in v.reasons
    assert "classifier" in v.notes[-1]


def test_expected_false_reject_follows_the_fitted_law():
    from core.calibration import expected_false_reject

    rng = np.random.default_rng(3)
    scores = rng.gumbel(5.0, 0.4, size=300)
    thr = fit_threshold(scores, 1 / 200)
    # the threshold is never below the fitted budget quantile, so the fitted rate there is within budget
    assert expected_false_reject(scores, thr.value) <= 1 / 200 + 1e-12
    assert expected_false_reject(scores, thr.high) == pytest.approx(thr.expected_false_reject)
    assert expected_false_reject(scores, 100.0) < 1e-9 < expected_false_reject(scores, 4.0)
