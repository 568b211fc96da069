"""Probability-based scores (the Q-Align rule) and optional generated explanations.

**Scores.** For each dimension, at its level slot in the answer (``"visual quality:"`` → next token),
take the model's *raw* next-token logits (a plain forward pass, not ``generate``'s processed scores),
softmax over the five level tokens only, and score = Σ pᵢ·i for i = 1..5 (bad … excellent). The prefix is
the no-think answer start (see :mod:`qsave.prompts`): one prefill reads the first slot; each later slot
costs one cached decode step that feeds the model's *own* greedy level for the previous slot (argmax over
the five) plus the fixed text up to the next slot. Ground-truth levels are never fed in: teacher-forcing
them lets "overall" copy the earlier slots (DESIGN.md "Scoring trap").

**Batching.** Left padding, per-sample position ids computed from the attention mask (Qwen3-VL's 3-D
M-RoPE for the prompt, then +1 per decoded token), so a video's scores do not depend on its batch-mates
beyond float round-off (tested within 1e-5).

**Videos** (:func:`score_videos`): decode and sample each file, score in batches, one JSON-ready record
per video in input order; a video that cannot be decoded gets an error record (its
:class:`qsave.video.VideoError` reason) and the rest go on.

**Explanations** (``explain=True``): greedy generation of the full CoT answer (deterministic), read with
the lenient parser into a rationale and taxonomy reasons per dimension.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qsave.inputs import build_inputs
from qsave.prompts import (
    THINK_OPEN,
    ParsedAnswer,
    level_token_ids,
    parse_lenient,
    scoring_prefix,
    slot_continuations,
)
from qsave.schema import DIMENSIONS, LEVELS, REASON_DIMENSIONS
from qsave.slowfast import Pathway, SamplerConfig, SlowFastClip, sample_clip, sample_uniform
from qsave.video import DecodeLimits, VideoError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DimensionScore:
    """One dimension's read-out: the expected score, the most probable level, and p(level) worst first."""

    score: float
    level: str
    probs: tuple[float, ...]


@dataclass(frozen=True)
class VideoScores:
    """Scores for every dimension of one video, plus the explanation when one was generated."""

    dimensions: dict[str, DimensionScore]
    explanation: Explanation | None = None

    def scores(self) -> dict[str, float]:
        return {d: s.score for d, s in self.dimensions.items()}

    def levels(self) -> dict[str, str]:
        return {d: s.level for d, s in self.dimensions.items()}


@dataclass(frozen=True)
class Explanation:
    """A generated CoT answer, parsed leniently: rationale text and taxonomy reasons per dimension."""

    text: str
    rationale: str
    reasons: dict[str, tuple[str, ...]]
    levels: dict[str, str]
    problems: tuple[str, ...] = ()

    @classmethod
    def from_text(cls, text: str) -> Explanation:
        parsed: ParsedAnswer = parse_lenient(text)
        return cls(
            text=text,
            rationale=parsed.rationale,
            reasons={d: parsed.reasons.get(d, ()) for d in REASON_DIMENSIONS},
            levels=parsed.levels,
            problems=parsed.problems,
        )


@dataclass(frozen=True)
class ScoringConfig:
    """How :func:`score_videos` scores: batch size, sampling path, whether and how long to explain."""

    batch_size: int = 4
    uniform: bool = False
    """One uniformly sampled segment (Qwen3-VL's default path) instead of the SlowFast pair."""
    explain: bool = False
    max_new_tokens: int = 256
    """Cap on generated explanation tokens (explain mode only)."""
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    """Decode limits and timeout for every video opened (a server passes its stricter ones)."""


@dataclass(frozen=True)
class ScoreRequest:
    """One video to score: its id, file path and generation prompt."""

    video_id: str
    path: str
    prompt: str


@dataclass
class ScoreTiming:
    """Milliseconds spent, per batch."""

    inputs_ms: float = 0.0
    scoring_ms: float = 0.0
    explain_ms: float = 0.0


