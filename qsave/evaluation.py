"""An evaluation: one or more named prediction sets scored against the same ratings, with deltas.

A *prediction set* is a DataFrame keyed by ``video_id`` with ``pred_<dim>`` for the dimensions it scores
and, optionally, ``pred_reasons_<dim>`` (lists of taxonomy codes) and ``prob_<dim>_<level>`` (the
five-level distribution the score was read from). The *truth* is a frame keyed by ``video_id`` with
``generator``, ``mos_<dim>`` and optionally ``std_<dim>`` and ``reasons_<dim>`` — a manifest, or the
truth columns of a predictions file (``qsave eval --predictions``). Names are free; the conventional
ones are ``candidate`` (the model under test, the *primary*), ``base`` (the untrained base model),
``champion`` (the registry's current champion) and ``baseline`` (the classical feature baseline,
:mod:`qsave.baseline`). Every set is aligned on the truth's rows: a video a set did not score is counted
and excluded, a scored video that the truth lacks is counted and reported.

Deltas are primary − other for every headline metric, with paired bootstrap CIs for ΔSRCC and ΔPLCC.
"""

from __future__ import annotations

import ast
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qsave import metrics
from qsave.manifest import _as_reason_list
from qsave.schema import DIMENSIONS, LEVELS, mos_column, reasons_column, std_column
from qsave.taxonomy import codes_for

if TYPE_CHECKING:
    import pandas as pd

PRIMARY = "candidate"


def pred_column(dim: str) -> str:
    return f"pred_{dim}"


def pred_reasons_column(dim: str) -> str:
    return f"pred_reasons_{dim}"


def prob_column(dim: str, level: str) -> str:
    return f"prob_{dim}_{level}"


def prob_columns(dim: str) -> tuple[str, ...]:
    return tuple(prob_column(dim, level) for level in LEVELS)


TRUTH_COLUMNS = (
    "generator",
    *(mos_column(d) for d in DIMENSIONS),
    *(std_column(d) for d in DIMENSIONS),
    *(reasons_column(d) for d in DIMENSIONS),
)
"""Columns the truth may carry (``mos_<dim>`` is what makes a dimension evaluable)."""

HEADLINE_METRICS = (
    "srcc",
    "krcc",
    "plcc",
    "plcc_fit",
    "rmse_fit",
    "model_srcc",
    "model_plcc",
    "pairwise_acc",
    "level_acc",
    "within_one_acc",
    "low_acc",
    "reason_f1_micro",
    "reason_f1_macro",
    "ece",
)
"""Metrics compared across prediction sets (delta = primary − other; lower is better for rmse and ece)."""


class EvaluationError(ValueError):
    """Predictions or ratings that cannot be evaluated (missing columns, duplicate ids)."""


@dataclass(frozen=True)
class EvalConfig:
    n_bootstrap: int = 1000
    """Bootstrap resamples for every confidence interval."""
    ci_level: float = 0.95
    seed: int = 0
    reliability_bins: int = 10
    primary: str = PRIMARY
    """The set the others are compared with; the first set given when no set has this name."""


@dataclass(frozen=True)
class DimensionResult:
    instance: metrics.InstanceMetrics
    instance_ci: dict[str, metrics.ConfidenceInterval]
    model_level: metrics.ModelLevelMetrics
    levels: metrics.LevelMetrics
    reasons: metrics.ReasonScores | None
    uncertainty: metrics.UncertaintyMetrics | None

    def flat(self, dim: str) -> dict[str, float]:
        """Numbers keyed ``<metric>_<dim>`` (the ``qsave eval --json`` keys)."""
        inst, model, lv = self.instance, self.model_level, self.levels
        values: dict[str, float] = {
            "n": inst.n,
            "n_excluded": inst.n_excluded,
            "srcc": inst.srcc,
            "krcc": inst.krcc,
            "plcc": inst.plcc,
            "plcc_fit": inst.plcc_fit,
            "rmse": inst.rmse,
            "rmse_fit": inst.rmse_fit,
            "srcc_ci_low": self.instance_ci["srcc"].low,
            "srcc_ci_high": self.instance_ci["srcc"].high,
            "plcc_ci_low": self.instance_ci["plcc"].low,
            "plcc_ci_high": self.instance_ci["plcc"].high,
            "model_srcc": model.srcc,
            "model_plcc": model.plcc,
            "model_srcc_ci_low": model.srcc_ci.low,
            "model_srcc_ci_high": model.srcc_ci.high,
            "model_plcc_ci_low": model.plcc_ci.low,
            "model_plcc_ci_high": model.plcc_ci.high,
            "pairwise_acc": model.pairwise_accuracy,
            "level_acc": lv.level_accuracy,
            "within_one_acc": lv.within_one_accuracy,
            "low_acc": lv.low_detection_accuracy,
        }
        if self.reasons is not None:
            r = self.reasons
            values |= {
                "reason_precision_micro": r.micro_precision,
                "reason_recall_micro": r.micro_recall,
                "reason_f1_micro": r.micro_f1,
                "reason_precision_macro": r.macro_precision,
                "reason_recall_macro": r.macro_recall,
                "reason_f1_macro": r.macro_f1,
            }
        if self.uncertainty is not None:
            u = self.uncertainty
            values |= {
                "pred_std_mean": u.mean_std,
                "std_srcc_abs_error": u.srcc_std_abs_error,
                "std_srcc_rater_std": u.srcc_std_rater_std,
                "ece": u.reliability.ece,
            }
        return {f"{key}_{dim}": float(value) for key, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance.to_dict(),
            "instance_ci": {k: v.to_dict() for k, v in self.instance_ci.items()},
            "model_level": self.model_level.to_dict(),
            "levels": self.levels.to_dict(),
            "reasons": None if self.reasons is None else self.reasons.to_dict(),
            "uncertainty": None if self.uncertainty is None else self.uncertainty.to_dict(),
        }


