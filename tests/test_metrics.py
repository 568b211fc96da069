"""Metric functions against scipy, hand-computed fixtures, invariances and bootstrap coverage."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from qsave import metrics

# pred vs MOS: ranks differ by one swap in each of two pairs.
PRED = [1.0, 2.0, 3.0, 4.0, 5.0]
MOS = [2.0, 1.0, 4.0, 3.0, 5.0]


def test_correlations_agree_with_scipy_on_random_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    result = metrics.instance_metrics(x, y)
    assert result.srcc == pytest.approx(stats.spearmanr(x, y).statistic)
    assert result.krcc == pytest.approx(stats.kendalltau(x, y).statistic)
    assert result.plcc == pytest.approx(stats.pearsonr(x, y).statistic)
    assert result.rmse == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))
    assert result.n == 200 and result.n_excluded == 0


def test_hand_computed_fixture() -> None:
    # d = rank differences (-1, 1, -1, 1, 0): SRCC = 1 - 6·4 / (5·24) = 0.8; 2 of 10 pairs discordant:
    # KRCC = (8 - 2) / 10; PLCC = 8 / sqrt(10·10); RMSE = sqrt(4 / 5).
    result = metrics.instance_metrics(PRED, MOS)
    assert result.srcc == pytest.approx(0.8)
    assert result.krcc == pytest.approx(0.6)
    assert result.plcc == pytest.approx(0.8)
    assert result.rmse == pytest.approx(math.sqrt(0.8))


def test_logistic_midpoint_and_fit_recovers_parameters() -> None:
    assert metrics.logistic4(3.0, 5.0, 1.0, 3.0, 0.7) == pytest.approx(3.0)
    assert metrics.logistic4(3.0, 5.0, 1.0, 3.0, -0.7) == pytest.approx(3.0)  # |β4|
    x = np.linspace(0, 10, 60)
    y = metrics.logistic4(x, 4.8, 1.2, 5.0, 1.5)
    fit = metrics.fit_logistic(x, y)
    assert fit.ok
    assert fit.params is not None
    np.testing.assert_allclose(np.abs(fit.params), [4.8, 1.2, 5.0, 1.5], rtol=1e-3)
    result = metrics.instance_metrics(x, y)
    assert result.plcc_fit == pytest.approx(1.0)
    assert result.rmse_fit == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("transform", [np.exp, lambda v: v**3, lambda v: 2 * v + 7, np.arctan])
def test_rank_correlations_invariant_under_monotone_maps(transform) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, 150)
    y = x + rng.normal(scale=0.7, size=150)
    before = metrics.instance_metrics(x, y)
    after = metrics.instance_metrics(transform(x), y)
    assert after.srcc == pytest.approx(before.srcc)
    assert after.krcc == pytest.approx(before.krcc)


def test_plcc_after_fit_not_below_raw_on_monotone_nonlinear_relation() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 300)
    y = 1 + 4 / (1 + np.exp(-(x - 0.5) * 12)) + rng.normal(scale=0.15, size=300)
    result = metrics.instance_metrics(x, y)
    assert result.fit.ok
    assert result.plcc_fit >= result.plcc
    assert result.plcc_fit > result.plcc + 0.02  # the sigmoid is not linear: the fit must help
    assert result.rmse_fit < result.rmse


def test_constant_predictions_give_nan_with_reason_not_a_crash() -> None:
    with pytest.warns(metrics.MetricWarning, match="constant predictions"):
        result = metrics.instance_metrics([3.0] * 6, [1, 2, 3, 4, 5, 4])
    assert math.isnan(result.srcc) and math.isnan(result.krcc) and math.isnan(result.plcc)
    assert math.isnan(result.plcc_fit)
    assert result.undefined == "constant predictions"
    assert not result.fit.ok
    assert math.isfinite(result.rmse)
    ci = metrics.bootstrap_correlation_ci([3.0] * 6, [1, 2, 3, 4, 5, 4], n_resamples=50)
    assert math.isnan(ci["srcc"].low)


def test_nan_rows_are_excluded_and_counted() -> None:
    x = [*PRED, np.nan, 2.0]
    y = [*MOS, 3.0, np.nan]
    result = metrics.instance_metrics(x, y)
    assert result.n == 5 and result.n_excluded == 2
    assert result.srcc == pytest.approx(0.8)


def test_failed_fit_falls_back_to_raw_with_a_warning() -> None:
    with pytest.warns(metrics.MetricWarning, match="fell back to raw"):
        fit = metrics.fit_logistic([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert not fit.ok
    np.testing.assert_array_equal(fit.apply([1.0, 2.0]), [1.0, 2.0])
    with pytest.warns(metrics.MetricWarning):
        result = metrics.instance_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert result.plcc_fit == pytest.approx(result.plcc)


def test_a_given_fit_is_applied_instead_of_refitting() -> None:
    x = np.linspace(0, 1, 40)
    y = metrics.logistic4(x, 5, 1, 0.5, 0.1)
    train_fit = metrics.fit_logistic(x, y)
    shifted = metrics.instance_metrics(x + 0.2, y, fit=train_fit)
    assert shifted.fit is train_fit
    assert shifted.rmse_fit > 0.3  # the train mapping does not fit the shifted rows


def _bivariate_normal(rng: np.random.Generator, rho: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)


def test_bootstrap_ci_covers_true_correlation_at_nominal_rate() -> None:
    rho, n, populations = 0.6, 100, 200
    true = {"plcc": rho, "srcc": 6 / math.pi * math.asin(rho / 2)}  # bivariate normal
    rng = np.random.default_rng(3)
    hits = {"plcc": 0, "srcc": 0}
    for k in range(populations):
        x, y = _bivariate_normal(rng, rho, n)
        cis = metrics.bootstrap_correlation_ci(x, y, n_resamples=200, level=0.9, seed=k)
        for name, ci in cis.items():
            hits[name] += ci.low <= true[name] <= ci.high
    for name, count in hits.items():
        assert 0.84 <= count / populations <= 0.96, (name, count)


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(4)
    x, y = _bivariate_normal(rng, 0.5, 60)
    a = metrics.bootstrap_correlation_ci(x, y, n_resamples=300, seed=7)
    b = metrics.bootstrap_correlation_ci(x, y, n_resamples=300, seed=7)
    assert a == b
    assert a["srcc"].low < metrics.spearman(x, y) < a["srcc"].high


def test_paired_delta_ci_brackets_a_clear_improvement() -> None:
    rng = np.random.default_rng(5)
    mos = rng.uniform(1, 5, 200)
    good = mos + rng.normal(scale=0.3, size=200)
    bad = mos + rng.normal(scale=2.0, size=200)
    cis = metrics.bootstrap_delta_ci(good, bad, mos, n_resamples=300)
    assert cis["srcc"].low > 0
    assert cis["plcc"].low > 0


def test_pairwise_ranking_accuracy_hand_values() -> None:
    assert metrics.pairwise_ranking_accuracy([1, 2, 3], [1, 3, 2]) == pytest.approx(2 / 3)
    assert metrics.pairwise_ranking_accuracy([1, 1, 2], [1, 2, 3]) == pytest.approx(2.5 / 3)  # tie = ½
    assert math.isnan(metrics.pairwise_ranking_accuracy([1, 2], [3, 3]))


def test_model_level_means_correlations_and_cis() -> None:
    rng = np.random.default_rng(6)
    quality = {"g0": 1.5, "g1": 2.5, "g2": 3.0, "g3": 4.2}
    generators = [g for g in quality for _ in range(30)]
    mos = np.array([quality[g] for g in generators]) + rng.normal(scale=0.5, size=len(generators))
    pred = mos + rng.normal(scale=0.3, size=len(generators))
    result = metrics.model_level_metrics(pred, mos, generators, n_resamples=300)
    assert result.generators == sorted(quality)
    assert result.n_videos == [30] * 4
    g1 = np.array(generators) == "g1"
    assert result.mos_mean[1] == pytest.approx(mos[g1].mean())
    assert result.pred_mean[1] == pytest.approx(pred[g1].mean())
    assert result.srcc == pytest.approx(1.0)
    assert result.pairwise_accuracy == pytest.approx(1.0)
    assert result.plcc_ci.low <= result.plcc <= result.plcc_ci.high
    assert result.undefined is None


def test_model_level_with_too_few_generators_is_flagged() -> None:
    with pytest.warns(metrics.MetricWarning, match="2 generator"):
        result = metrics.model_level_metrics([1, 2, 3, 4], [1, 2, 4, 3], ["a", "a", "b", "b"], n_resamples=20)
    assert math.isnan(result.srcc)
    assert result.undefined is not None and "generator" in result.undefined
    assert result.pairwise_accuracy == pytest.approx(1.0)


def test_reason_scores_hand_computed() -> None:
    predicted = [{"a"}, {"a", "b"}, set()]
    truth = [{"a"}, {"b"}, {"c"}]
    scores = metrics.reason_scores(predicted, truth, codes=("a", "b", "c", "unused"))
    # TP: a@0, b@1; FP: a@1; FN: c@2.
    assert scores.micro_precision == pytest.approx(2 / 3)
    assert scores.micro_recall == pytest.approx(2 / 3)
    assert scores.micro_f1 == pytest.approx(2 / 3)
    assert scores.per_code["a"].precision == pytest.approx(0.5)
    assert scores.per_code["a"].f1 == pytest.approx(2 / 3)
    assert scores.per_code["b"].f1 == pytest.approx(1.0)
    assert scores.per_code["c"].recall == 0.0 and scores.per_code["c"].f1 == 0.0
    assert math.isnan(scores.per_code["unused"].f1)
    assert scores.macro_f1 == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert scores.macro_precision == pytest.approx(0.5)
    assert scores.macro_recall == pytest.approx(2 / 3)


def test_level_metrics_hand_computed() -> None:
    # Levels: pred → bad, fair, good, excellent; MOS → bad, poor, fair, excellent.
    result = metrics.level_metrics([1.2, 2.6, 4.4, 5.0], [1.0, 2.0, 3.4, 4.6])
    assert result.level_accuracy == pytest.approx(0.5)
    assert result.within_one_accuracy == pytest.approx(1.0)
    assert result.low_detection_accuracy == pytest.approx(0.75)


def test_predictive_std_and_expected_score() -> None:
    probs = np.array([[0, 0, 1, 0, 0], [0.2] * 5, [0.5, 0, 0, 0, 0.5], [0, 0, 0, 0, 0]], dtype=float)
    std = metrics.predictive_std(probs)
    np.testing.assert_allclose(std[:3], [0.0, math.sqrt(2.0), 2.0])
    assert math.isnan(std[3])  # an all-zero row has no distribution
    np.testing.assert_allclose(metrics.expected_score(probs[:3]), [3.0, 3.0, 3.0])


def test_reliability_diagram_separates_calibrated_from_overconfident() -> None:
    rng = np.random.default_rng(8)
    n = 4000
    logits = rng.normal(scale=1.5, size=(n, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    levels = np.array([rng.choice(5, p=p) for p in probs])
    mos = levels + 1.0
    calibrated = metrics.reliability_diagram(probs, mos, n_bins=10)
    sharp = np.exp(4 * logits) / np.exp(4 * logits).sum(axis=1, keepdims=True)
    overconfident = metrics.reliability_diagram(sharp, mos, n_bins=10)
    assert calibrated.ece < 0.05
    assert overconfident.ece > 0.15
    assert sum(calibrated.counts) == n
    filled = [c for c in calibrated.counts if c]
    assert len(filled) >= 4


def test_uncertainty_tracks_errors() -> None:
    rng = np.random.default_rng(9)
    n = 500
    width = rng.uniform(0.2, 1.5, n)
    centre = rng.uniform(1.5, 4.5, n)
    levels = np.arange(1, 6)
    probs = np.exp(-((levels[None, :] - centre[:, None]) ** 2) / (2 * width[:, None] ** 2))
    pred = metrics.expected_score(probs)
    mos = pred + rng.normal(size=n) * metrics.predictive_std(probs)
    result = metrics.uncertainty_metrics(probs, pred, mos, rater_std=width)
    assert result.n == n
    assert result.srcc_std_abs_error > 0.3
    assert result.srcc_std_rater_std > 0.8


def test_warnings_do_not_escape_as_errors_for_clean_data() -> None:
    rng = np.random.default_rng(10)
    x = rng.uniform(1, 5, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.instance_metrics(x, x + rng.normal(scale=0.5, size=100))
