"""Quality-assessment metrics: instance and model level, attribution, uncertainty (numpy/scipy only).

Conventions (DESIGN.md "Evaluation and the gate"):

* SRCC / KRCC (tau-b) / PLCC on raw predictions, and PLCC / RMSE after the VQEG 4-parameter logistic
  ``ŷ = β2 + (β1 − β2) / (1 + exp(−(x − β3) / |β4|))`` fitted with ``β0 = [max MOS, min MOS, mean pred,
  0.5]``. RMSE is ``√mean((ŷ − MOS)²)``. A fit that fails or is degenerate falls back to the raw
  predictions with a :class:`MetricWarning`, never an exception.
* Rows where the prediction or the MOS is not finite are excluded and counted (``n_excluded``).
* A correlation that is undefined (constant input, fewer than three rows) is ``nan`` and the result
  says why in ``undefined``.
* Bootstrap confidence intervals are percentile intervals from seeded, vectorised resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from qsave.schema import LEVELS, is_low, score_to_level

FloatArray = NDArray[np.float64]
MIN_ROWS = 3
"""Fewest rows (or generators) for which a correlation is reported."""

_RESAMPLE_BUDGET = 4_000_000
"""Most resampled values held in memory at once by the vectorised bootstrap."""


class MetricWarning(RuntimeWarning):
    """A metric that could not be computed as asked (fit fallback, undefined correlation)."""


# --------------------------------------------------------------------------------------------------
# Instance level
# --------------------------------------------------------------------------------------------------


def logistic4(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> FloatArray:
    """The VQEG 4-parameter logistic mapping predictions onto the MOS scale."""
    z = -(np.asarray(x, dtype=np.float64) - b3) / abs(b4)
    return b2 + (b1 - b2) / (1.0 + np.exp(np.clip(z, -700.0, 700.0)))


@dataclass(frozen=True)
class LogisticFit:
    """A fitted logistic, or the identity when the fit failed (``ok`` is False, ``message`` says why)."""

    params: tuple[float, float, float, float] | None
    ok: bool
    message: str = ""

    def apply(self, x: ArrayLike) -> FloatArray:
        values = np.asarray(x, dtype=np.float64)
        if not self.ok or self.params is None:
            return values
        return logistic4(values, *self.params)


def _identity_fit(message: str, *, warn: bool = True) -> LogisticFit:
    if warn:
        warnings.warn(f"logistic fit fell back to raw predictions: {message}", MetricWarning, stacklevel=3)
    return LogisticFit(params=None, ok=False, message=message)


def fit_logistic(pred: ArrayLike, mos: ArrayLike, maxfev: int = 20_000) -> LogisticFit:
    """Fit the 4-parameter logistic from predictions to MOS (finite pairs only)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        return _identity_fit(f"{len(x)} valid rows, the 4-parameter fit needs at least 4")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return _identity_fit("predictions or MOS are constant")
    beta0 = [float(y.max()), float(y.min()), float(x.mean()), 0.5]
    try:
        with warnings.catch_warnings():
            # A near-linear relation drives β1, β2, β4 far out and leaves the covariance inestimable;
            # the fitted curve is still good, so judge the curve below, not the covariance.
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic4, x, y, p0=beta0, maxfev=maxfev)
    except (RuntimeError, ValueError) as exc:
        return _identity_fit(f"curve_fit did not converge ({exc})")
    fitted = logistic4(x, *params)
    if not np.all(np.isfinite(params)) or not np.all(np.isfinite(fitted)):
        return _identity_fit(f"non-finite parameters {params.tolist()}")
    if np.ptp(fitted) <= 1e-9 * max(1.0, float(np.ptp(y))):
        return _identity_fit("the fitted curve is flat over the predictions")
    linear = np.polyval(np.polyfit(x, y, 1), x)
    sse, sse_linear = float(np.sum((fitted - y) ** 2)), float(np.sum((linear - y) ** 2))
    if sse > sse_linear * (1 + 1e-3) + 1e-12:
        return _identity_fit(f"the fit stopped in a poor optimum (SSE {sse:.4g} > linear {sse_linear:.4g})")
    b1, b2, b3, b4 = (float(p) for p in params)
    return LogisticFit(params=(b1, b2, b3, b4), ok=True)


