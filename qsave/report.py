"""Evaluation reports people read: ``report.json`` (every number), PNG plots, a reason-F1 table and
``report.html`` embedding all of them — the same HTML the evaluate task's Flyte Deck shows.

Plots (matplotlib, Agg canvas, no pyplot state):

* ``scatter_<set>.png`` — predicted score vs MOS per dimension with the fitted logistic curve;
* ``correlations.png`` — SRCC and PLCC per dimension, one bar per prediction set, bootstrap CIs;
* ``generators.png`` — mean MOS per generator (sorted) beside each set's mean prediction;
* ``reliability.png`` — argmax-level confidence vs accuracy per dimension, when level distributions exist.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qsave.evaluation import HEADLINE_METRICS, Evaluation, pred_column
from qsave.metrics import ConfidenceInterval
from qsave.schema import DIMENSION_NAMES, mos_column
from qsave.storage import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REASON_TABLE = "reason_f1.csv"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def jsonable(value: Any) -> Any:
    """A structure ``json.dumps(allow_nan=False)`` accepts: nan/inf → None, numpy scalars → Python."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_json(evaluation: Evaluation) -> str:
    return json.dumps(jsonable(evaluation.to_dict()), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _figure(rows: int, cols: int, width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots(rows, cols, squeeze=False)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 2)
    return math.ceil(n / cols), cols


def scatter_figure(evaluation: Evaluation, name: str) -> bytes:
    """Predicted vs MOS per dimension for one set, with its fitted logistic."""
    dims = evaluation.dimensions
    rows, cols = _grid(len(dims))
    figure = _figure(rows, cols, 4.2 * cols, 3.8 * rows)
    model = evaluation.models[name]
    pred = evaluation.predictions[name]
    for ax, dim in zip(figure.axes, dims):
        result = model.dimensions[dim].instance
        y = evaluation.truth[mos_column(dim)].to_numpy()
        x = pred[pred_column(dim)].to_numpy() if pred_column(dim) in pred.columns else np.full_like(y, np.nan)
        keep = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[keep], y[keep], s=12, alpha=0.6, color="tab:blue", label="videos")
        if result.fit.ok and keep.any():
            grid = np.linspace(x[keep].min(), x[keep].max(), 200)
            ax.plot(grid, result.fit.apply(grid), color="tab:red", label="logistic fit")
        ax.set_title(
            f"{DIMENSION_NAMES[dim]} — SRCC {_fmt(result.srcc)}, PLCC(fit) {_fmt(result.plcc_fit)}",
            fontsize=9,
        )
        ax.set_xlabel(f"predicted ({name})")
        ax.set_ylabel("MOS")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return _png(figure)


def correlation_figure(evaluation: Evaluation) -> bytes:
    """SRCC and PLCC per dimension, one bar per set, with bootstrap CIs as error bars."""
    figure = _figure(1, 2, 11, 3.8)
    dims, names = evaluation.dimensions, list(evaluation.models)
    width = 0.8 / len(names)
    positions = np.arange(len(dims))
    for ax, stat in zip(figure.axes, ("srcc", "plcc")):
        for i, name in enumerate(names):
            results = [evaluation.models[name].dimensions[d] for d in dims]
            values = np.array([getattr(r.instance, stat) for r in results])
            low = np.array([r.instance_ci[stat].low for r in results])
            high = np.array([r.instance_ci[stat].high for r in results])
            errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0.0)
            ax.bar(positions + (i - (len(names) - 1) / 2) * width, np.nan_to_num(values), width,
                   yerr=errors, capsize=3, label=name)  # fmt: skip
        ax.set_xticks(positions, [d.upper() for d in dims])
        ax.set_ylabel(stat.upper())
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"instance-level {stat.upper()} ({evaluation.config.ci_level:.0%} CI)", fontsize=10)
    figure.axes[0].legend(fontsize=8)
    return _png(figure)


