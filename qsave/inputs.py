"""The one way to turn (sampled clip, generation prompt[, answer]) into Qwen3-VL inputs.

Training, scoring and serving all call :func:`build_inputs`, so the model always sees the same layout:

- a :class:`~qsave.slowfast.SlowFastClip` becomes two video segments, slow pathway then fast pathway;
  a :class:`~qsave.slowfast.Pathway` (the uniform path, Qwen3-VL's default) becomes one segment;
- frames are already sampled and sized by :mod:`qsave.slowfast`, so the processor gets them with
  ``do_sample_frames=False``, ``do_resize=False`` and per-segment ``VideoMetadata`` (source fps and source
  frame indices): Qwen3-VL's ``<t seconds>`` timestamp tokens then give each temporal patch's true time,
  and each segment costs exactly the sampler's predicted visual tokens (checked here);
- every sample is processed on its own and then padded, so a sample's tokens never depend on what else
  is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qsave.prompts import chat_messages, level_char_spans
from qsave.schema import DIMENSIONS
from qsave.slowfast import Pathway, SlowFastClip

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
"""Label of tokens that carry no loss (prompt, video, padding)."""

END_OF_TURN = "<|im_end|>"


@dataclass
class ModelBatch:
    """Padded model inputs for a batch.

    ``model_kwargs`` goes straight to ``model(**model_kwargs)``: ``input_ids``, ``attention_mask``,
    ``mm_token_type_ids``, ``pixel_values_videos``, ``video_grid_thw``, and ``labels`` (assistant tokens
    only, ``-100`` elsewhere) when answers were given. ``level_positions`` (batch × 4, DIMENSIONS order)
    holds the index of each level-word token in ``input_ids`` (its logits are read at index − 1), or −1
    where an answer lacks that level; ``None`` without answers.
    """

    model_kwargs: dict[str, torch.Tensor]
    level_positions: torch.Tensor | None
    padding_side: str

    @property
    def input_ids(self) -> torch.Tensor:
        return self.model_kwargs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.model_kwargs["attention_mask"]


def clip_segments(clip: SlowFastClip | Pathway) -> list[Pathway]:
    """The video segments of a clip in model order: ``[slow, fast]`` or ``[pathway]``."""
    if isinstance(clip, SlowFastClip):
        return [clip.slow, clip.fast]
    if isinstance(clip, Pathway):
        return [clip]
    raise TypeError(f"expected a SlowFastClip or a Pathway, got {type(clip).__name__}")


def _segment_metadata(segment: Pathway, index: int) -> dict[str, Any]:
    frames = segment.frames
    if frames.ndim != 4 or frames.shape[-1] != 3 or str(frames.dtype) != "uint8":
        raise ValueError(
            f"segment {index}: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
        )
    if frames.shape[0] % 2 or frames.shape[1] % 32 or frames.shape[2] % 32:
        raise ValueError(
            f"segment {index}: {frames.shape[0]} frames of {frames.shape[2]}×{frames.shape[1]}; Qwen3-VL "
            "needs an even frame count and sides that are multiples of 32 (sample with qsave.slowfast)"
        )
    if len(segment.source_indices) != frames.shape[0]:
        raise ValueError(
            f"segment {index}: {len(segment.source_indices)} source indices for {frames.shape[0]} frames"
        )
    indices = [int(i) for i in segment.source_indices]
    return {
        "total_num_frames": max(indices) + 1,
        "fps": float(segment.source_fps),
        "frames_indices": indices,
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
    }


def prompt_style(processor: Any) -> str:
    """The system-prompt style of the model a processor belongs to: what :func:`qsave.modeling.load_model`
    read from the model directory (``full``, the syllabus, for a processor it did not load)."""
    from qsave.modeling import PROMPT_ATTRIBUTE

    return str(getattr(processor, PROMPT_ATTRIBUTE, "full"))


def prompt_text(processor: Any, prompt: str, n_segments: int) -> str:
    """The chat-formatted prompt (system turn in the model's style, user turn) up to and including the
    assistant header."""
    text = processor.apply_chat_template(
        chat_messages(prompt, n_segments, prompt_style(processor)), tokenize=False, add_generation_prompt=True
    )
    return str(text)


def _encode_prompt(processor: Any, clip: SlowFastClip | Pathway, prompt: str, prefix: str) -> dict[str, Any]:
    segments = clip_segments(clip)
    metadata = [_segment_metadata(s, i) for i, s in enumerate(segments)]
    encoded = processor(
        text=[prompt_text(processor, prompt, len(segments)) + prefix],
        videos=[s.frames for s in segments],
        video_metadata=metadata,
        do_sample_frames=False,
        do_resize=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    merge = processor.video_processor.merge_size**2
    counts = [int(g.prod()) // merge for g in encoded["video_grid_thw"]]
    expected = [int(s.tokens) for s in segments]
    if counts != expected:
        raise ValueError(
            f"processor made {counts} visual tokens per segment but the sampler predicted {expected}; "
            "the processor's patch geometry differs from Qwen3-VL's (patch 16, merge 2, temporal 2)"
        )
    return dict(encoded)


def _encode_answer(tokenizer: Any, answer: str) -> tuple[list[int], list[int]]:
    """Answer ids (ending with the end-of-turn token) and the index of each dimension's level token."""
    text = answer + END_OF_TURN
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    spans = level_char_spans(answer)
    positions = []
    for dim in DIMENSIONS:
        if dim not in spans:
            positions.append(-1)
            continue
        try:
            positions.append(offsets.index(spans[dim]))
        except ValueError:
            raise ValueError(
                f"the {dim} level word at characters {spans[dim]} of the answer is not one token; "
                "the tokenizer cannot be used for level supervision"
            ) from None
    return ids, positions


def build_inputs(
    processor: Any,
    clips: Sequence[SlowFastClip | Pathway],
    prompts: Sequence[str],
    *,
    answers: Sequence[str] | None = None,
    answer_prefixes: Sequence[str] | None = None,
    padding_side: str = "left",
) -> ModelBatch:
    """Model inputs for a batch of clips with their generation prompts.

    ``answers``: complete assistant texts (training): appended with the end-of-turn token, and
    ``labels``/``level_positions`` are returned. ``answer_prefixes``: partial assistant texts the model
    continues (scoring, constrained generation): appended without labels. Pass at most one of them.
    ``padding_side`` is ``"left"`` for scoring and generation, either for training.
    """
    import torch

    if len(clips) != len(prompts):
        raise ValueError(f"{len(clips)} clips but {len(prompts)} prompts")
    if answers is not None and answer_prefixes is not None:
        raise ValueError("pass answers (training) or answer_prefixes (scoring), not both")
    for name, texts in (("answers", answers), ("answer_prefixes", answer_prefixes)):
        if texts is not None and len(texts) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(texts)} {name}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not clips:
        raise ValueError("build_inputs needs at least one clip")

    tokenizer = processor.tokenizer
    rows = []
    for i, (clip, prompt) in enumerate(zip(clips, prompts)):
        prefix = answer_prefixes[i] if answer_prefixes is not None else ""
        encoded = _encode_prompt(processor, clip, prompt, prefix)
        ids = encoded["input_ids"][0].tolist()
        types = encoded["mm_token_type_ids"][0].tolist()
        labels = [IGNORE_INDEX] * len(ids)
        positions = None
        if answers is not None:
            answer_ids, answer_positions = _encode_answer(tokenizer, answers[i])
            positions = [p + len(ids) if p >= 0 else -1 for p in answer_positions]
            ids, types, labels = ids + answer_ids, types + [0] * len(answer_ids), labels + answer_ids
        rows.append((ids, types, labels, positions, encoded))

    longest = max(len(r[0]) for r in rows)
    pad_id = tokenizer.pad_token_id
    input_ids, attention, type_ids, label_rows, level_rows = [], [], [], [], []
    for ids, types, labels, positions, _ in rows:
        pad = longest - len(ids)

        def padded(values: list[int], fill: int, pad: int = pad) -> list[int]:
            return [fill] * pad + values if padding_side == "left" else values + [fill] * pad

        input_ids.append(padded(ids, pad_id))
        attention.append(padded([1] * len(ids), 0))
        type_ids.append(padded(types, 0))
        label_rows.append(padded(labels, IGNORE_INDEX))
        if positions is not None:
            shift = pad if padding_side == "left" else 0
            level_rows.append([p + shift if p >= 0 else -1 for p in positions])

    model_kwargs: dict[str, torch.Tensor] = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "attention_mask": torch.tensor(attention, dtype=torch.long),
        "mm_token_type_ids": torch.tensor(type_ids, dtype=torch.int32),
        "pixel_values_videos": torch.cat([r[4]["pixel_values_videos"] for r in rows]),
        "video_grid_thw": torch.cat([r[4]["video_grid_thw"] for r in rows]),
    }
    if answers is not None:
        model_kwargs["labels"] = torch.tensor(label_rows, dtype=torch.long)
    return ModelBatch(
        model_kwargs=model_kwargs,
        level_positions=torch.tensor(level_rows, dtype=torch.long) if answers is not None else None,
        padding_side=padding_side,
    )


