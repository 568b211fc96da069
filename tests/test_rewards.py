"""GRPO rewards on crafted completions: valid, malformed, wrong levels, right and wrong reasons."""

from __future__ import annotations

import math
from typing import Any

import pytest

from qsave.grpo import GRPOStageConfig
from qsave.prompts import Answer, build_target, format_answer
from qsave.rewards import (
    accuracy_reward,
    attribution_reward,
    completion_text,
    format_reward,
    reason_f1,
    reward_functions,
)

ROW: dict[str, Any] = {
    "video_id": "v1",
    "mos_vq": 2.0,
    "mos_mq": 4.0,
    "mos_ta": 1.2,
    "mos_overall": 2.6,
    "reasons_vq": ["blur", "noise"],
    "reasons_mq": ["jitter"],  # mq is rated good: its reasons are not in the reference answer
    "reasons_ta": ["wrong_count"],
    "explanation": "",
}
LEVELS = {"vq": "poor", "mq": "good", "ta": "bad", "overall": "fair"}
REFERENCE = build_target(ROW)


def columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """trl's reward kwargs: one list per dataset column, one value per completion."""
    return {key: [r[key] for r in rows] for key in rows[0]}


def rewards(completions: list[str]) -> dict[str, list[float]]:
    kwargs = columns([ROW] * len(completions))
    prompts = ["a prompt"] * len(completions)
    return {
        "format": format_reward(prompts, completions, **kwargs),
        "accuracy": accuracy_reward(prompts, completions, **kwargs),
        "attribution": attribution_reward(prompts, completions, **kwargs),
    }


def answer(levels: dict[str, str], reasons: dict[str, tuple[str, ...]], rationale: str = "x") -> str:
    return format_answer(Answer(levels=levels, reasons=reasons, rationale=rationale))


def test_the_reference_answer_scores_high_on_every_reward() -> None:
    got = rewards([REFERENCE, REFERENCE + "<|im_end|>"])
    assert got["format"] == [1.0, 1.0]
    assert got["attribution"] == [1.0, 1.0]
    # levels are the nearest level to each MOS: only the rounding distance is lost
    expected = sum(math.exp(-(d**2) / 0.5) for d in (0.0, 0.0, 0.2, 0.4)) / 4
    assert got["accuracy"] == pytest.approx([expected, expected])


def test_malformed_completions_get_no_format_reward_and_unreadable_ones_nothing() -> None:
    no_think = REFERENCE.split("</think>\n\n", 1)[1]
    trailing = REFERENCE + "\nmore text"
    garbage = "poor poor fair the the"
    got = rewards([no_think, trailing, garbage])
    assert got["format"] == [0.0, 0.0, 0.0]
    # the lenient reader still finds the levels and reasons of the first two
    assert got["accuracy"][0] == pytest.approx(rewards([REFERENCE])["accuracy"][0])
    assert got["attribution"][:2] == [1.0, 1.0]
    assert got["accuracy"][2] == 0.0 and got["attribution"][2] == 0.0


def test_wrong_levels_lower_accuracy_monotonically_with_distance() -> None:
    reasons = {"vq": ("blur", "noise"), "ta": ("wrong_count",)}
    one_off = answer({**LEVELS, "vq": "fair"}, reasons)
    far_off = answer({**LEVELS, "vq": "excellent"}, reasons)
    all_wrong = answer({d: "excellent" for d in LEVELS}, {})
    right = answer(LEVELS, reasons)
    acc = rewards([right, one_off, far_off, all_wrong])["accuracy"]
    assert acc[0] > acc[1] > acc[2] > acc[3] >= 0.0
    assert acc[0] - acc[1] == pytest.approx((1 - math.exp(-2)) / 4)  # vq: |3 − 2| = 1 → exp(−1/(2·0.25))