def _finite_pairs(pred: ArrayLike, mos: ArrayLike) -> tuple[FloatArray, FloatArray, int]:
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(mos, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predictions ({x.size}) and MOS ({y.size}) differ in length")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], int((~keep).sum())


def _undefined_reason(x: FloatArray, y: FloatArray) -> str | None:
    if len(x) < MIN_ROWS:
        return f"only {len(x)} valid rows (need {MIN_ROWS})"
    if np.ptp(x) == 0:
        return "constant predictions"
    if np.ptp(y) == 0:
        return "constant MOS"
    return None


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    a, b, _ = _finite_pairs(x, y)
    return math.nan if _undefined_reason(a, b) else float(stats.pearsonr(a, b).statistic)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    a, b, _ = _finite_pairs(x, y)
    return math.nan if _undefined_reason(a, b) else float(stats.spearmanr(a, b).statistic)


def kendall(x: ArrayLike, y: ArrayLike) -> float:
    a, b, _ = _finite_pairs(x, y)
    return math.nan if _undefined_reason(a, b) else float(stats.kendalltau(a, b).statistic)


def rmse(x: ArrayLike, y: ArrayLike) -> float:
    a, b, _ = _finite_pairs(x, y)
    return float(np.sqrt(np.mean((a - b) ** 2))) if len(a) else math.nan


@dataclass(frozen=True)
class InstanceMetrics:
    """Per-video agreement between predictions and MOS for one dimension."""

    n: int
    n_excluded: int
    srcc: float
    krcc: float
    plcc: float
    plcc_fit: float
    rmse: float
    rmse_fit: float
    fit: LogisticFit
    undefined: str | None = None
    """Why the correlations are ``nan`` (constant input, too few rows), or None."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def instance_metrics(pred: ArrayLike, mos: ArrayLike, fit: LogisticFit | None = None) -> InstanceMetrics:
    """SRCC, KRCC, PLCC raw and after the logistic fit, RMSE raw and after the fit.

    ``fit`` is a logistic fitted elsewhere (e.g. on the train split) to apply instead of fitting on these
    rows; by default the fit is made on these rows (VQEG practice).
    """
    x, y, n_excluded = _finite_pairs(pred, mos)
    undefined = _undefined_reason(x, y)
    if undefined is not None:
        warnings.warn(f"correlations undefined: {undefined}", MetricWarning, stacklevel=2)
        used_fit = fit or LogisticFit(params=None, ok=False, message=undefined)
        fitted = used_fit.apply(x)
        nan = math.nan
        return InstanceMetrics(
            n=len(x), n_excluded=n_excluded, srcc=nan, krcc=nan, plcc=nan, plcc_fit=nan,
            rmse=rmse(x, y), rmse_fit=rmse(fitted, y), fit=used_fit, undefined=undefined,
        )  # fmt: skip
    used_fit = fit if fit is not None else fit_logistic(x, y)
    fitted = used_fit.apply(x)
    plcc_fit = pearson(fitted, y)
    return InstanceMetrics(
        n=len(x),
        n_excluded=n_excluded,
        srcc=float(stats.spearmanr(x, y).statistic),
        krcc=float(stats.kendalltau(x, y).statistic),
        plcc=float(stats.pearsonr(x, y).statistic),
        plcc_fit=plcc_fit,
        rmse=rmse(x, y),
        rmse_fit=rmse(fitted, y),
        fit=used_fit,
    )


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def _rowwise_pearson(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (nan where a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    r[denom <= 1e-12] = np.nan
    return np.clip(r, -1.0, 1.0)


def _rowwise_spearman(a: FloatArray, b: FloatArray) -> FloatArray:
    return _rowwise_pearson(stats.rankdata(a, axis=1), stats.rankdata(b, axis=1))


ROWWISE_STATISTICS: dict[str, Callable[[FloatArray, FloatArray], FloatArray]] = {
    "srcc": _rowwise_spearman,
    "plcc": _rowwise_pearson,
}
"""Correlations that the bootstrap computes for many resamples at once (one resample per row)."""


@dataclass(frozen=True)
class ConfidenceInterval:
    low: float
    high: float
    level: float
    n_resamples: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _percentile_ci(values: FloatArray, level: float, n_resamples: int) -> ConfidenceInterval:
    finite = values[np.isfinite(values)]
    if finite.size < max(10, n_resamples // 2):
        return ConfidenceInterval(math.nan, math.nan, level, n_resamples)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return ConfidenceInterval(float(low), float(high), level, n_resamples)


def _bootstrap(
    arrays: tuple[FloatArray, ...],
    statistics: dict[str, Callable[..., FloatArray]],
    n_resamples: int,
    level: float,
    seed: int,
) -> dict[str, ConfidenceInterval]:
    """Resample rows of ``arrays`` together (same indices), evaluate each row-wise statistic on many
    resamples at once (in chunks that bound memory), and return percentile intervals."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    chunk = max(1, _RESAMPLE_BUDGET // (n * len(arrays)))
    draws: dict[str, list[FloatArray]] = {name: [] for name in statistics}
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        resampled = [values[idx] for values in arrays]
        for name, statistic in statistics.items():
            draws[name].append(statistic(*resampled))
    return {name: _percentile_ci(np.concatenate(v), level, n_resamples) for name, v in draws.items()}


def bootstrap_correlation_ci(
    pred: ArrayLike,
    mos: ArrayLike,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, ConfidenceInterval]:
    """Percentile bootstrap CIs of SRCC and PLCC over videos (finite pairs only), keyed by statistic."""
    x, y, _ = _finite_pairs(pred, mos)
    if _undefined_reason(x, y) is not None:
        nan_ci = ConfidenceInterval(math.nan, math.nan, level, n_resamples)
        return dict.fromkeys(ROWWISE_STATISTICS, nan_ci)
    return _bootstrap((x, y), ROWWISE_STATISTICS, n_resamples, level, seed)


def bootstrap_delta_ci(
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    mos: ArrayLike,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, ConfidenceInterval]:
    """Paired bootstrap CIs of ``corr(a, MOS) − corr(b, MOS)`` for SRCC and PLCC, resampling the videos
    both prediction sets scored (rows where either prediction or the MOS is not finite are left out)."""
    a = np.asarray(pred_a, dtype=np.float64)
    b = np.asarray(pred_b, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(y)
    a, b, y = a[keep], b[keep], y[keep]
    if _undefined_reason(a, y) is not None or _undefined_reason(b, y) is not None:
        nan_ci = ConfidenceInterval(math.nan, math.nan, level, n_resamples)
        return dict.fromkeys(ROWWISE_STATISTICS, nan_ci)
    differences = {
        name: (lambda pa, pb, m, f=statistic: f(pa, m) - f(pb, m))
        for name, statistic in ROWWISE_STATISTICS.items()
    }
    return _bootstrap((a, b, y), differences, n_resamples, level, seed)


# --------------------------------------------------------------------------------------------------
# Model level
# --------------------------------------------------------------------------------------------------


def pairwise_ranking_accuracy(pred_means: ArrayLike, mos_means: ArrayLike) -> float:
    """Share of generator pairs (with different mean MOS) that the predictions order the same way.

    A tie in the predicted means counts half. ``nan`` when no pair has different mean MOS.
    """
    p = np.asarray(pred_means, dtype=np.float64)
    m = np.asarray(mos_means, dtype=np.float64)
    i, j = np.triu_indices(len(p), k=1)
    mos_sign = np.sign(m[i] - m[j])
    pred_sign = np.sign(p[i] - p[j])
    ranked = mos_sign != 0
    if not ranked.any():
        return math.nan
    credit = np.where(pred_sign[ranked] == 0, 0.5, (pred_sign[ranked] == mos_sign[ranked]).astype(float))
    return float(credit.mean())


@dataclass(frozen=True)
class ModelLevelMetrics:
    """Agreement between generators' mean predicted score and mean MOS."""

    generators: list[str]
    n_videos: list[int]
    pred_mean: list[float]
    mos_mean: list[float]
    srcc: float
    plcc: float
    pairwise_accuracy: float
    srcc_ci: ConfidenceInterval
    plcc_ci: ConfidenceInterval
    pairwise_accuracy_ci: ConfidenceInterval
    undefined: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_level_metrics(
    pred: ArrayLike,
    mos: ArrayLike,
    generators: Sequence[str],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> ModelLevelMetrics:
    """Mean predicted score vs mean MOS per generator: SRCC, PLCC, pairwise ranking accuracy, with
    bootstrap CIs from resampling videos within each generator (seeded)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    g = np.asarray([str(v) for v in generators], dtype=object)
    if not (len(x) == len(y) == len(g)):
        raise ValueError(f"lengths differ: {len(x)} predictions, {len(y)} MOS, {len(g)} generators")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[keep], y[keep], g[keep]
    names = sorted(set(g.tolist()))
    groups = [np.flatnonzero(g == name) for name in names]
    pred_mean = np.array([x[idx].mean() for idx in groups])
    mos_mean = np.array([y[idx].mean() for idx in groups])
    undefined = _undefined_reason(pred_mean, mos_mean)
    if len(names) < MIN_ROWS:
        undefined = f"only {len(names)} generator(s) with valid rows (need {MIN_ROWS})"
    nan_ci = ConfidenceInterval(math.nan, math.nan, level, n_resamples)
    base = {
        "generators": names,
        "n_videos": [len(idx) for idx in groups],
        "pred_mean": pred_mean.tolist(),
        "mos_mean": mos_mean.tolist(),
    }
    if undefined is not None:
        warnings.warn(f"model-level correlations undefined: {undefined}", MetricWarning, stacklevel=2)
        nan = math.nan
        pairwise = pairwise_ranking_accuracy(pred_mean, mos_mean) if len(names) >= 2 else nan
        return ModelLevelMetrics(
            **base, srcc=nan, plcc=nan, pairwise_accuracy=pairwise,
            srcc_ci=nan_ci, plcc_ci=nan_ci, pairwise_accuracy_ci=nan_ci, undefined=undefined,
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    boot_pred = np.empty((n_resamples, len(names)))
    boot_mos = np.empty((n_resamples, len(names)))
    for col, idx in enumerate(groups):
        draw = idx[rng.integers(0, len(idx), size=(n_resamples, len(idx)))]
        boot_pred[:, col] = x[draw].mean(axis=1)
        boot_mos[:, col] = y[draw].mean(axis=1)
    pairwise_draws = np.array([pairwise_ranking_accuracy(p, m) for p, m in zip(boot_pred, boot_mos)])
    return ModelLevelMetrics(
        **base,
        srcc=float(stats.spearmanr(pred_mean, mos_mean).statistic),
        plcc=float(stats.pearsonr(pred_mean, mos_mean).statistic),
        pairwise_accuracy=pairwise_ranking_accuracy(pred_mean, mos_mean),
        srcc_ci=_percentile_ci(_rowwise_spearman(boot_pred, boot_mos), level, n_resamples),
        plcc_ci=_percentile_ci(_rowwise_pearson(boot_pred, boot_mos), level, n_resamples),
        pairwise_accuracy_ci=_percentile_ci(pairwise_draws, level, n_resamples),
    )


# --------------------------------------------------------------------------------------------------
# Attribution: reasons and levels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonCodeScore:
    precision: float
    recall: float
    f1: float
    support: int
    """Videos whose raters gave this reason."""
    predicted: int
    """Videos for which the model gave this reason."""


@dataclass(frozen=True)
class ReasonScores:
    """Predicted reasons against the raters' reasons for one dimension.

    Micro averages pool true/false positives over codes; macro averages are means over the codes that
    were given by the raters or the model at least once (a code neither side used has no defined score;
    a zero denominator otherwise scores 0, as sklearn's ``zero_division=0``).
    """

    n: int
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_code: dict[str, ReasonCodeScore] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; a zero denominator gives 0 (sklearn's ``zero_division=0``), and all
    three are nan when the code was used by neither side."""
    if tp + fp + fn == 0:
        return math.nan, math.nan, math.nan
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


def reason_scores(
    predicted: Sequence[Iterable[str]], truth: Sequence[Iterable[str]], codes: Sequence[str] = ()
) -> ReasonScores:
    """Precision / recall / F1 of predicted reason sets against the raters' sets, one pair per video.

    ``codes`` lists the codes to report even when unused (e.g. the dimension's taxonomy); every code
    seen on either side is scored too, so an unknown predicted code counts as a false positive.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted reason sets but {len(truth)} rater sets")
    pred_sets = [set(p) for p in predicted]
    true_sets = [set(t) for t in truth]
    seen = set().union(*pred_sets, *true_sets) if pred_sets else set()
    all_codes = list(dict.fromkeys([*codes, *sorted(seen)]))
    per_code: dict[str, ReasonCodeScore] = {}
    totals = np.zeros(3, dtype=np.int64)
    for code in all_codes:
        tp = sum(code in p and code in t for p, t in zip(pred_sets, true_sets))
        fp = sum(code in p and code not in t for p, t in zip(pred_sets, true_sets))
        fn = sum(code not in p and code in t for p, t in zip(pred_sets, true_sets))
        totals += (tp, fp, fn)
        per_code[code] = ReasonCodeScore(*_prf(tp, fp, fn), support=tp + fn, predicted=tp + fp)
    used = [s for s in per_code.values() if s.support or s.predicted]
    micro = _prf(*(int(v) for v in totals))

    def macro(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    return ReasonScores(
        n=len(pred_sets),
        micro_precision=micro[0],
        micro_recall=micro[1],
        micro_f1=micro[2],
        macro_precision=macro([s.precision for s in used]),
        macro_recall=macro([s.recall for s in used]),
        macro_f1=macro([s.f1 for s in used]),
        per_code=per_code,
    )


@dataclass(frozen=True)
class LevelMetrics:
    """Agreement of the predicted rating level (nearest of the five) with the MOS level."""

    n: int
    level_accuracy: float
    within_one_accuracy: float
    low_detection_accuracy: float
    """Accuracy of "is this rated Bad–Fair" (score rounds to ≤ 3)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level_index(scores: ArrayLike) -> NDArray[np.int64]:
    """0-based level (bad … excellent) nearest to each finite score."""
    return np.array([LEVELS.index(score_to_level(s)) for s in np.asarray(scores, dtype=np.float64)])


def level_metrics(pred: ArrayLike, mos: ArrayLike) -> LevelMetrics:
    x, y, _ = _finite_pairs(pred, mos)
    if not len(x):
        return LevelMetrics(0, math.nan, math.nan, math.nan)
    pl, ml = level_index(x), level_index(y)
    low_agree = [is_low(p) == is_low(m) for p, m in zip(x, y)]
    return LevelMetrics(
        n=len(x),
        level_accuracy=float(np.mean(pl == ml)),
        within_one_accuracy=float(np.mean(np.abs(pl - ml) <= 1)),
        low_detection_accuracy=float(np.mean(low_agree)),
    )


# --------------------------------------------------------------------------------------------------
# Uncertainty
# --------------------------------------------------------------------------------------------------


def normalize_probabilities(probs: ArrayLike) -> FloatArray:
    """Rows of non-negative level weights scaled to sum to one; rows that cannot be (nan, all zero) → nan."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(LEVELS):
        raise ValueError(f"level probabilities must have shape (N, {len(LEVELS)}), got {p.shape}")
    total = p.sum(axis=1, keepdims=True)
    valid = (
        np.all(np.isfinite(p), axis=1, keepdims=True) & np.all(p >= 0, axis=1, keepdims=True) & (total > 0)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, p / total, np.nan)


def expected_score(probs: ArrayLike) -> FloatArray:
    """Σ p·(1…5) per row (the Q-Align read-out)."""
    p = normalize_probabilities(probs)
    return p @ np.arange(1.0, len(LEVELS) + 1.0)


def predictive_std(probs: ArrayLike) -> FloatArray:
    """Standard deviation of the score under each row's level distribution."""
    p = normalize_probabilities(probs)
    levels = np.arange(1.0, len(LEVELS) + 1.0)
    mean = p @ levels
    return np.sqrt(np.maximum(p @ levels**2 - mean**2, 0.0))


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Confidence of the argmax level against how often it is the MOS level, in equal-width bins."""

    bin_edges: list[float]
    confidence: list[float]
    accuracy: list[float]
    counts: list[int]
    ece: float
    """Expected calibration error: Σ (n_bin / N) · |accuracy − confidence|."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reliability_diagram(probs: ArrayLike, mos: ArrayLike, n_bins: int = 10) -> ReliabilityDiagram:
    p = normalize_probabilities(probs)
    y = np.asarray(mos, dtype=np.float64)
    keep = np.all(np.isfinite(p), axis=1) & np.isfinite(y)
    p, y = p[keep], y[keep]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if not len(p):
        empty = [math.nan] * n_bins
        return ReliabilityDiagram(edges.tolist(), empty, empty, [0] * n_bins, math.nan)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == level_index(y)).astype(np.float64)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_bins = np.bincount(which, weights=confidence, minlength=n_bins) / counts
        acc_bins = np.bincount(which, weights=correct, minlength=n_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(p) * np.abs(acc_bins[filled] - conf_bins[filled])))
    return ReliabilityDiagram(edges.tolist(), conf_bins.tolist(), acc_bins.tolist(), counts.tolist(), ece)


@dataclass(frozen=True)
class UncertaintyMetrics:
    """Does the predictive spread say which scores to trust?"""

    n: int
    mean_std: float
    srcc_std_abs_error: float
    """SRCC of the predictive std with |prediction − MOS| (higher: uncertainty flags the errors)."""
    srcc_std_rater_std: float
    """SRCC of the predictive std with the raters' std (nan when rater std is not known)."""
    reliability: ReliabilityDiagram

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uncertainty_metrics(
    probs: ArrayLike,
    pred: ArrayLike,
    mos: ArrayLike,
    rater_std: ArrayLike | None = None,
    n_bins: int = 10,
) -> UncertaintyMetrics:
    """Predictive std from level distributions, its rank correlation with the absolute error and with
    the raters' std, and the reliability diagram of the argmax level."""
    std = predictive_std(probs)
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    error = np.abs(x - y)
    keep = np.isfinite(std) & np.isfinite(error)
    raters = np.full_like(std, np.nan) if rater_std is None else np.asarray(rater_std, dtype=np.float64)
    return UncertaintyMetrics(
        n=int(keep.sum()),
        mean_std=float(std[keep].mean()) if keep.any() else math.nan,
        srcc_std_abs_error=spearman(std[keep], error[keep]),
        srcc_std_rater_std=spearman(std[keep], raters[keep]),
        reliability=reliability_diagram(probs, y, n_bins),
    )