def _base_model(model: Any) -> Any:
    """The Qwen3-VL ``…ForConditionalGeneration`` under any wrapper (e.g. a peft model)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def prefill_position_ids(model: Any, model_kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(4, batch, seq) position ids for a left-padded prompt: text positions, then Qwen3-VL's 3-D M-RoPE."""
    import torch

    mask = model_kwargs["attention_mask"]
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    rope, _ = _base_model(model).model.get_rope_index(
        model_kwargs["input_ids"],
        mm_token_type_ids=model_kwargs["mm_token_type_ids"],
        video_grid_thw=model_kwargs.get("video_grid_thw"),
        image_grid_thw=model_kwargs.get("image_grid_thw"),
        attention_mask=mask,
    )
    return torch.cat([text[None], rope.to(text.dtype)], dim=0)


def level_distribution(logits: torch.Tensor, level_ids: Sequence[int]) -> torch.Tensor:
    """Softmax over the five level tokens' logits only (float32), shape (batch, 5)."""
    return logits[:, list(level_ids)].float().softmax(dim=-1)


def expected_score(probs: torch.Tensor) -> torch.Tensor:
    """Σ pᵢ·i over levels 1..5, shape (batch,)."""
    import torch

    weights = torch.arange(1, len(LEVELS) + 1, dtype=probs.dtype, device=probs.device)
    return probs @ weights


