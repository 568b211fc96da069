"""Model outputs as prediction frames, and `qsave eval --model` on the real AIGVE toy set."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import SHARED_DATA, training_corpus

from qsave.cli import main
from qsave.predictions import evaluate_models, predict_clips, record_to_row, srcc_by_dimension
from qsave.preprocess import preprocess_shard
from qsave.slowfast import LOCAL_SAMPLER
from qsave.video import DecodeLimits

LAVIE = sorted((SHARED_DATA / "vbench-lavie-style" / "videos").glob("*.mp4"))


def test_error_records_keep_their_row_with_empty_predictions():
    row = record_to_row({"video_id": "x", "error": "undecodable"})
    assert row["error"] == "undecodable" and math.isnan(row["pred_vq"]) and math.isnan(row["prob_ta_bad"])


def test_predict_clips_scores_preprocessed_clips_and_reports_the_rest(tmp_path, capsys):
    manifest = pd.DataFrame(
        {
            "video_id": ["a", "b", "gone"],
            "video_path": [str(LAVIE[0]), str(LAVIE[1]), str(tmp_path / "missing.mp4")],
            "prompt": ["a beach", "a beach at dusk", "a cat"],
        }
    )
    table = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), tmp_path / "cache").table
    capsys.readouterr()
    frame = predict_clips("tiny", table, manifest, progress=True, desc="predict candidate")
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert bar.startswith("predict candidate: 100%") and "| 2/2 [" in bar  # names the model, counts videos
    assert frame["video_id"].tolist() == ["a", "b", "gone"]
    assert frame["error"].tolist() == ["", "", "video_missing"]
    scored = frame.iloc[:2]
    for dim in ("vq", "mq", "ta", "overall"):
        assert scored[f"pred_{dim}"].between(1, 5).all()
        probs = scored[[f"prob_{dim}_{lv}" for lv in ("bad", "poor", "fair", "good", "excellent")]]
        assert probs.sum(axis=1).round(5).eq(1).all()


@pytest.mark.parametrize("alongside", [True, False])
def test_a_baseline_that_cannot_be_fitted_stops_the_evaluation_alongside_or_after(tmp_path, alongside):
    manifest = pd.DataFrame(
        {
            "video_id": ["a", "b"],
            "video_path": [str(p) for p in LAVIE[:2]],
            "prompt": ["a beach", "a beach at dusk"],
            "split": ["test", "test"],
        }
    )
    table = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), tmp_path / "cache").table
    with pytest.raises(ValueError, match="no readable 'train' rows to fit the baseline on"):
        evaluate_models({"candidate": "tiny"}, table, manifest, baseline_alongside=alongside)


def test_a_model_that_fails_stops_the_baseline_running_alongside(tmp_path, monkeypatch):
    import threading

    import qsave.baseline
    from qsave.parallel import Stopped

    told: list[bool] = []

    def waiting_baseline(*args, stop: threading.Event, **kwargs):
        told.append(stop.wait(timeout=60))  # a real baseline checks the same event between videos
        raise Stopped("baseline features: stopped")

    monkeypatch.setattr(qsave.baseline, "run_baseline", waiting_baseline)
    manifest = pd.DataFrame(
        {"video_id": ["a"], "video_path": [str(LAVIE[0])], "prompt": ["a beach"], "split": ["test"]}
    )
    table = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), tmp_path / "cache").table
    with pytest.raises(OSError, match="cannot load model"):
        evaluate_models({"candidate": str(tmp_path / "no-such-model")}, table, manifest)
    assert told == [True]


def test_cli_eval_with_a_model_on_the_aigve_toy_set(tmp_path, capsys):
    manifest = tmp_path / "aigve.parquet"
    assert (
        main(
            [
                "data",
                "import",
                "--format",
                "aigve",
                str(SHARED_DATA / "aigve-bench-toy"),
                "--out",
                str(manifest),
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = main(
        ["eval", "--model", "tiny", "--manifest", str(manifest), "--out", str(tmp_path / "report"),
         "--bootstrap", "50", "--champion", "", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    numbers = json.loads(captured.out)
    assert {"srcc_vq", "plcc_fit_ta", "krcc_overall", "rmse_fit_mq", "model_srcc_vq"} <= set(numbers)
    assert captured.err.count("video_missing") == 4, "each missing video is reported, none dropped silently"
    assert (tmp_path / "report" / "report.html").is_file()


def test_cli_eval_explain_scores_the_reasons_of_the_model_but_not_of_the_base(tmp_path, capsys):
    dataset, _ = training_corpus(tmp_path, n=4)
    code = main(
        ["eval", "--model", "tiny", "--base", "tiny", "--manifest", str(dataset / "manifest.parquet"),
         "--explain", "--out", str(tmp_path / "report"), "--bootstrap", "20", "--champion", "", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert {"reason_f1_micro_ta", "reason_recall_macro_vq"} <= set(json.loads(captured.out))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["models"]["base"]["dimensions"]["ta"]["reasons"] is None


def test_cli_eval_model_needs_a_manifest(tmp_path, capsys):
    assert main(["eval", "--model", "tiny", "--out", str(tmp_path)]) == 2
    assert "--model needs --manifest" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--model", "tiny", "--predictions", "x.csv"]])
def test_cli_eval_sources_are_exclusive(tmp_path, bad):
    with pytest.raises(SystemExit):
        main(["eval", *bad, "--out", str(tmp_path)])


def test_srcc_by_dimension_correlates_each_dimension_with_its_mos():
    mos = pd.DataFrame({f"mos_{d}": [1.0, 2.0, 3.0, 4.0] for d in ("vq", "mq", "ta", "overall")})
    preds = pd.DataFrame(
        {"pred_vq": [1, 2, 3, 4], "pred_mq": [4, 3, 2, 1], "pred_ta": [1, 3, 2, 4], "pred_overall": [2] * 4}
    )
    srcc = srcc_by_dimension(preds, mos)
    assert srcc["vq"] == pytest.approx(1.0) and srcc["mq"] == pytest.approx(-1.0)
    assert srcc["ta"] == pytest.approx(0.8)
    assert math.isnan(srcc["overall"])  # constant predictions: undefined, not 0