def generator_figure(evaluation: Evaluation) -> bytes:
    """Generators ranked by mean MOS, with each set's mean prediction beside it."""
    dims = evaluation.dimensions
    rows, cols = _grid(len(dims))
    figure = _figure(rows, cols, 5.2 * cols, 3.8 * rows)
    markers = "os^Dvx*"
    for ax, dim in zip(figure.axes, dims):
        primary = evaluation.models[evaluation.primary].dimensions[dim].model_level
        order = np.argsort(primary.mos_mean)
        names = [primary.generators[i] for i in order]
        positions = np.arange(len(names))
        ax.plot(positions, np.array(primary.mos_mean)[order], "k-o", label="mean MOS")
        for i, (name, model) in enumerate(evaluation.models.items()):
            level = model.dimensions[dim].model_level
            means = dict(zip(level.generators, level.pred_mean))
            values = [means.get(g, math.nan) for g in names]
            label = f"{name} (SRCC {_fmt(level.srcc)})"
            ax.plot(positions, values, linestyle="--", marker=markers[i % len(markers)], label=label)
        ax.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("mean score")
        ax.set_title(f"{DIMENSION_NAMES[dim]}: generators by mean MOS", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(figure)


def reliability_figure(evaluation: Evaluation) -> bytes | None:
    """Reliability diagram per dimension for every set with level distributions (None when none has)."""
    models = evaluation.models.values()
    dims = [d for d in evaluation.dimensions if any(m.dimensions[d].uncertainty for m in models)]
    if not dims:
        return None
    rows, cols = _grid(len(dims))
    figure = _figure(rows, cols, 4.2 * cols, 3.8 * rows)
    for ax, dim in zip(figure.axes, dims):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
        for name, model in evaluation.models.items():
            uncertainty = model.dimensions[dim].uncertainty
            if uncertainty is None:
                continue
            diagram = uncertainty.reliability
            conf, acc = np.array(diagram.confidence), np.array(diagram.accuracy)
            filled = np.array(diagram.counts) > 0
            ax.plot(conf[filled], acc[filled], marker="o", label=f"{name} (ECE {_fmt(diagram.ece)})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence of the predicted level")
        ax.set_ylabel("level accuracy")
        ax.set_title(f"{DIMENSION_NAMES[dim]}: reliability", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return _png(figure)


def render_figures(evaluation: Evaluation) -> dict[str, bytes]:
    """Every plot as PNG bytes, keyed by file name."""
    figures = {f"scatter_{name}.png": scatter_figure(evaluation, name) for name in evaluation.models}
    figures["correlations.png"] = correlation_figure(evaluation)
    figures["generators.png"] = generator_figure(evaluation)
    reliability = reliability_figure(evaluation)
    if reliability is not None:
        figures["reliability.png"] = reliability
    return figures


# --------------------------------------------------------------------------------------------------
# Tables and HTML
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def reason_table(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per set, dimension and code (plus ``micro`` and ``macro`` rows): precision, recall, F1."""
    rows: list[dict[str, Any]] = []
    for name, model in evaluation.models.items():
        for dim, result in model.dimensions.items():
            scores = result.reasons
            if scores is None:
                continue
            for average in ("micro", "macro"):
                rows.append({
                    "set": name, "dimension": dim, "code": average,
                    "precision": getattr(scores, f"{average}_precision"),
                    "recall": getattr(scores, f"{average}_recall"),
                    "f1": getattr(scores, f"{average}_f1"),
                    "support": None, "predicted": None,
                })  # fmt: skip
            for code, s in scores.per_code.items():
                rows.append({
                    "set": name, "dimension": dim, "code": code, "precision": s.precision,
                    "recall": s.recall, "f1": s.f1, "support": s.support, "predicted": s.predicted,
                })  # fmt: skip
    return rows


REASON_TABLE_COLUMNS = ("set", "dimension", "code", "precision", "recall", "f1", "support", "predicted")


def reason_table_csv(rows: list[dict[str, Any]]) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REASON_TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if _fmt(value) == "–" else value for key, value in row.items()})
    return buffer.getvalue()


def _interval(ci: ConfidenceInterval | None) -> str | None:
    return None if ci is None else f"{_fmt(ci.low)} – {_fmt(ci.high)}"


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cells = ("".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(evaluation: Evaluation) -> str:
    header = [
        *("set", "dimension", "n", "SRCC", "SRCC CI", "KRCC", "PLCC", "PLCC fit", "RMSE fit"),
        *("model SRCC", "model SRCC CI", "pairwise acc", "level acc", "±1 level acc", "low acc"),
    ]
    rows = []
    for name, model in evaluation.models.items():
        for dim, r in model.dimensions.items():
            inst, ml, lv = r.instance, r.model_level, r.levels
            rows.append([
                name, dim, inst.n, inst.srcc, _interval(r.instance_ci["srcc"]),
                inst.krcc, inst.plcc, inst.plcc_fit, inst.rmse_fit, ml.srcc, _interval(ml.srcc_ci),
                ml.pairwise_accuracy, lv.level_accuracy, lv.within_one_accuracy, lv.low_detection_accuracy,
            ])  # fmt: skip
    return _html_table(header, rows)


def _delta_table(evaluation: Evaluation) -> str:
    if not evaluation.deltas:
        return "<p>No other prediction set to compare with.</p>"
    header = ["vs", "dimension", *HEADLINE_METRICS, "ΔSRCC CI", "ΔPLCC CI"]
    rows = [
        [
            other,
            dim,
            *(delta.values.get(f"{metric}_{dim}") for metric in HEADLINE_METRICS),
            _interval(delta.srcc_ci.get(dim)),
            _interval(delta.plcc_ci.get(dim)),
        ]
        for other, delta in evaluation.deltas.items()
        for dim in evaluation.dimensions
    ]
    return _html_table(header, rows)


def _uncertainty_table(evaluation: Evaluation) -> str:
    rows = [
        [name, dim, u.n, u.mean_std, u.srcc_std_abs_error, u.srcc_std_rater_std, u.reliability.ece]
        for name, model in evaluation.models.items()
        for dim, r in model.dimensions.items()
        if (u := r.uncertainty) is not None
    ]
    if not rows:
        columns = "<code>prob_&lt;dim&gt;_&lt;level&gt;</code>"
        return f"<p>No prediction set has level distributions ({columns}).</p>"
    header = ["set", "dimension", "n", "mean pred. std", "SRCC(std, |error|)", "SRCC(std, rater std)", "ECE"]
    return _html_table(header, rows)


def _reason_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        columns = "<code>reasons_&lt;dim&gt;</code> and <code>pred_reasons_&lt;dim&gt;</code>"
        return f"<p>No reason columns ({columns}).</p>"
    return _html_table(list(REASON_TABLE_COLUMNS), [[row[c] for c in REASON_TABLE_COLUMNS] for row in rows])


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2), td:nth-child(3) { text-align: left; }
img { max-width: 100%; margin: 0.5em 0; }
"""


def report_html(evaluation: Evaluation, figures: Mapping[str, bytes] | None = None) -> str:
    """The report as one self-contained HTML page (PNGs embedded as base64) — also the Deck's content."""
    figures = render_figures(evaluation) if figures is None else figures
    images = "".join(
        f'<h3>{html.escape(name)}</h3><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
        for name, data in figures.items()
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in evaluation.notes) or "<li>none</li>"
    sets = ", ".join(f"{html.escape(n)} ({m.n_scored} scored)" for n, m in evaluation.models.items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>qsave evaluation</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>qsave evaluation</h1><p>{len(evaluation.truth)} rated videos; primary set "
        f"<b>{html.escape(evaluation.primary)}</b>; sets: {sets}. Bootstrap: {evaluation.config.n_bootstrap} "
        f"resamples, seed {evaluation.config.seed}.</p>"
        f"<h2>Metrics</h2>{_metrics_table(evaluation)}"
        f"<h2>Deltas ({html.escape(evaluation.primary)} − other)</h2>{_delta_table(evaluation)}"
        f"<h2>Uncertainty</h2>{_uncertainty_table(evaluation)}"
        f"<h2>Reason F1</h2>{_reason_html(reason_table(evaluation))}"
        f"<h2>Plots</h2>{images}"
        f"<h2>Notes</h2><ul>{notes}</ul></body></html>\n"
    )


def write_report(evaluation: Evaluation, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json``, the PNGs, ``reason_f1.csv`` and ``report.html`` into ``out_dir`` (each file
    atomically); returns file name → path."""
    out = Path(out_dir)
    figures = render_figures(evaluation)
    contents: dict[str, bytes] = {
        REPORT_JSON: report_json(evaluation).encode("utf-8"),
        REASON_TABLE: reason_table_csv(reason_table(evaluation)).encode("utf-8"),
        **figures,
        REPORT_HTML: report_html(evaluation, figures).encode("utf-8"),
    }
    return {name: write_bytes_atomic(out / name, data) for name, data in contents.items()}
