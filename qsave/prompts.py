"""What the model reads and writes: the rating syllabus, the user turn, the answer format and its parsers.

The answer is a Chain-of-Thought followed by one level word per dimension, in :data:`qsave.schema.DIMENSIONS`
order, and the taxonomy codes of the reasons for low ratings::

    <think>
    Visual quality: blur (soft, out-of-focus or smeared detail), so it is poor.
    ...
    </think>

    <answer>
    visual quality: poor
    motion quality: good
    text-video alignment: fair
    overall quality: fair
    reasons: blur, wrong_count
    </answer>

**Scoring mode (no-think).** Probability scoring must not generate a rationale first, so it reads the level
slots after an *empty* think block, ``<think>\\n\\n</think>\\n\\n<answer>\\nvisual quality:`` — Qwen3's
no-think convention. :func:`build_target` therefore writes both variants (``think=True`` for the CoT,
``think=False`` for the empty block); training uses both, so the prefix the scorer conditions on is one the
model was trained on.

**Level slots.** Each dimension line is ``"<name>:"`` followed by the level word *with its leading space*
(``" good"``). On Qwen's byte-level BPE the pre-tokenizer splits ``":"``, ``" good"`` and ``"\\n"`` into
separate pieces, so the level word is one token (checked by :func:`level_token_ids`) and tokenising the
answer piece by piece gives the same ids as tokenising it whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from qsave.schema import (
    DIMENSION_NAMES,
    DIMENSIONS,
    LEVELS,
    LOW_LEVELS,
    REASON_DIMENSIONS,
    mos_column,
    reasons_column,
    score_to_level,
)
from qsave.taxonomy import TAXONOMY, get_reason, is_known, reasons_for

SYLLABUS: Final[dict[str, dict[str, str]]] = {
    "vq": {
        "bad": "badly damaged frames: heavy blur, noise, blocks or broken shapes hide most of the content",
        "poor": "clearly visible artefacts such as blur, noise, blocks or wrong colours spoil large parts",
        "fair": "acceptable frames with noticeable flaws: some softness, grain, banding or colour shift",
        "good": "clean, sharp frames with only minor flaws that an attentive viewer might notice",
        "excellent": "crisp, detailed, natural-looking frames with no visible artefacts",
    },
    "mq": {
        "bad": "motion is broken: frames freeze, jump or flicker so the action cannot be followed",
        "poor": "strong jitter, flicker, stutter or morphing makes the motion look clearly wrong",
        "fair": "motion is followable but uneven: some jitter, flicker or speed changes",
        "good": "smooth, plausible motion with minor irregularities",
        "excellent": "fluid, stable, physically natural motion throughout",
    },
    "ta": {
        "bad": "the video shows little or nothing of what the prompt asks for",
        "poor": "key objects, counts, colours or actions from the prompt are missing or wrong",
        "fair": "the main subject matches the prompt but some details are missing or wrong",
        "good": "the video matches the prompt with only small deviations",
        "excellent": "every object, attribute, count, action and scene in the prompt is shown faithfully",
    },
    "overall": {
        "bad": "unusable: severe problems in quality, motion or alignment",
        "poor": "weak: at least one aspect is clearly unacceptable",
        "fair": "usable with visible weaknesses",
        "good": "a solid video with small weaknesses",
        "excellent": "an outstanding video in every aspect",
    },
}
"""Each rating level defined in words, per dimension: raters and the model learn the same definitions."""

ANSWER_OPEN: Final = "<answer>"
ANSWER_CLOSE: Final = "</answer>"
THINK_OPEN: Final = "<think>"
THINK_CLOSE: Final = "</think>"
REASONS_LABEL: Final = "reasons"
NO_REASONS: Final = "none"
SEGMENT_LABELS: Final = (
    "Slow pathway (few frames, high resolution):",
    "Fast pathway (all frames, low resolution):",
)


def level_text(level: str) -> str:
    """A level word exactly as it follows a dimension's colon in the answer: with its leading space."""
    return f" {level}"