@dataclass(frozen=True)
class ModelResult:
    name: str
    n_scored: int
    """Truth rows this set has a prediction row for."""
    missing_ids: list[str]
    """Truth rows this set did not score (excluded from its metrics)."""
    unmatched_ids: list[str]
    """Rows this set scored that the truth lacks (not evaluated)."""
    dimensions: dict[str, DimensionResult]

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for dim, result in self.dimensions.items():
            out |= result.flat(dim)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_scored": self.n_scored,
            "missing_ids": self.missing_ids,
            "unmatched_ids": self.unmatched_ids,
            "dimensions": {dim: r.to_dict() for dim, r in self.dimensions.items()},
        }


@dataclass(frozen=True)
class Delta:
    """Primary − other, on the videos each scored, with paired bootstrap CIs of ΔSRCC and ΔPLCC."""

    other: str
    values: dict[str, float]
    """``<metric>_<dim>`` → primary − other, for :data:`HEADLINE_METRICS`."""
    srcc_ci: dict[str, metrics.ConfidenceInterval]
    plcc_ci: dict[str, metrics.ConfidenceInterval]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    primary: str
    dimensions: tuple[str, ...]
    models: dict[str, ModelResult]
    deltas: dict[str, Delta]
    config: EvalConfig
    truth: pd.DataFrame
    """Aligned truth rows (``video_id``, ``generator``, ``mos_<dim>`` …), one per evaluated video."""
    predictions: dict[str, pd.DataFrame]
    """Each set reindexed on ``truth``'s rows (nan where a set did not score a video)."""
    notes: list[str] = field(default_factory=list)
    """Warnings raised while evaluating (fit fallbacks, undefined correlations, unmatched rows)."""

    def flat(self, name: str | None = None) -> dict[str, float]:
        """One set's numbers keyed ``<metric>_<dim>`` (the primary's by default)."""
        return self.models[name or self.primary].flat()

    def summary(self) -> dict[str, float | None]:
        """The primary's numbers plus ``delta_<other>_<metric>_<dim>``; nan becomes None (valid JSON)."""
        out: dict[str, float] = dict(self.flat())
        for other, delta in self.deltas.items():
            out |= {f"delta_{other}_{key}": value for key, value in delta.values.items()}
        return {key: (None if math.isnan(v) else v) for key, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "dimensions": list(self.dimensions),
            "n_videos": len(self.truth),
            "config": asdict(self.config),
            "summary": self.summary(),
            "models": {name: result.to_dict() for name, result in self.models.items()},
            "deltas": {name: delta.to_dict() for name, delta in self.deltas.items()},
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------------
# Reading and aligning
# --------------------------------------------------------------------------------------------------


def _reason_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(("reasons_", "pred_reasons_"))]


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a predictions file (``.csv`` or ``.parquet``); reason columns become lists of codes."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"predictions file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix == ".csv":
        df = pd.read_csv(path, dtype={"video_id": str, "generator": str}, keep_default_na=True)
    else:
        raise EvaluationError(
            f"predictions file {path}: unsupported format {suffix!r} (use .csv or .parquet)"
        )
    if "video_id" not in df.columns:
        raise EvaluationError(f"predictions file {path} has no video_id column")
    first_row = 2 if suffix == ".csv" else 0
    for col in _reason_columns(df):
        df[col] = [_parse_reasons(v, f"{path} row {i + first_row}, {col}") for i, v in enumerate(df[col])]
    return df


