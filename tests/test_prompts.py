"""Prompts, answer format, target building and the strict/lenient parsers."""

from __future__ import annotations

import math
import random

import pytest

from qsave.prompts import (
    SYLLABUS,
    SYSTEM_PROMPTS,
    Answer,
    answer_from_row,
    build_target,
    format_answer,
    level_char_spans,
    parse_lenient,
    parse_strict,
    scoring_prefix,
    slot_continuations,
    system_prompt,
    user_content,
)
from qsave.schema import DIMENSIONS, LEVELS

ROW = {
    "video_id": "v1",
    "mos_vq": 1.8,
    "mos_mq": 4.3,
    "mos_ta": 2.6,
    "mos_overall": 2.4,
    "reasons_vq": ["noise", "blur"],
    "reasons_mq": ["jitter"],
    "reasons_ta": ["wrong_count"],
    "explanation": "grainy and two balls instead of three",
}


def test_syllabus_defines_every_level_of_every_dimension() -> None:
    text = system_prompt()
    for dim in DIMENSIONS:
        for level in LEVELS:
            assert SYLLABUS[dim][level] in text
    assert "wrong_count" in text and "<answer>" in text


def test_every_prompt_style_names_the_levels_and_the_answer_tags_and_each_is_shorter() -> None:
    texts = [system_prompt(style) for style in SYSTEM_PROMPTS]
    for text in texts:
        assert all(level in text for level in LEVELS) and "<answer> </answer>" in text
    assert [len(t) for t in texts] == sorted((len(t) for t in texts), reverse=True)
    with pytest.raises(ValueError, match="unknown system prompt style"):
        system_prompt("brief")


def test_user_turn_has_one_or_two_segments_then_the_prompt() -> None:
    two = user_content("a red ball", 2)
    assert [c["type"] for c in two] == ["text", "video", "text", "video", "text"]
    assert "a red ball" in two[-1]["text"]
    assert [c["type"] for c in user_content("x", 1)] == ["video", "text"]
    with pytest.raises(ValueError):
        user_content("x", 3)


def test_target_from_row_levels_from_mos_reasons_only_for_low_levels() -> None:
    answer = answer_from_row(ROW)
    assert answer.levels == {"vq": "poor", "mq": "good", "ta": "fair", "overall": "poor"}
    assert answer.reasons == {"vq": ("blur", "noise"), "ta": ("wrong_count",)}  # mq rated good: no reasons
    assert "grainy" in answer.rationale and "blur" in answer.rationale
    text = build_target(ROW)
    assert text.startswith("<think>\nVisual quality:")
    assert "visual quality: poor\nmotion quality: good\n" in text
    assert text.endswith("reasons: blur, noise, wrong_count\n</answer>")


def test_no_think_target_starts_with_the_scoring_prefix_and_continuations() -> None:
    text = build_target(ROW, think=False)
    assert text.startswith("<think>\n\n</think>\n\n<answer>\n")
    rebuilt = scoring_prefix()
    for level, continuation in zip(answer_from_row(ROW).levels.values(), slot_continuations()):
        rebuilt += " " + level + continuation
    assert text.startswith(rebuilt)


def test_target_rejects_unrated_rows_and_unknown_codes() -> None:
    with pytest.raises(ValueError, match=r"'v1'.*mos_ta"):
        answer_from_row({**ROW, "mos_ta": math.nan})
    with pytest.raises(ValueError, match="unknown code"):
        answer_from_row({**ROW, "reasons_vq": ["sparkles"]})
    with pytest.raises(ValueError, match="lacks a valid level"):
        format_answer(Answer(levels={"vq": "good"}))


def test_strict_parser_round_trips_both_variants() -> None:
    for think in (True, False):
        parsed = parse_strict(build_target(ROW, think=think) + "<|im_end|>")
        assert parsed is not None
        assert parsed.levels == answer_from_row(ROW).levels
        assert parsed.reasons == {"vq": ("blur", "noise"), "ta": ("wrong_count",)}
        assert bool(parsed.rationale) == think
    clean = format_answer(Answer(levels=dict.fromkeys(DIMENSIONS, "good")))
    parsed = parse_strict(clean)
    assert parsed is not None and parsed.reasons == {} and parsed.complete


GOOD = build_target(ROW)
MALFORMED = [
    "",
    "good",
    GOOD.replace("</think>", ""),
    GOOD.replace("</answer>", ""),
    GOOD.replace("<answer>\n", "<answer>"),
    GOOD.replace("visual quality: poor", "visual quality: terrible"),
    GOOD.replace("visual quality: poor", "visual quality:  poor"),
    GOOD.replace("visual quality: poor", "Visual quality: poor"),
    GOOD.replace("motion quality: good\n", ""),
    GOOD.replace(
        "motion quality: good\ntext-video alignment: fair", "text-video alignment: fair\nmotion quality: good"
    ),
    GOOD.replace("blur, noise", "blur, sparkles"),
    GOOD.replace("blur, noise", "blur,noise"),
    GOOD.replace("blur, noise", "blur, blur"),
    GOOD.replace("reasons: ", "why: "),
    GOOD + "\nextra text",
    "preamble " + GOOD,
    GOOD + GOOD,
]


@pytest.mark.parametrize("text", MALFORMED)
def test_strict_parser_rejects_any_deviation(text: str) -> None:
    assert parse_strict(text) is None


def test_lenient_parser_reads_messy_answers() -> None:
    messy = (
        "Sure!\n**Visual Quality**: Good\nmotion quality = POOR\nText-video alignment - fair\n"
        "Overall quality: bad"
    )
    parsed = parse_lenient(messy)
    assert parsed.levels == {"vq": "good", "mq": "poor", "ta": "fair", "overall": "bad"}
    assert "no </think>" in parsed.problems
    parsed = parse_lenient(GOOD.replace("blur, noise", "blur, sparkles"))
    assert parsed.levels == answer_from_row(ROW).levels
    assert parsed.reasons["vq"] == ("blur",) and parsed.unknown_reasons == ("sparkles",)
    truncated = parse_lenient(GOOD[: GOOD.index("text-video alignment: fair")])
    assert truncated.levels == {"vq": "poor", "mq": "good"} and not truncated.complete


def test_parsers_never_crash_on_random_text() -> None:
    rng = random.Random(0)
    alphabet = [
        *"abc <>/:\n_-*=,;",
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        " good",
        "visual quality:",
    ]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        parse_lenient(text)
        assert parse_strict(text) is None or parse_strict(text).complete  # type: ignore[union-attr]
    for cut in range(0, len(GOOD), 7):
        parse_lenient(GOOD[:cut])
        parse_strict(GOOD[:cut])
    assert parse_lenient(None).problems  # type: ignore[arg-type]


def test_level_char_spans_point_at_the_level_words_with_their_space() -> None:
    spans = level_char_spans(GOOD)
    assert [GOOD[a:b] for a, b in (spans[d] for d in DIMENSIONS)] == [" poor", " good", " fair", " poor"]