def slot_prefix(dim: str) -> str:
    """The text that ends right before a dimension's level word, e.g. ``"visual quality:"``."""
    return f"{DIMENSION_NAMES[dim]}:"


def level_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """The token id of each level word as written in answers (leading space), worst first.

    Probability scoring reads one logit per level, so each must be exactly one token; raises ``ValueError``
    naming the tokenizer and the offending words otherwise (a tokenizer without these words cannot score).
    """
    ids = []
    bad = {}
    for level in LEVELS:
        pieces = tokenizer.encode(level_text(level), add_special_tokens=False)
        if len(pieces) != 1:
            bad[level_text(level)] = tokenizer.convert_ids_to_tokens(pieces)
        else:
            ids.append(int(pieces[0]))
    if bad:
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ValueError(
            f"tokenizer {name!r} splits level word(s) into several tokens: {bad}; probability scoring needs "
            "each level word (with its leading space, as in the answer) to be one token — use a Qwen "
            "tokenizer or rebuild the tiny tokenizer"
        )
    return tuple(ids)


SYSTEM_PROMPTS: Final = ("full", "compact")
"""System-prompt styles: ``full`` is the syllabus (every level defined in words, the reason codes, the
format; ~790 tokens on the tiny tokenizer); ``compact`` names the dimensions, levels and format only
(~60 tokens), for the tiny local model whose step time the syllabus would dominate. A model directory
records its style (:func:`qsave.modeling.model_prompt_style`), so training, scoring and serving agree."""


def system_prompt(style: str = "full") -> str:
    """The system turn of a style (see :data:`SYSTEM_PROMPTS`)."""
    if style not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown system prompt style {style!r}; use one of {', '.join(SYSTEM_PROMPTS)}")
    intro = (
        "You are a video quality assessor for AI-generated videos. Given a video and the prompt it was "
        "generated from, rate visual quality, motion quality, text-video alignment and overall quality "
        f"on five levels: {', '.join(LEVELS)}."
    )
    if style == "compact":
        return "\n".join(
            [
                intro,
                f"Answer inside {ANSWER_OPEN} {ANSWER_CLOSE}, one line per dimension, then the reason codes "
                f"of {', '.join(LOW_LEVELS)} ratings (or {NO_REASONS}):",
                _answer_block({dim: "<level>" for dim in DIMENSIONS}, "<codes>"),
            ]
        )
    lines = [intro, ""]
    for dim in DIMENSIONS:
        lines.append(f"{DIMENSION_NAMES[dim].capitalize()}:")
        lines.extend(f"- {level}: {SYLLABUS[dim][level]}." for level in LEVELS)
        lines.append("")
    lines.append(f"When a dimension is {', '.join(LOW_LEVELS)}, name its reasons with these codes:")
    for dim in REASON_DIMENSIONS:
        codes = "; ".join(f"{r.code} ({r.description})" for r in reasons_for(dim))
        lines.append(f"- {DIMENSION_NAMES[dim]}: {codes}.")
    lines += [
        "",
        f"Think step by step inside {THINK_OPEN} {THINK_CLOSE}, then answer inside {ANSWER_OPEN} "
        f"{ANSWER_CLOSE} with one line per dimension in this order, then the reasons "
        f"(comma-separated codes, or {NO_REASONS}):",
        _answer_block({dim: "<level>" for dim in DIMENSIONS}, "<codes>"),
    ]
    return "\n".join(lines)


def user_content(prompt: str, n_segments: int) -> list[dict[str, str]]:
    """The user turn as chat-template content: the video segment(s), then the generation prompt.

    Two segments are the SlowFast pathways (slow first); one segment is a plain uniformly sampled video.
    """
    if n_segments not in (1, 2):
        raise ValueError(f"a clip has 1 (uniform) or 2 (slow, fast) video segments, got {n_segments}")
    content: list[dict[str, str]] = []
    if n_segments == 1:
        content.append({"type": "video"})
    else:
        for label in SEGMENT_LABELS:
            content += [{"type": "text", "text": label}, {"type": "video"}]
    content.append(
        {
            "type": "text",
            "text": f'\nThe video was generated from the prompt: "{prompt.strip()}"\n'
            "Rate its visual quality, motion quality, text-video alignment and overall quality.",
        }
    )
    return content