def mrope_position_ids(model_kwargs: dict[str, torch.Tensor], spatial_merge_size: int) -> torch.Tensor:
    """Qwen3-VL's M-RoPE position ids (3 × batch × length) of ``model_kwargs`` (inputs from
    :func:`build_inputs`), by transformers' own ``Qwen3VLModel.get_rope_index`` — what the model's forward
    computes when it is given none.

    That computation is a Python loop over samples and token groups (~7 % of a local SFT step); the SFT
    collator adds the ids to each batch so that it runs in the dataloader worker, beside the training loop.
    ``get_rope_index`` reads only the vision config's ``spatial_merge_size`` and the (stateless)
    ``get_vision_position_ids`` from the model, which the stand-in below provides.
    """
    from functools import partial
    from types import SimpleNamespace

    from transformers.models.qwen3_vl import modeling_qwen3_vl

    model_class: Any = modeling_qwen3_vl.Qwen3VLModel  # its methods, called with a stand-in for the model
    stand_in = SimpleNamespace(
        config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=spatial_merge_size)),
        get_vision_position_ids=partial(model_class.get_vision_position_ids, None),
    )
    position_ids: torch.Tensor
    position_ids, _ = model_class.get_rope_index(
        stand_in,
        model_kwargs["input_ids"],
        model_kwargs["mm_token_type_ids"],
        video_grid_thw=model_kwargs["video_grid_thw"],
        attention_mask=model_kwargs["attention_mask"],
    )
    return position_ids