def test_sigma_sets_the_width_of_the_accuracy_gaussian() -> None:
    completion = [answer({**LEVELS, "vq": "fair"}, {})]
    kwargs = columns([ROW])
    narrow = accuracy_reward(["p"], completion, sigma=0.25, **kwargs)[0]
    wide = accuracy_reward(["p"], completion, sigma=2.0, **kwargs)[0]
    assert narrow < accuracy_reward(["p"], completion, **kwargs)[0] < wide


def test_dimension_weights_make_accuracy_a_weighted_mean() -> None:
    kwargs = columns([ROW, ROW])
    ta_wrong = answer({**LEVELS, "ta": "excellent"}, {})  # ta: |5 − 1.2| → ~0
    vq_wrong = answer({**LEVELS, "vq": "excellent"}, {})
    ta_only = accuracy_reward(["p"] * 2, [ta_wrong, vq_wrong], dimension_weights=(0, 0, 1, 0), **kwargs)
    assert ta_only[0] == pytest.approx(math.exp(-(3.8**2) / 0.5))
    assert ta_only[1] == pytest.approx(math.exp(-(0.2**2) / 0.5))  # vq's mistake is not counted
    equal = accuracy_reward(["p"] * 2, [ta_wrong, vq_wrong], dimension_weights=(2, 2, 2, 2), **kwargs)
    assert equal == pytest.approx(accuracy_reward(["p"] * 2, [ta_wrong, vq_wrong], **kwargs))
    accuracy = reward_functions(dimension_weights=(0, 0, 1, 0))[1]
    assert accuracy(["p"] * 2, [ta_wrong, vq_wrong], **kwargs) == pytest.approx(ta_only)
    for bad in [(1, 1, 1), (0, 0, 0, 0), (1, -1, 1, 1)]:
        with pytest.raises(ValueError, match="one non-negative weight per dimension"):
            reward_functions(dimension_weights=bad)
    with pytest.raises(ValueError, match="one non-negative weight per dimension"):
        GRPOStageConfig(accuracy_weights=(0.0, 0.0, 0.0, 0.0))


def test_attribution_is_f1_per_dimension_with_agreement_on_no_reasons() -> None:
    right = answer(LEVELS, {"vq": ("blur", "noise"), "ta": ("wrong_count",)})
    half = answer(LEVELS, {"vq": ("blur",), "ta": ("wrong_count",)})  # vq: P=1, R=0.5 → F1 2/3
    wrong = answer(LEVELS, {"vq": ("exposure",), "ta": ("wrong_color",)})
    extra = answer(LEVELS, {"vq": ("blur", "noise"), "mq": ("jitter",), "ta": ("wrong_count",)})
    got = rewards([right, half, wrong, extra])["attribution"]
    assert got[0] == 1.0
    assert got[1] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert got[2] == pytest.approx((0 + 1 + 0) / 3)  # mq: neither names a reason → agreement
    assert got[3] == pytest.approx((1 + 0 + 1) / 3)  # a reason the reference does not have costs mq


def test_reason_f1_edge_cases() -> None:
    assert reason_f1([], []) == 1.0
    assert reason_f1(["blur"], []) == 0.0
    assert reason_f1([], ["blur"]) == 0.0
    assert reason_f1(["blur", "noise"], ["blur"]) == pytest.approx(2 / 3)


def test_conversational_completions_and_trl_naming() -> None:
    chat = [{"role": "assistant", "content": REFERENCE}]
    assert completion_text(chat) == REFERENCE
    assert format_reward(["p"], [chat]) == [1.0]
    from trl.trainer.utils import get_callable_name

    names = [get_callable_name(f) for f in reward_functions(sigma=0.7)]
    assert names == ["format_reward", "accuracy_reward", "attribution_reward"]


def test_missing_columns_and_unrated_rows_are_reported() -> None:
    with pytest.raises(KeyError, match="mos_vq"):
        accuracy_reward(["p"], [REFERENCE])
    unrated = columns([{**ROW, "mos_vq": float("nan")}])
    with pytest.raises(ValueError, match=r"'v1'.*MOS is empty"):
        accuracy_reward(["p"], [REFERENCE], **unrated)
