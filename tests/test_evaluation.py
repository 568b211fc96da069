"""Assembling an evaluation from named prediction sets: alignment, deltas, optional parts, file reading."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from eval_fixtures import make_predictions

from qsave import metrics
from qsave.evaluation import (
    EvalConfig,
    EvaluationError,
    evaluate,
    fit_logistics,
    read_predictions,
)
from qsave.report import jsonable
from qsave.schema import DIMENSIONS

FAST = EvalConfig(n_bootstrap=200)


def test_candidate_base_champion_on_the_same_rows_with_deltas() -> None:
    candidate = make_predictions(noise=0.3, seed=0)
    base = make_predictions(noise=1.5, seed=1, probs=False, reasons=False)
    champion = make_predictions(noise=0.6, seed=2)
    evaluation = evaluate({"candidate": candidate, "base": base, "champion": champion}, config=FAST)

    assert evaluation.primary == "candidate"
    assert evaluation.dimensions == DIMENSIONS
    flat = {name: evaluation.flat(name) for name in evaluation.models}
    for dim in DIMENSIONS:
        key = f"srcc_{dim}"
        assert flat["candidate"][key] == pytest.approx(
            metrics.spearman(candidate[f"pred_{dim}"], candidate[f"mos_{dim}"])
        )
        assert flat["candidate"][key] > flat["champion"][key] > flat["base"][key]
        assert evaluation.deltas["base"].values[key] == pytest.approx(
            flat["candidate"][key] - flat["base"][key]
        )
        assert evaluation.deltas["base"].srcc_ci[dim].low > 0  # a clear win has a CI above zero
    # Optional parts appear exactly where their columns exist.
    assert evaluation.models["candidate"].dimensions["vq"].reasons is not None
    assert evaluation.models["candidate"].dimensions["overall"].reasons is None
    assert evaluation.models["candidate"].dimensions["vq"].uncertainty is not None
    assert evaluation.models["base"].dimensions["vq"].uncertainty is None
    assert "reason_f1_micro_vq" not in flat["base"]
    assert "ece_ta" in flat["candidate"]
    json.dumps(jsonable(evaluation.to_dict()), allow_nan=False)


def test_rows_missing_or_unmatched_are_counted_and_reported() -> None:
    candidate = make_predictions(n=80)
    partial = make_predictions(n=80, seed=3).iloc[10:].copy()
    extra = partial.iloc[:2].assign(video_id=["stranger1", "stranger2"])
    partial = pd.concat([partial, extra], ignore_index=True)
    partial.loc[partial.index[0], "pred_mq"] = np.nan
    with pytest.warns(metrics.MetricWarning) as caught:
        evaluation = evaluate({"candidate": candidate, "other": partial}, config=FAST)
    assert any("not scored" in str(w.message) for w in caught)
    other = evaluation.models["other"]
    assert other.n_scored == 70
    assert len(other.missing_ids) == 10
    assert other.unmatched_ids == ["stranger1", "stranger2"]
    assert other.dimensions["vq"].instance.n_excluded == 10
    assert other.dimensions["mq"].instance.n_excluded == 11
    assert any("have no ratings" in note for note in evaluation.notes)


def test_truth_can_come_from_a_separate_frame() -> None:
    frame = make_predictions(n=60)
    truth = frame[["video_id", "generator", *[f"mos_{d}" for d in DIMENSIONS]]]
    preds = frame[["video_id", *[f"pred_{d}" for d in DIMENSIONS]]].sample(frac=1.0, random_state=0)
    evaluation = evaluate({"model": preds}, truth=truth, config=FAST)
    direct = evaluate({"model": frame}, config=FAST)
    assert evaluation.flat()["srcc_vq"] == pytest.approx(direct.flat()["srcc_vq"])
    assert evaluation.flat()["model_srcc_ta"] == pytest.approx(direct.flat()["model_srcc_ta"])


def test_duplicate_ids_and_missing_columns_are_errors() -> None:
    frame = make_predictions(n=20)
    with pytest.raises(EvaluationError, match="duplicated video_id"):
        evaluate({"candidate": pd.concat([frame, frame.iloc[:1]])}, config=FAST)
    with pytest.raises(EvaluationError, match="none of the columns"):
        evaluate({"candidate": frame, "empty": frame[["video_id"]]}, config=FAST)


def test_train_fit_is_applied_to_held_out_rows() -> None:
    train = make_predictions(n=200, seed=4)
    test = make_predictions(n=100, seed=5)
    fits = fit_logistics(train)
    assert set(fits) == set(DIMENSIONS)
    evaluation = evaluate({"candidate": test}, config=FAST, fits={"candidate": fits})
    assert evaluation.models["candidate"].dimensions["vq"].instance.fit == fits["vq"]


def test_constant_predictions_do_not_crash_an_evaluation() -> None:
    frame = make_predictions(n=40).assign(pred_vq=3.0)
    with pytest.warns(metrics.MetricWarning, match="constant predictions"):
        evaluation = evaluate({"candidate": frame}, config=FAST)
    assert math.isnan(evaluation.flat()["srcc_vq"])
    assert evaluation.summary()["srcc_vq"] is None
    assert evaluation.flat()["srcc_mq"] > 0.5


def test_read_predictions_parses_reason_formats(tmp_path) -> None:
    frame = make_predictions(n=6, probs=False)
    frame["reasons_vq"] = ["blur, noise", '["blur"]', "['noise']", "", None, "exposure;blur"]
    path = tmp_path / "preds.csv"
    frame.to_csv(path, index=False)
    read = read_predictions(path)
    assert read["reasons_vq"].tolist() == [
        ["blur", "noise"],
        ["blur"],
        ["noise"],
        [],
        [],
        ["exposure", "blur"],
    ]
    assert read["video_id"].tolist() == frame["video_id"].tolist()
    frame.to_parquet(tmp_path / "preds.parquet")
    assert read_predictions(tmp_path / "preds.parquet")["reasons_mq"].tolist() == frame["reasons_mq"].tolist()
    frame["reasons_vq"] = ["[broken", *[""] * 5]
    frame.to_csv(path, index=False)
    with pytest.raises(EvaluationError, match=r"preds.csv row 2, reasons_vq"):
        read_predictions(path)
    (tmp_path / "x.txt").write_text("video_id\n")
    with pytest.raises(EvaluationError, match="unsupported format"):
        read_predictions(tmp_path / "x.txt")
