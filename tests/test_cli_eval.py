"""``qsave eval --predictions``: report files, the --json keys, comparisons, clear errors."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import make_predictions

from qsave.cli import main
from qsave.schema import DIMENSIONS

METRICS = ("srcc", "krcc", "plcc", "plcc_fit", "rmse", "rmse_fit", "model_srcc", "model_plcc")


def test_eval_json_keys_and_report(tmp_path, capsys) -> None:
    predictions = tmp_path / "candidate.csv"
    make_predictions(n=60).to_csv(predictions, index=False)
    base = tmp_path / "base.parquet"
    make_predictions(n=60, noise=1.2, seed=1, probs=False).to_parquet(base)
    train = tmp_path / "train.csv"
    make_predictions(n=100, seed=2).to_csv(train, index=False)
    out = tmp_path / "report"
    code = main([
        "eval", "--predictions", str(predictions), "--compare", f"base={base}",
        "--train-predictions", str(train), "--out", str(out), "--json", "--bootstrap", "100",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    numbers = json.loads(captured.out, parse_constant=pytest.fail)
    for dim in DIMENSIONS:
        for metric in METRICS:
            assert isinstance(numbers[f"{metric}_{dim}"], float), f"{metric}_{dim}"
        assert -1.0 <= numbers[f"model_srcc_{dim}"] <= 1.0
        assert f"delta_base_srcc_{dim}" in numbers
    assert numbers["srcc_vq"] > 0.8
    assert (out / "report.html").is_file() and (out / "report.json").is_file()


def test_eval_text_summary(tmp_path, capsys) -> None:
    predictions = tmp_path / "p.parquet"
    make_predictions(n=40, probs=False, reasons=False).to_parquet(predictions)
    assert (
        main(["eval", "--predictions", str(predictions), "--out", str(tmp_path / "r"), "--bootstrap", "50"])
        == 0
    )
    out = capsys.readouterr().out
    assert "candidate (40 of 40 videos scored)" in out
    assert "report:" in out


def test_eval_reports_bad_input_without_a_traceback(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["eval", "--predictions", str(missing), "--out", str(tmp_path / "r")]) == 2
    assert "nope.csv does not exist" in capsys.readouterr().err
    predictions = tmp_path / "p.csv"
    make_predictions(n=10).to_csv(predictions, index=False)
    args = ["eval", "--predictions", str(predictions), "--compare", "oops", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "NAME=FILE" in capsys.readouterr().err
