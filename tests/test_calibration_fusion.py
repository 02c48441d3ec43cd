import math

import numpy as np
import pytest

from core.calibration import CalibrationError, Threshold, fit_threshold, tradeoff
from core.fusion import Fusion, fuse, model_score
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
    lo, hi = thr.uncertainty
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


def test_pass_limit_is_the_empirical_quantile_at_the_review_budget():
    rng = np.random.default_rng(1)
    scores = rng.gumbel(10.0, 0.5, size=400)
    thr = fit_threshold(scores, 1 / 200, 1 / 10)
    assert thr.pass_limit == pytest.approx(np.quantile(scores, 0.9))
    assert thr.pass_limit < thr.value and thr.band == (pytest.approx(thr.pass_limit / thr.value), 1.0)
    assert thr.centre == pytest.approx(np.median(scores))
    assert thr.review_budget == 0.1 and thr.budget == 0.005
    # with few scores the PASS limit falls back to the Gumbel estimate, never below the data's quantile
    few = fit_threshold(scores[:30], 1 / 200, 1 / 10)
    assert few.pass_limit >= np.quantile(scores[:30], 0.9) - 1e-9
    # no review budget: no review zone
    none = fit_threshold(scores, 1 / 200, None)
    assert none.band == (1.0, 1.0) and Threshold.from_dict(none.to_dict()).band == (1.0, 1.0)
    assert none.to_dict()["pass_limit"] is None  # JSON-ready, no NaN
    with pytest.raises(CalibrationError):
        fit_threshold(scores, 1 / 10, 1 / 200)  # the review budget must be the larger one


def _thr(value=1.0, pass_limit=0.9, centre=0.5):
    return Threshold(value=value, low=value * 0.95, high=value * 1.05, budget=0.005, n=10, method="t",
                     expected_false_reject=0.0, good_max=value, pass_limit=pass_limit, review_budget=0.1,
                     centre=centre)


def test_model_score_normalises_and_classes_against_the_pass_and_fail_limits():
    t = _thr(2.0, 1.8, 1.0)
    s = model_score("patchcore", 1.0, t)
    assert s.score == 0.5 and s.band == (0.9, 1.0) and s.state is ModelState.NORMAL
    assert model_score("patchcore", 1.9, t).state is ModelState.UNCERTAIN
    assert model_score("patchcore", 2.0, t).state is ModelState.DEFECT
    assert model_score("patchcore", float("nan"), t).state is ModelState.UNCERTAIN


def _fusion(weights=None):
    thr = {"patchcore": _thr(), "gaussian": _thr()}
    f = Fusion.from_thresholds(thr, weights or {"patchcore": 1.0, "gaussian": 1.0})
    # fused: 1 for typical goods, 2 at both FAIL limits; PASS below 1.7, FAIL from 1.9
    return f.with_threshold(_thr(1.9, 1.7, 1.0))


def test_fused_score_standardises_each_model_and_weighs_them():
    f = _fusion({"patchcore": 2.0, "gaussian": 1.0})
    assert f.standardised("patchcore", 0.5) == pytest.approx(1.0)  # a typical good part
    assert f.standardised("patchcore", 1.0) == pytest.approx(2.0)  # at the FAIL limit
    assert f.combine({"patchcore": 1.0, "gaussian": 0.5}) == pytest.approx((2 * 2.0 + 1.0) / 3)
    np.testing.assert_allclose(f.combine({"patchcore": np.array([0.5, 1.0]), "gaussian": np.array([0.5, 1.0])}),
                               [1.0, 2.0])
    assert Fusion.from_dict(f.to_dict()) == f


@pytest.mark.parametrize(
    "raws, decision, reason",
    [
        ((0.5, 0.5), Decision.PASS, Reason.AGREE_NORMAL),      # fused 1.0: typical
        ((1.2, 1.2), Decision.FAIL, Reason.AGREE_DEFECT),      # fused 2.4, both at FAIL
        ((0.85, 0.85), Decision.REVIEW, Reason.NEAR_THRESHOLD),  # fused 1.7..1.9: between the limits
        ((1.5, 0.55), Decision.REVIEW, Reason.MODELS_DISAGREE),  # fused 2.05 (FAIL) but gaussian sure it is good
        ((1.05, 0.2), Decision.REVIEW, Reason.MODELS_DISAGREE),  # fused 1.25 (PASS) but patchcore at its FAIL limit
    ],
)
def test_fusion_rules(raws, decision, reason):
    fusion = _fusion()
    scores = [model_score(m, r, _thr()) for m, r in zip(("patchcore", "gaussian"), raws)]
    v = fuse(scores, fusion)
    assert v.decision is decision
    assert reason in v.reasons
    assert v.fused == pytest.approx(fusion.combine(dict(zip(("patchcore", "gaussian"), raws))) / 1.9)
    assert v.fused_band == pytest.approx((1.7 / 1.9, 1.0))
    assert v.score_of("gaussian").raw == raws[1]


def test_without_fusion_limits_the_models_must_agree():
    t = _thr()
    assert fuse([model_score("patchcore", 0.5, t), model_score("gaussian", 0.5, t)]).decision is Decision.PASS
    assert fuse([model_score("patchcore", 2.0, t), model_score("gaussian", 2.0, t)]).decision is Decision.FAIL
    v = fuse([model_score("patchcore", 2.0, t), model_score("gaussian", 0.5, t)])
    assert v.decision is Decision.REVIEW


def test_unfamiliar_input_always_goes_to_review():
    scores = [model_score(m, 0.1, _thr()) for m in ("patchcore", "gaussian")]
    v = fuse(scores, _fusion(), ["The image is almost uniform"])
    assert v.decision is Decision.REVIEW
    assert v.reasons == (Reason.UNFAMILIAR_INPUT,)
    assert "uniform" in v.notes[0]


def test_a_third_model_sure_of_no_defect_stops_a_fail():
    t = _thr()
    thr = {"patchcore": t, "gaussian": t, "classifier": t}
    fusion = Fusion.from_thresholds(thr, {"patchcore": 1.0, "gaussian": 1.0, "classifier": 1.0}).with_threshold(
        _thr(1.9, 1.7, 1.0))
    v = fuse([model_score("patchcore", 2, t), model_score("gaussian", 2, t), model_score("classifier", 0.4, t)],
             fusion)
    assert v.decision is Decision.REVIEW and Reason.MODELS_DISAGREE in v.reasons
    assert "classifier" in v.notes[-1]


def test_expected_false_reject_follows_the_fitted_law():
    from core.calibration import expected_false_reject

    rng = np.random.default_rng(3)
    scores = rng.gumbel(5.0, 0.4, size=300)
    thr = fit_threshold(scores, 1 / 200)
    # the FAIL limit is never below the fitted budget quantile, so the fitted rate there is within budget
    assert expected_false_reject(scores, thr.value) <= 1 / 200 + 1e-12
    assert expected_false_reject(scores, thr.value) == pytest.approx(thr.expected_false_reject)
    assert expected_false_reject(scores, 100.0) < 1e-9 < expected_false_reject(scores, 4.0)