def chat_messages(prompt: str, n_segments: int, style: str = "full") -> list[dict[str, Any]]:
    """System turn (the syllabus, or the compact prompt of ``style``) plus user turn, ready for
    ``processor.apply_chat_template``."""
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt(style)}]},
        {"role": "user", "content": user_content(prompt, n_segments)},
    ]


# --------------------------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    """One rating: a level per dimension, reasons per reason-dimension, and the rationale text."""

    levels: dict[str, str]
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rationale: str = ""


def _answer_block(levels: Mapping[str, str], reasons_text: str) -> str:
    lines = [ANSWER_OPEN, *(f"{slot_prefix(d)}{level_text(levels[d])}" for d in DIMENSIONS)]
    lines += [f"{REASONS_LABEL}: {reasons_text}", ANSWER_CLOSE]
    return "\n".join(lines)


def think_block(rationale: str = "") -> str:
    """``<think>\\n…\\n</think>\\n\\n``; an empty rationale gives Qwen3's no-think block."""
    body = rationale.strip()
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n\n" if body else f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"


def format_answer(answer: Answer, think: bool = True) -> str:
    """The assistant text for an :class:`Answer` (``think=False``: empty think block, scoring mode)."""
    missing = [d for d in DIMENSIONS if answer.levels.get(d) not in LEVELS]
    if missing:
        raise ValueError(f"answer lacks a valid level for {', '.join(missing)}: {answer.levels}")
    codes = [c for d in REASON_DIMENSIONS for c in answer.reasons.get(d, ())]
    return think_block(answer.rationale if think else "") + _answer_block(
        answer.levels, ", ".join(codes) or NO_REASONS
    )


def scoring_prefix() -> str:
    """The assistant text the scorer prefills: empty think, ``<answer>``, up to the first level slot."""
    return think_block("") + f"{ANSWER_OPEN}\n{slot_prefix(DIMENSIONS[0])}"


def slot_continuations() -> tuple[str, ...]:
    """The fixed text after each dimension's level word up to the next slot (one fewer than DIMENSIONS)."""
    return tuple(f"\n{slot_prefix(d)}" for d in DIMENSIONS[1:])


def level_char_spans(answer_text: str) -> dict[str, tuple[int, int]]:
    """Character span of each dimension's level word (with its leading space) in an answer text."""
    spans: dict[str, tuple[int, int]] = {}
    start = answer_text.find(ANSWER_OPEN)
    for dim in DIMENSIONS:
        match = re.compile(rf"^{re.escape(slot_prefix(dim))}( (?:{'|'.join(LEVELS)}))$", re.M).search(
            answer_text, max(start, 0)
        )
        if match is not None:
            spans[dim] = match.span(1)
    return spans


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rationale(levels: Mapping[str, str], reasons: Mapping[str, Sequence[str]], explanation: str) -> str:
    lines = []
    for dim in DIMENSIONS:
        name = DIMENSION_NAMES[dim].capitalize()
        level = levels[dim]
        found = reasons.get(dim, ())
        if dim == "overall":
            lines.append(f"{name}: weighing the aspects above, it is {level}.")
        elif found:
            described = "; ".join(f"{c.replace('_', ' ')} ({get_reason(c).description})" for c in found)
            lines.append(f"{name}: {described}, so it is {level}.")
        else:
            lines.append(f"{name}: {SYLLABUS[dim][level]}, so it is {level}.")
    if explanation.strip():
        lines.append(f"Raters noted: {explanation.strip()}")
    return "\n".join(lines)