def _parse_reasons(value: Any, where: str) -> list[str]:
    """Reason codes from a list, a JSON or Python list literal, or a comma-separated string."""
    try:
        return _as_reason_list(value)
    except ValueError:
        pass
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise EvaluationError(f"{where}: cannot read reason codes from {value!r} ({exc})") from exc
    if not isinstance(parsed, list | tuple):
        raise EvaluationError(f"{where}: reason codes must be a list, got {value!r}")
    return [str(code) for code in parsed]


def _indexed(df: pd.DataFrame, what: str) -> pd.DataFrame:
    if "video_id" not in df.columns:
        raise EvaluationError(f"{what} has no video_id column")
    ids = df["video_id"].astype(str)
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        shown = ", ".join(duplicated[:5]) + (" …" if len(duplicated) > 5 else "")
        raise EvaluationError(
            f"{what} has {len(duplicated)} duplicated video_id(s): {shown}; keep one row each"
        )
    return df.assign(video_id=ids).set_index("video_id", drop=False)


def _truth_frame(truth: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    frame = _indexed(truth, "the truth")
    out = pd.DataFrame(index=frame.index)
    out["video_id"] = frame["video_id"]
    out["generator"] = frame["generator"].astype(str) if "generator" in frame.columns else ""
    for dim in DIMENSIONS:
        for col in (mos_column(dim), std_column(dim)):
            if col in frame.columns:
                out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        if reasons_column(dim) in frame.columns:
            out[reasons_column(dim)] = [_as_reason_list(v) for v in frame[reasons_column(dim)]]
    return out


def _prediction_frame(pred: pd.DataFrame, index: pd.Index, what: str) -> pd.DataFrame:
    import pandas as pd

    frame = _indexed(pred, what)
    aligned = frame[[c for c in frame.columns if c.startswith(("pred_", "prob_"))]].reindex(index)
    for col in aligned.columns:
        if col.startswith("pred_reasons_"):
            aligned[col] = [_as_reason_list(v) for v in aligned[col]]
        else:
            aligned[col] = pd.to_numeric(aligned[col], errors="coerce").astype("float64")
    aligned.insert(0, "scored", index.isin(frame.index))
    return aligned


def fit_logistics(train: pd.DataFrame, truth: pd.DataFrame | None = None) -> dict[str, metrics.LogisticFit]:
    """Per-dimension logistic fits on train-split predictions, to apply to held-out rows (so PLCC and
    RMSE after the fit are not fitted on the rows they measure)."""
    ratings = _truth_frame(train if truth is None else truth)
    aligned = _prediction_frame(train, ratings.index, "train predictions")
    fits = {}
    for dim in DIMENSIONS:
        if pred_column(dim) in aligned.columns and mos_column(dim) in ratings.columns:
            fits[dim] = metrics.fit_logistic(aligned[pred_column(dim)], ratings[mos_column(dim)])
    return fits


# --------------------------------------------------------------------------------------------------
# Evaluating
# --------------------------------------------------------------------------------------------------


def _evaluate_dimension(
    dim: str,
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    config: EvalConfig,
    fit: metrics.LogisticFit | None,
) -> DimensionResult:
    nan = np.full(len(truth), np.nan)
    x = pred[pred_column(dim)].to_numpy() if pred_column(dim) in pred.columns else nan
    y = truth[mos_column(dim)].to_numpy()
    boot: dict[str, Any] = {"n_resamples": config.n_bootstrap, "level": config.ci_level, "seed": config.seed}
    reasons = None
    if reasons_column(dim) in truth.columns and pred_reasons_column(dim) in pred.columns:
        scored = pred["scored"].to_numpy()
        reasons = metrics.reason_scores(
            list(pred.loc[scored, pred_reasons_column(dim)]),
            list(truth.loc[scored, reasons_column(dim)]),
            codes=codes_for(dim),
        )
    uncertainty = None
    if all(c in pred.columns for c in prob_columns(dim)):
        rater_std = truth[std_column(dim)].to_numpy() if std_column(dim) in truth.columns else None
        probs = pred[list(prob_columns(dim))].to_numpy()
        uncertainty = metrics.uncertainty_metrics(probs, x, y, rater_std, config.reliability_bins)
    return DimensionResult(
        instance=metrics.instance_metrics(x, y, fit=fit),
        instance_ci=metrics.bootstrap_correlation_ci(x, y, **boot),
        model_level=metrics.model_level_metrics(x, y, truth["generator"].tolist(), **boot),
        levels=metrics.level_metrics(x, y),
        reasons=reasons,
        uncertainty=uncertainty,
    )


def _delta(
    primary: str,
    other: str,
    models: dict[str, ModelResult],
    preds: dict[str, pd.DataFrame],
    truth: pd.DataFrame,
    config: EvalConfig,
) -> Delta:
    dims = tuple(models[primary].dimensions)
    mine, theirs = models[primary].flat(), models[other].flat()
    values = {}
    for dim in dims:
        for metric in HEADLINE_METRICS:
            key = f"{metric}_{dim}"
            if key in mine and key in theirs:
                values[key] = mine[key] - theirs[key]
    srcc_ci, plcc_ci = {}, {}
    for dim in dims:
        column = pred_column(dim)
        if column not in preds[primary].columns or column not in preds[other].columns:
            continue
        cis = metrics.bootstrap_delta_ci(
            preds[primary][column].to_numpy(),
            preds[other][column].to_numpy(),
            truth[mos_column(dim)].to_numpy(),
            n_resamples=config.n_bootstrap,
            level=config.ci_level,
            seed=config.seed,
        )
        srcc_ci[dim], plcc_ci[dim] = cis["srcc"], cis["plcc"]
    return Delta(other=other, values=values, srcc_ci=srcc_ci, plcc_ci=plcc_ci)


def evaluate(
    predictions: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame | None = None,
    config: EvalConfig | None = None,
    fits: Mapping[str, Mapping[str, metrics.LogisticFit]] | None = None,
) -> Evaluation:
    """Score every named prediction set against the same ratings and compare them with the primary.

    ``truth`` defaults to the truth columns of the primary set's frame (a predictions file carries
    both). ``fits`` optionally gives, per set and dimension, a logistic fitted on train predictions
    (:func:`fit_logistics`) to use instead of fitting on the evaluated rows.
    """
    config = config or EvalConfig()
    if not predictions:
        raise EvaluationError("no prediction sets to evaluate")
    primary = config.primary if config.primary in predictions else next(iter(predictions))
    ratings = _truth_frame(predictions[primary] if truth is None else truth)
    dims = tuple(d for d in DIMENSIONS if mos_column(d) in ratings.columns)
    if not dims:
        raise EvaluationError(
            f"the ratings have none of the columns {', '.join(mos_column(d) for d in DIMENSIONS)}"
        )
    fits = fits or {}
    notes: list[str] = []
    aligned: dict[str, pd.DataFrame] = {}
    results: dict[str, ModelResult] = {}
    for name, frame in predictions.items():
        pred = _prediction_frame(frame, ratings.index, f"prediction set {name!r}")
        if not any(pred_column(d) in pred.columns for d in dims):
            raise EvaluationError(
                f"prediction set {name!r} has none of the columns {', '.join(pred_column(d) for d in dims)}"
            )
        aligned[name] = pred
        ids = frame["video_id"].astype(str)
        unmatched = sorted(set(ids) - set(ratings.index))
        missing = ratings.index[~pred["scored"].to_numpy()].tolist()
        if unmatched:
            notes.append(
                f"{name}: {len(unmatched)} scored video(s) have no ratings: {', '.join(unmatched[:5])}"
            )
        if missing:
            notes.append(f"{name}: {len(missing)} rated video(s) were not scored: {', '.join(missing[:5])}")
        dimensions = {}
        for dim in dims:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", metrics.MetricWarning)
                dimensions[dim] = _evaluate_dimension(dim, pred, ratings, config, fits.get(name, {}).get(dim))
            notes.extend(f"{name}/{dim}: {w.message}" for w in caught)
        results[name] = ModelResult(
            name=name,
            n_scored=int(pred["scored"].sum()),
            missing_ids=missing,
            unmatched_ids=unmatched,
            dimensions=dimensions,
        )
    deltas = {
        other: _delta(primary, other, results, aligned, ratings, config)
        for other in predictions
        if other != primary
    }
    for note in notes:
        warnings.warn(note, metrics.MetricWarning, stacklevel=2)
    return Evaluation(
        primary=primary,
        dimensions=dims,
        models=results,
        deltas=deltas,
        config=config,
        truth=ratings.reset_index(drop=True),
        predictions={name: frame.reset_index(drop=True) for name, frame in aligned.items()},
        notes=notes,
    )
