"""Probability scoring: hand-computed expectation from raw logits, determinism, batch invariance, explain."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from qsave.inputs import build_inputs
from qsave.modeling import load_model
from qsave.prompts import level_token_ids, scoring_prefix, slot_continuations
from qsave.schema import DIMENSIONS, LEVELS
from qsave.scoring import VideoScores, score_clips
from qsave.slowfast import Pathway, SlowFastClip

NO_INFO: Any = None  # synthetic clips have no probed source


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return load_model("tiny")


def pathway(frames: int, height: int, width: int, seed: int, step: int = 1) -> Pathway:
    rng = np.random.default_rng(seed)
    indices = np.arange(frames) * step
    return Pathway(
        frames=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        source_indices=indices,
        timestamps=indices / 8.0,
        source_fps=8.0,
        fps=8.0 / step,
        tokens=(frames // 2) * (height // 32) * (width // 32),
    )


def clip(seed: int) -> SlowFastClip:
    return SlowFastClip(
        slow=pathway(4, 128, 96, seed, step=4), fast=pathway(16, 64, 64, seed), info=NO_INFO, window_s=2.0
    )


def hand_scores(
    model: Any, processor: Any, video: SlowFastClip, prompt: str
) -> list[tuple[float, list[float]]]:
    """The Q-Align rule done by hand: a full forward pass (no cache, positions computed by the model) per
    slot over the text so far, the five level logits read off the raw logits and softmaxed in plain Python,
    the greedy level appended before the next slot."""
    level_ids = level_token_ids(processor.tokenizer)
    text = scoring_prefix()
    out = []
    for step in range(len(DIMENSIONS)):
        batch = build_inputs(processor, [video], [prompt], answer_prefixes=[text])
        with torch.no_grad():
            logits = model(**batch.model_kwargs).logits[0, -1]
        raw = [float(logits[i]) for i in level_ids]
        top = max(raw)
        exp = [math.exp(x - top) for x in raw]
        probs = [e / sum(exp) for e in exp]
        out.append((sum(p * (i + 1) for i, p in enumerate(probs)), probs))
        if step < len(DIMENSIONS) - 1:
            text += " " + LEVELS[raw.index(top)] + slot_continuations()[step]
    return out


def assert_close(a: VideoScores, b: VideoScores, tol: float) -> None:
    for dim in DIMENSIONS:
        assert a.dimensions[dim].score == pytest.approx(b.dimensions[dim].score, abs=tol)
        assert a.dimensions[dim].probs == pytest.approx(b.dimensions[dim].probs, abs=tol)
        assert a.dimensions[dim].level == b.dimensions[dim].level


def test_scores_equal_the_hand_computed_expectation_from_raw_logits(tiny: tuple[Any, Any]) -> None:
    model, processor = tiny
    video, prompt = clip(0), "a red ball rolls to the left"
    [result] = score_clips(model, processor, [video], [prompt])
    for dim, (score, probs) in zip(DIMENSIONS, hand_scores(model, processor, video, prompt)):
        assert result.dimensions[dim].score == pytest.approx(score, abs=1e-5)
        assert result.dimensions[dim].probs == pytest.approx(probs, abs=1e-5)
        assert result.dimensions[dim].level == LEVELS[int(np.argmax(probs))]
        assert 1.0 <= result.dimensions[dim].score <= 5.0


def test_scores_are_identical_across_runs_and_batch_compositions(tiny: tuple[Any, Any]) -> None:
    model, processor = tiny
    clips = [clip(s) for s in range(3)]
    prompts = ["a cat", "two dogs run across a wide green field under a cloudy sky", "x"]
    alone = [score_clips(model, processor, [c], [p])[0] for c, p in zip(clips, prompts)]
    again = score_clips(model, processor, clips[:1], prompts[:1])[0]
    assert again == alone[0]  # bit-identical run to run
    together = score_clips(model, processor, clips, prompts)
    shuffled = score_clips(model, processor, [clips[2], clips[0]], [prompts[2], prompts[0]])
    for i, result in enumerate(together):
        assert_close(result, alone[i], 1e-5)
    for i, result in zip((2, 0), shuffled):
        assert_close(result, alone[i], 1e-5)


def test_explanations_are_generated_greedily_and_parsed(tiny: tuple[Any, Any]) -> None:
    model, processor = tiny
    first = score_clips(model, processor, [clip(0)], ["a cat"], explain=True, max_new_tokens=12)[0]
    second = score_clips(model, processor, [clip(0)], ["a cat"], explain=True, max_new_tokens=12)[0]
    assert first.explanation is not None and first.explanation == second.explanation
    assert first.explanation.text.startswith("<think>")
    assert set(first.explanation.reasons) == {"vq", "mq", "ta"}
    assert first.explanation.problems  # an untrained model writes no valid answer: reported, not raised
    assert first.dimensions == second.dimensions
