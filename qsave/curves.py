"""Training curves: a stage's ``metrics.jsonl`` (see :func:`qsave.training.metrics_callback`) as plots.

:func:`training_curves_html` is what a reviewer sees in a training task's Deck: one panel per logged
quantity against the optimizer step (SFT: ``loss``, ``ce``, ``dist``, ``grad_norm``, ``learning_rate``;
GRPO: ``reward``, the per-function reward means, ``kl``, completion lengths …), and the last value of each.
End-of-run summaries (``train_runtime``, ``train_loss`` …) are listed, not plotted.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from qsave.report import _figure, _grid, _png
from qsave.training import read_metrics

AXES: Final = ("step", "epoch")
"""Keys that say where an event is, not what was measured."""

SUMMARY_PREFIX: Final = "train_"
"""The Trainer's end-of-run summary keys (``train_runtime``, ``train_loss`` …)."""

FIRST: Final = ("loss", "ce", "dist", "reward", "kl")
"""Plotted first when present; every other series follows in name order."""

MAX_PANELS: Final = 12


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def curve_series(events: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """``name → (steps, values)`` for every numeric quantity logged at two or more steps (``/std``
    companions of a mean are left out: the mean carries the curve)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for event in events:
        step = event.get("step")
        if step is None or not _is_number(step):
            continue
        for name, value in event.items():
            if name in AXES or name.startswith(SUMMARY_PREFIX) or name.endswith("/std"):
                continue
            if _is_number(value):
                steps, values = series.setdefault(name, ([], []))
                steps.append(float(step))
                values.append(float(value))
    plotted = {name: points for name, points in series.items() if len(points[0]) >= 2}
    order = [n for n in FIRST if n in plotted] + sorted(n for n in plotted if n not in FIRST)
    return {name: plotted[name] for name in order[:MAX_PANELS]}


def training_curves_figure(series: Mapping[str, tuple[list[float], list[float]]], title: str) -> bytes:
    """One panel per series (value against step), as a PNG."""
    rows, cols = _grid(len(series))
    figure = _figure(rows, cols, 4.2 * cols, 2.8 * rows)
    for ax, (name, (steps, values)) in zip(figure.axes, series.items()):
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in figure.axes[len(series) :]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def training_curves_html(metrics_jsonl: str | os.PathLike[str], title: str = "training") -> str:
    """The stage's curves (embedded PNG) and a table of each quantity's last value, as an HTML fragment.

    A log with fewer than two steps says so instead of plotting; a missing file raises
    ``FileNotFoundError`` naming it.
    """
    events = read_metrics(metrics_jsonl)
    series = curve_series(events)
    last: dict[str, Any] = {}
    for event in events:
        last.update({k: v for k, v in event.items() if _is_number(v)})
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{value:.6g}</td></tr>" for name, value in sorted(last.items())
    )
    heading = (
        f"<h2>{html.escape(title)}</h2><p>{len(events)} log events from {html.escape(str(metrics_jsonl))}</p>"
    )
    if series:
        png = base64.b64encode(training_curves_figure(series, title)).decode("ascii")
        plot = f'<img alt="{html.escape(title)} curves" src="data:image/png;base64,{png}">'
    else:
        plot = "<p>fewer than two logged steps: nothing to plot</p>"
    return f"{heading}{plot}<h3>last values</h3><table><tr><th>key</th><th>value</th></tr>{rows}</table>"