def answer_from_row(row: Mapping[str, Any]) -> Answer:
    """The reference answer of a rated manifest row: levels from MOS, reasons of low-rated dimensions.

    Raises ``ValueError`` naming the row when a MOS is missing or a reason code is unknown.
    """
    video_id = row.get("video_id", "?")
    levels = {}
    for dim in DIMENSIONS:
        mos: Any = row.get(mos_column(dim))
        if _is_missing(mos):
            raise ValueError(f"row {video_id!r}: {mos_column(dim)} is empty; only rated rows make targets")
        levels[dim] = score_to_level(float(mos))
    reasons: dict[str, tuple[str, ...]] = {}
    for dim in REASON_DIMENSIONS:
        raw: Any = row.get(reasons_column(dim))
        codes = [] if _is_missing(raw) else [str(c) for c in raw]
        unknown = [c for c in codes if not is_known(c, dim)]
        if unknown:
            raise ValueError(f"row {video_id!r}: {reasons_column(dim)} has unknown code(s) {unknown}")
        if levels[dim] in LOW_LEVELS and codes:
            reasons[dim] = tuple(sorted(set(codes), key=[r.code for r in TAXONOMY].index))
    explanation = row.get("explanation")
    explanation = "" if _is_missing(explanation) else str(explanation)
    return Answer(levels=levels, reasons=reasons, rationale=_rationale(levels, reasons, explanation))


def build_target(row: Mapping[str, Any], think: bool = True) -> str:
    """The assistant training target of a rated manifest row (``think=False``: the scoring-mode variant)."""
    return format_answer(answer_from_row(row), think=think)


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class ParsedAnswer:
    """What a parser read from model output; ``levels`` holds only the dimensions it found."""

    levels: dict[str, str]
    reasons: dict[str, tuple[str, ...]]
    rationale: str
    unknown_reasons: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return all(d in self.levels for d in DIMENSIONS)


_STRICT = re.compile(
    rf"{re.escape(THINK_OPEN)}\n(?P<think>(?:(?!{re.escape(THINK_CLOSE)}).)*?)\n?{re.escape(THINK_CLOSE)}\n\n"
    rf"{re.escape(ANSWER_OPEN)}\n(?P<body>(?:(?!{re.escape(ANSWER_CLOSE)}).)*)\n{re.escape(ANSWER_CLOSE)}",
    re.S,
)
_CODE = re.compile(r"^[a-z][a-z_]*$")


def _group_reasons(codes: Sequence[str]) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    grouped: dict[str, list[str]] = {}
    unknown = []
    for code in codes:
        if is_known(code):
            dim = get_reason(code).dimension
            if code not in grouped.setdefault(dim, []):
                grouped[dim].append(code)
        else:
            unknown.append(code)
    return {d: tuple(v) for d, v in grouped.items()}, tuple(unknown)


def parse_strict(text: str) -> ParsedAnswer | None:
    """Parse an answer in exactly the trained format; ``None`` on any deviation (for rewards).

    Deviations: text outside the think/answer blocks (trailing whitespace and ``<|im_end|>`` aside),
    missing or reordered dimension lines, a word that is not a level, unknown or malformed reason codes.
    """
    stripped = text.strip()
    stripped = stripped.removesuffix("<|im_end|>").rstrip()
    match = _STRICT.fullmatch(stripped)
    if match is None:
        return None
    body = match.group("body").split("\n")
    if len(body) != len(DIMENSIONS) + 1:
        return None
    levels = {}
    for dim, line in zip(DIMENSIONS, body):
        prefix = slot_prefix(dim) + " "
        if not line.startswith(prefix) or line[len(prefix) :] not in LEVELS:
            return None
        levels[dim] = line[len(prefix) :]
    reasons_prefix = f"{REASONS_LABEL}: "
    if not body[-1].startswith(reasons_prefix):
        return None
    reasons_text = body[-1][len(reasons_prefix) :]
    codes = [] if reasons_text == NO_REASONS else reasons_text.split(", ")
    if any(not _CODE.match(c) for c in codes) or len(set(codes)) != len(codes):
        return None
    reasons, unknown = _group_reasons(codes)
    if unknown:
        return None
    return ParsedAnswer(levels=levels, reasons=reasons, rationale=match.group("think").strip())


