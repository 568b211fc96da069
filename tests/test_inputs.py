"""The shared input builder: segments, timestamps, visual-token counts, padding, labels, level positions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED_DATA

from qsave.inputs import IGNORE_INDEX, build_inputs, mrope_position_ids
from qsave.modeling import load_model
from qsave.prompts import build_target, scoring_prefix, slot_continuations
from qsave.slowfast import LOCAL_SAMPLER, Pathway, SlowFastClip, sample_clip, sample_uniform

VIDEOS = sorted((SHARED_DATA / "vbench-lavie-style" / "videos").glob("*.mp4"))
ROW = {
    "video_id": "v",
    "mos_vq": 2.1,
    "mos_mq": 3.6,
    "mos_ta": 4.8,
    "mos_overall": 3.0,
    "reasons_vq": ["blur"],
    "reasons_mq": [],
    "reasons_ta": [],
    "explanation": "",
}

NO_INFO: Any = None  # synthetic clips have no probed source


@pytest.fixture(scope="module")
def processor() -> Any:
    return load_model("tiny")[1]


def pathway(frames: int, height: int, width: int, step: int = 1, fps: float = 8.0, seed: int = 0) -> Pathway:
    rng = np.random.default_rng(seed)
    indices = np.arange(frames) * step
    return Pathway(
        frames=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        source_indices=indices,
        timestamps=indices / fps,
        source_fps=fps,
        fps=fps / step,
        tokens=(frames // 2) * (height // 32) * (width // 32),
    )


def synthetic_clip(seed: int = 0) -> SlowFastClip:
    return SlowFastClip(
        slow=pathway(4, 96, 160, step=6, seed=seed),
        fast=pathway(12, 64, 96, seed=seed),
        info=NO_INFO,
        window_s=1.5,
    )


def video_pads_per_segment(processor: Any, ids: list[int]) -> list[int]:
    """<|video_pad|> counts per segment (segments are separated by the segment label text)."""
    text = processor.tokenizer.decode(ids)
    segments = re.split(r"pathway \(", text)[1:] or [text]
    return [s.count("<|video_pad|>") for s in segments]


def test_visual_tokens_equal_the_sampler_prediction_on_a_real_video(processor: Any) -> None:
    clip = sample_clip(VIDEOS[0], LOCAL_SAMPLER)
    batch = build_inputs(processor, [clip], ["a beach"])
    ids = batch.input_ids[0].tolist()
    assert video_pads_per_segment(processor, ids) == [clip.slow.tokens, clip.fast.tokens]
    grid = batch.model_kwargs["video_grid_thw"]
    assert grid.shape == (2, 3) and [int(g.prod()) // 4 for g in grid] == [clip.slow.tokens, clip.fast.tokens]
    uniform = sample_uniform(VIDEOS[0], LOCAL_SAMPLER)
    single = build_inputs(processor, [uniform], ["a beach"])
    assert video_pads_per_segment(processor, single.input_ids[0].tolist()) == [uniform.tokens]
    assert single.model_kwargs["video_grid_thw"].shape == (1, 3)


def test_timestamps_are_the_source_times_of_each_frame_pair(processor: Any) -> None:
    clip = synthetic_clip()
    text = processor.tokenizer.decode(build_inputs(processor, [clip], ["x"]).input_ids[0])
    stamps = [float(t) for t in re.findall(r"<([0-9.]+) seconds>", text)]
    expected = []
    for seg in (clip.slow, clip.fast):
        times = seg.source_indices / seg.source_fps
        expected += [round((times[i] + times[i + 1]) / 2, 1) for i in range(0, len(times), 2)]
    assert stamps == pytest.approx(expected, abs=0.051)
    assert stamps[:2] == [
        pytest.approx(0.4),
        pytest.approx(1.9),
    ]  # slow pairs: frames (0, 6), (12, 18) at 8 fps


def test_padding_is_per_sample_and_left_for_scoring(processor: Any) -> None:
    clips, prompts = [synthetic_clip(0), synthetic_clip(1)], ["a", "a much longer prompt " * 6]
    batch = build_inputs(processor, clips, prompts, answer_prefixes=[scoring_prefix()] * 2)
    alone = build_inputs(processor, clips[:1], prompts[:1], answer_prefixes=[scoring_prefix()])
    mask = batch.attention_mask[0].bool()
    assert not mask[0] and mask[-1]  # left padding on the shorter sample
    assert batch.input_ids[0][mask].tolist() == alone.input_ids[0].tolist()
    assert processor.tokenizer.decode(batch.input_ids[1, -4:]).endswith("visual quality:")
    assert "labels" not in batch.model_kwargs and batch.level_positions is None


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_position_ids_are_the_ones_the_model_computes(padding_side: str) -> None:
    """The collator's M-RoPE ids (computed in the dataloader worker) equal the model's own, and the
    logits with them equal the logits without."""
    import torch

    model, processor = load_model("tiny")
    clips, prompts = [synthetic_clip(0), synthetic_clip(1)], ["a", "a much longer prompt " * 6]
    kwargs = build_inputs(processor, clips, prompts, padding_side=padding_side).model_kwargs
    ids = mrope_position_ids(kwargs, processor.video_processor.merge_size)
    own, _ = model.model.get_rope_index(
        kwargs["input_ids"],
        kwargs["mm_token_type_ids"],
        video_grid_thw=kwargs["video_grid_thw"],
        attention_mask=kwargs["attention_mask"],
    )
    assert ids.shape == (3, *kwargs["input_ids"].shape) and torch.equal(ids, own)
    tokens = int(kwargs["attention_mask"][1].sum())
    assert int(ids[0, 1].max()) < tokens - 1  # a video's tokens share temporal positions: not a plain count
    with torch.no_grad():
        assert torch.equal(model(**kwargs).logits, model(**kwargs, position_ids=ids).logits)


def test_labels_cover_only_the_assistant_answer(processor: Any) -> None:
    answer = build_target(ROW)
    for side in ("left", "right"):
        batch = build_inputs(
            processor,
            [synthetic_clip(), synthetic_clip(2)],
            ["a", "b c d e f g"],
            answers=[answer] * 2,
            padding_side=side,
        )
        labels, positions = batch.model_kwargs["labels"], batch.level_positions
        assert positions is not None
        for row in range(2):
            supervised = labels[row][labels[row] != IGNORE_INDEX].tolist()
            assert processor.tokenizer.decode(supervised) == answer + "<|im_end|>"
            levels = [processor.tokenizer.decode(batch.input_ids[row, p]) for p in positions[row]]
            assert levels == [" poor", " good", " excellent", " fair"]
            assert (labels[row][positions[row]] == batch.input_ids[row, positions[row]]).all()


def test_scoring_tokens_match_the_training_tokens(processor: Any) -> None:
    """The scorer's prefix + greedy level + fixed text pieces tokenise exactly like the whole target."""
    tokenizer = processor.tokenizer
    target = build_target(ROW, think=False)
    whole = tokenizer.encode(target, add_special_tokens=False)
    pieces = tokenizer.encode(scoring_prefix(), add_special_tokens=False)
    for level, continuation in zip(["poor", "good", "excellent"], slot_continuations()):
        pieces += tokenizer.encode(" " + level, add_special_tokens=False)
        pieces += tokenizer.encode(continuation, add_special_tokens=False)
    pieces += tokenizer.encode(" fair", add_special_tokens=False)
    assert whole[: len(pieces)] == pieces


def test_bad_inputs_are_rejected_with_reasons(processor: Any) -> None:
    with pytest.raises(ValueError, match="even frame count"):
        build_inputs(processor, [pathway(3, 64, 64)], ["x"])
    with pytest.raises(ValueError, match="multiples of 32"):
        build_inputs(processor, [pathway(4, 64, 70)], ["x"])
    with pytest.raises(ValueError, match="2 clips but 1 prompts"):
        build_inputs(processor, [synthetic_clip(), synthetic_clip()], ["x"])
    with pytest.raises(ValueError, match="not both"):
        build_inputs(processor, [synthetic_clip()], ["x"], answers=["a"], answer_prefixes=["b"])
    wrong = pathway(4, 64, 64)
    wrong.tokens += 1
    with pytest.raises(ValueError, match="sampler predicted"):
        build_inputs(processor, [wrong], ["x"])
    with pytest.raises(TypeError):
        build_inputs(processor, [Path("video.mp4")], ["x"])  # type: ignore[list-item]