def read_level_slots(model: Any, tokenizer: Any, model_kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Level probabilities (batch, dimensions, 5) for left-padded inputs that end at the first level slot.

    One prefill, then one cached decode step per later dimension fed with the model's own greedy level
    and the fixed text up to the next slot.
    """
    import torch

    level_ids = level_token_ids(tokenizer)
    continuations = [tokenizer.encode(t, add_special_tokens=False) for t in slot_continuations()]
    device = next(model.parameters()).device
    kwargs = {k: v.to(device) for k, v in model_kwargs.items()}
    positions = prefill_position_ids(model, kwargs)
    mask = kwargs["attention_mask"]
    batch = mask.shape[0]
    out = model(**kwargs, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.cache
    next_position = positions.amax(dim=-1, keepdim=True) + 1  # (4, batch, 1)
    probs = []
    for step in range(len(DIMENSIONS)):
        p = level_distribution(out.logits[:, -1, :], level_ids)
        probs.append(p)
        if step == len(DIMENSIONS) - 1:
            break
        chosen = torch.tensor(level_ids, device=device)[p.argmax(dim=-1)]
        fixed = torch.tensor(continuations[step], device=device).expand(batch, -1)
        chunk = torch.cat([chosen[:, None], fixed], dim=1)
        n = chunk.shape[1]
        step_positions = next_position + torch.arange(n, device=device).view(1, 1, n)
        mask = torch.cat([mask, mask.new_ones(batch, n)], dim=1)
        out = model(
            input_ids=chunk,
            attention_mask=mask,
            position_ids=step_positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.cache
        next_position = next_position + n
    return torch.stack(probs, dim=1)


def generate_answers(
    model: Any,
    processor: Any,
    clips: Sequence[SlowFastClip | Pathway],
    prompts: Sequence[str],
    max_new_tokens: int,
    min_new_tokens: int = 0,
) -> list[str]:
    """Greedy (deterministic) generation of the full CoT answer, starting after ``<think>``.

    ``min_new_tokens`` forces a length (benchmarks: an untrained model never stops on its own).
    """
    import torch

    batch = build_inputs(processor, clips, prompts, answer_prefixes=[THINK_OPEN] * len(clips))
    device = next(model.parameters()).device
    kwargs = {k: v.to(device) for k, v in batch.model_kwargs.items()}
    tokenizer = processor.tokenizer
    with torch.inference_mode():
        out = model.generate(
            **kwargs,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )
    new = out[:, kwargs["input_ids"].shape[1] :]
    return [THINK_OPEN + text for text in tokenizer.batch_decode(new, skip_special_tokens=True)]


def score_clips(
    model: Any,
    processor: Any,
    clips: Sequence[SlowFastClip | Pathway],
    prompts: Sequence[str],
    explain: bool = False,
    max_new_tokens: int = 256,
    timing: ScoreTiming | None = None,
) -> list[VideoScores]:
    """Scores (and optionally explanations) for one batch of sampled clips with their prompts."""
    import torch

    started = time.perf_counter()
    batch = build_inputs(processor, clips, prompts, answer_prefixes=[scoring_prefix()] * len(clips))
    built = time.perf_counter()
    with torch.inference_mode():
        probs = read_level_slots(model, processor.tokenizer, batch.model_kwargs).cpu()
    scored = time.perf_counter()
    scores = expected_score(probs)
    explanations: list[Explanation | None] = [None] * len(clips)
    if explain:
        explanations = [
            Explanation.from_text(t)
            for t in generate_answers(model, processor, clips, prompts, max_new_tokens)
        ]
    if timing is not None:
        timing.inputs_ms += (built - started) * 1e3
        timing.scoring_ms += (scored - built) * 1e3
        timing.explain_ms += (time.perf_counter() - scored) * 1e3
    results = []
    for i in range(len(clips)):
        dims = {
            dim: DimensionScore(
                score=float(scores[i, d]),
                level=LEVELS[int(probs[i, d].argmax())],
                probs=tuple(float(x) for x in probs[i, d]),
            )
            for d, dim in enumerate(DIMENSIONS)
        }
        results.append(VideoScores(dimensions=dims, explanation=explanations[i]))
    return results


def score_record(request: ScoreRequest, result: VideoScores, timing_ms: dict[str, float]) -> dict[str, Any]:
    """A scored video as one JSON-ready record (the ``qsave score`` line format)."""
    explanation = result.explanation
    return {
        "video_id": request.video_id,
        "path": request.path,
        "prompt": request.prompt,
        "scores": {d: round(s.score, 6) for d, s in result.dimensions.items()},
        "levels": result.levels(),
        "level_probs": {
            d: dict(zip(LEVELS, (round(p, 6) for p in s.probs))) for d, s in result.dimensions.items()
        },
        "reasons": {d: list(r) for d, r in explanation.reasons.items()} if explanation else None,
        "explanation": explanation.rationale if explanation else None,
        "timing_ms": {k: round(v, 2) for k, v in timing_ms.items()},
    }


def error_record(request: ScoreRequest, error: VideoError) -> dict[str, Any]:
    """A video that could not be read: its reason code and detail instead of scores."""
    return {
        "video_id": request.video_id,
        "path": request.path,
        "prompt": request.prompt,
        "error": error.reason,
        "detail": error.detail,
    }


def score_videos(
    requests: Sequence[ScoreRequest],
    model: Any,
    processor: Any,
    sampler: SamplerConfig,
    cfg: ScoringConfig = ScoringConfig(),
    progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Decode, score and (optionally) explain each video; yields one record per request, in order.

    Timing per video: ``decode`` (its own), ``score`` and ``explain`` (its batch's, shared equally).
    """
    from tqdm import tqdm

    with tqdm(
        total=len(requests), desc="scoring", unit="video", file=sys.stderr, disable=not progress
    ) as bar:
        for start in range(0, len(requests), cfg.batch_size):
            batch = requests[start : start + cfg.batch_size]
            records: dict[int, dict[str, Any]] = {}
            ready: list[tuple[int, SlowFastClip | Pathway, float]] = []
            for i, request in enumerate(batch):
                began = time.perf_counter()
                try:
                    clip = (sample_uniform if cfg.uniform else sample_clip)(request.path, sampler, cfg.limits)
                except VideoError as exc:
                    records[i] = error_record(request, exc)
                    continue
                ready.append((i, clip, (time.perf_counter() - began) * 1e3))
            if ready:
                timing = ScoreTiming()
                results = score_clips(
                    model,
                    processor,
                    [clip for _, clip, _ in ready],
                    [batch[i].prompt for i, _, _ in ready],
                    explain=cfg.explain,
                    max_new_tokens=cfg.max_new_tokens,
                    timing=timing,
                )
                for (i, _, decode_ms), result in zip(ready, results):
                    records[i] = score_record(
                        batch[i],
                        result,
                        {
                            "decode": decode_ms,
                            "score": (timing.inputs_ms + timing.scoring_ms) / len(ready),
                            "explain": timing.explain_ms / len(ready),
                        },
                    )
            yield from (records[i] for i in range(len(batch)))
            bar.update(len(batch))