def parse_lenient(text: str) -> ParsedAnswer:
    """Best-effort reading of any model output (for reports); never raises.

    Reads the answer block when there is one, else everything after ``</think>``, else the whole text;
    takes the last ``<dimension>: <level>`` per dimension, case-insensitively, and every known reason
    code (listed ones after ``reasons:`` or anywhere in the answer part); records what it could not read.
    """
    if not isinstance(text, str):
        return ParsedAnswer({}, {}, "", (), (f"output is {type(text).__name__}, not text",))
    problems = []
    think_start = text.find(THINK_OPEN)
    think_end = text.find(THINK_CLOSE)
    if think_end >= 0:
        body_start = think_start + len(THINK_OPEN) if 0 <= think_start < think_end else 0
        rationale = text[body_start:think_end]
        rest = text[think_end + len(THINK_CLOSE) :]
    else:
        problems.append(f"no {THINK_CLOSE}")
        rationale, rest = "", text
    open_at = rest.find(ANSWER_OPEN)
    if open_at < 0:
        problems.append(f"no {ANSWER_OPEN}")
    else:
        rest = rest[open_at + len(ANSWER_OPEN) :]
    close_at = rest.find(ANSWER_CLOSE)
    if close_at >= 0:
        rest = rest[:close_at]
    levels = {}
    for dim in DIMENSIONS:
        pattern = rf"{re.escape(DIMENSION_NAMES[dim])}\**\s*[:=\-]\s*\**\s*({'|'.join(LEVELS)})\b"
        found = re.findall(pattern, rest, re.I)
        if found:
            levels[dim] = found[-1].lower()
        else:
            problems.append(f"no level for {DIMENSION_NAMES[dim]}")
    listed = re.findall(rf"{REASONS_LABEL}\s*:\s*([^\n]*)", rest, re.I)
    candidates = re.split(r"[,;\s]+", listed[-1].lower()) if listed else re.findall(r"[a-z_]+", rest.lower())
    codes = [c for c in candidates if c and c != NO_REASONS]
    if listed:
        reasons, unknown = _group_reasons(codes)
    else:
        reasons, _ = _group_reasons([c for c in codes if is_known(c)])
        unknown = ()
    if unknown:
        problems.append(f"unknown reason code(s): {', '.join(unknown)}")
    return ParsedAnswer(
        levels=levels,
        reasons=reasons,
        rationale=rationale.strip(),
        unknown_reasons=unknown,
        problems=tuple(problems),
    )


def tokenizer_corpus() -> list[str]:
    """Texts a tiny tokenizer is trained on: the syllabus, prompts, answers and every taxonomy word."""
    texts = [*(system_prompt(s) for s in SYSTEM_PROMPTS), scoring_prefix(), *slot_continuations()]
    for dim in DIMENSIONS:
        for level in LEVELS:
            texts.append(f"{slot_prefix(dim)}{level_text(level)}\n")
            texts.append(f"{DIMENSION_NAMES[dim].capitalize()}: {SYLLABUS[dim][level]}, so it is {level}.")
    for reason in TAXONOMY:
        texts.append(
            f"{REASONS_LABEL}: {reason.code}\n{reason.code.replace('_', ' ')} ({reason.description})"
        )
    for n_segments in (1, 2):
        texts.extend(c.get("text", "") for c in user_content("a red ball rolls left on a beach", n_segments))
    texts.extend(_content_texts())
    return texts


def _content_texts(n_scenes: int = 400, max_seconds: float = 30.0) -> list[str]:
    """Scene prompts of the synthetic vocabulary (a fixed sample) and Qwen3-VL's frame timestamps
    (``<1.3 seconds>``, as its processor writes them): without them a tiny tokenizer spells every prompt
    word and timestamp letter by letter (a 46-token prompt, 11 tokens per timestamp)."""
    import numpy as np

    from qsave.scenes import describe, sample_scene

    rng = np.random.default_rng(0)
    texts = [describe(sample_scene(rng)) for _ in range(n_scenes)]
    texts += [f"<{tenths / 10:.1f} seconds>" for tenths in range(int(max_seconds * 10) + 1)]
    return texts
