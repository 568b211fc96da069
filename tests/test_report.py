"""The report renders: valid non-empty PNGs, strict JSON with every number, HTML that embeds the plots."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from eval_fixtures import make_predictions
from PIL import Image

from qsave.evaluation import EvalConfig, evaluate
from qsave.metrics import MetricWarning
from qsave.report import REPORT_HTML, REPORT_JSON, render_figures, report_html, write_report

FAST = EvalConfig(n_bootstrap=100)


@pytest.fixture(scope="module")
def evaluation():
    candidate = make_predictions(n=80, noise=0.3)
    base = make_predictions(n=80, noise=1.2, seed=1, probs=False, reasons=False)
    return evaluate({"candidate": candidate, "base": base}, config=FAST)


def _assert_png(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        extrema = image.convert("L").getextrema()
    assert width > 200 and height > 200
    assert extrema[0] < extrema[1]  # not a blank canvas
    return width, height


def test_write_report_files(evaluation, tmp_path) -> None:
    paths = write_report(evaluation, tmp_path / "report")
    expected_pngs = {
        "scatter_candidate.png",
        "scatter_base.png",
        "correlations.png",
        "generators.png",
        "reliability.png",
    }
    assert expected_pngs <= set(paths)
    for name in expected_pngs:
        _assert_png(paths[name].read_bytes())
    data = json.loads(paths[REPORT_JSON].read_text(), parse_constant=pytest.fail)  # no NaN literals
    assert data["primary"] == "candidate"
    assert data["summary"]["srcc_vq"] == pytest.approx(evaluation.flat()["srcc_vq"])
    assert "base" in data["deltas"]
    rows = list(csv.DictReader(paths["reason_f1.csv"].open()))
    assert {row["code"] for row in rows} >= {"micro", "macro", "blur", "flicker", "missing_object"}
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]  # no temporaries
    html = paths[REPORT_HTML].read_text()
    for name in expected_pngs:
        assert base64.b64encode(paths[name].read_bytes()).decode("ascii") in html


def test_deck_html_embeds_every_figure_and_table(evaluation) -> None:
    figures = render_figures(evaluation)
    html = report_html(evaluation, figures)
    assert html.count('src="data:image/png;base64,') == len(figures)
    for name, data in figures.items():
        assert name in html
        assert base64.b64encode(data).decode("ascii") in html
    for heading in ("Metrics", "Deltas", "Uncertainty", "Reason F1", "Plots"):
        assert f"<h2>{heading}" in html


def test_report_without_optional_columns_or_generators(tmp_path) -> None:
    frame = make_predictions(n=30, probs=False, reasons=False).assign(generator="only")
    with pytest.warns(MetricWarning, match="only 1 generator"):
        evaluation = evaluate({"model": frame}, config=FAST)
    paths = write_report(evaluation, tmp_path)
    assert "reliability.png" not in paths
    _assert_png(paths["generators.png"].read_bytes())
    assert "No reason columns" in paths[REPORT_HTML].read_text()
