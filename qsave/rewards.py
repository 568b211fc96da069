"""GRPO rewards: plain functions with trl's reward-function signature.

Each takes ``(prompts, completions, **kwargs)`` and returns one float per completion; trl passes every
dataset column as a keyword argument holding one value per completion (a prompt's row repeated for each of
its generations), so the manifest's ``mos_*`` and ``reasons_*`` columns arrive as ``kwargs``.

- :func:`format_reward` — 1 when :func:`qsave.prompts.parse_strict` reads the completion, else 0.
- :func:`accuracy_reward` — mean over dimensions of exp(−(s − MOS)² / 2σ²), where s is the score (1–5) of the
  level the completion wrote for that dimension; a dimension without a level scores 0. Optional
  per-dimension weights make it a weighted mean (e.g. only the dimension the samples disagree on).
- :func:`attribution_reward` — mean over reason dimensions of the F1 between the completion's reason codes
  and the reference answer's (the raters' reasons of the dimensions whose MOS level is Bad–Fair, exactly
  as :func:`qsave.prompts.answer_from_row` builds SFT targets); both empty counts as agreement (1). A
  completion that does not rate every dimension gets 0, so an unreadable answer earns no credit for
  "no reasons".

**Why the completion's levels, not the policy's level distribution.** GRPO ranks the *sampled*
completions of a prompt against each other. The policy's distribution at the first level slot is the same
for every completion in a group, so a reward read from it would give the group identical values there
(zero advantage, no signal), and it would not reward the level the completion actually chose. The
sampled level is the action being reinforced, so its score is what the accuracy reward measures.

Accuracy and attribution read the completion with :func:`qsave.prompts.parse_lenient` (format is the
format reward's business, so a slightly malformed answer with the right levels still earns accuracy);
malformed text is never an error.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from qsave.prompts import answer_from_row, parse_lenient, parse_strict
from qsave.schema import DIMENSIONS, REASON_DIMENSIONS, level_to_score, mos_column, reasons_column

ACCURACY_SIGMA: Final = 0.5
"""Width of the Gaussian in |score − MOS| (on the 1–5 scale)."""
EQUAL_WEIGHTS: Final = (1.0, 1.0, 1.0, 1.0)
"""Accuracy weights of the dimensions, in :data:`qsave.schema.DIMENSIONS` order: a plain mean."""

RewardFunc = Callable[..., list[float]]

ROW_COLUMNS: Final = (
    "video_id",
    *(mos_column(d) for d in DIMENSIONS),
    *(reasons_column(d) for d in REASON_DIMENSIONS),
)
"""The dataset columns the rewards read (``video_id`` only to name a bad row)."""


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or trl's conversational ``[{"role": …, "content": …}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    raise TypeError(f"a completion must be text or a list of chat messages, got {type(completion).__name__}")


def _rows(n: int, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset row of each completion, rebuilt from trl's per-column keyword arguments."""
    missing = [c for c in ROW_COLUMNS if c not in kwargs and c != "video_id"]
    if missing:
        raise KeyError(
            f"reward needs dataset column(s) {', '.join(missing)}; build the GRPO dataset from a rated "
            "manifest (qsave.grpo.load_rows)"
        )
    columns = [c for c in ROW_COLUMNS if c in kwargs]
    for column in columns:
        if len(kwargs[column]) != n:
            raise ValueError(f"column {column} has {len(kwargs[column])} values for {n} completions")
    return [{c: kwargs[c][i] for c in columns} for i in range(n)]


def check_dimension_weights(weights: Sequence[float]) -> None:
    """Raise unless ``weights`` holds one non-negative weight per dimension, not all zero."""
    if len(weights) != len(DIMENSIONS) or any(w < 0 for w in weights) or not any(weights):
        raise ValueError(
            f"accuracy weights {tuple(weights)}: give one non-negative weight per dimension "
            f"({', '.join(DIMENSIONS)}), not all zero"
        )


def score_accuracy(
    levels: Mapping[str, str],
    mos: Mapping[str, float],
    sigma: float,
    weights: Sequence[float] = EQUAL_WEIGHTS,
) -> float:
    """Weighted mean over dimensions of exp(−(score(level) − MOS)² / 2σ²); a dimension without a level
    gives 0."""
    if sigma <= 0:
        raise ValueError(f"accuracy sigma must be positive, got {sigma}")
    check_dimension_weights(weights)
    total = 0.0
    for dim, weight in zip(DIMENSIONS, weights, strict=True):
        if dim in levels and weight:
            total += weight * math.exp(
                -((level_to_score(levels[dim]) - float(mos[dim])) ** 2) / (2 * sigma**2)
            )
    return total / sum(weights)


def reason_f1(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """F1 between two sets of reason codes; 1 when both are empty (agreeing that nothing is wrong)."""
    pred, ref = set(predicted), set(reference)
    if not pred and not ref:
        return 1.0
    hits = len(pred & ref)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(pred), hits / len(ref)
    return 2 * precision * recall / (precision + recall)


def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for a completion in exactly the trained answer format (strict parser), else 0.0."""
    return [0.0 if parse_strict(completion_text(c)) is None else 1.0 for c in completions]


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    sigma: float = ACCURACY_SIGMA,
    dimension_weights: Sequence[float] = EQUAL_WEIGHTS,
    **kwargs: Any,
) -> list[float]:
    """Gaussian closeness of each written level's score to the MOS, averaged over the four dimensions
    (weighted by ``dimension_weights``)."""
    rewards = []
    for completion, row in zip(completions, _rows(len(completions), kwargs), strict=True):
        mos = {d: float(row[mos_column(d)]) for d in DIMENSIONS}
        if any(math.isnan(v) for v in mos.values()):
            raise ValueError(f"row {row.get('video_id', '?')!r}: a MOS is empty; GRPO needs rated rows")
        rewards.append(
            score_accuracy(parse_lenient(completion_text(completion)).levels, mos, sigma, dimension_weights)
        )
    return rewards


def attribution_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Mean per-dimension F1 of the completion's reasons against the reference answer's; 0 if not rated."""
    rewards = []
    for completion, row in zip(completions, _rows(len(completions), kwargs), strict=True):
        reference = answer_from_row(row).reasons
        parsed = parse_lenient(completion_text(completion))
        if not parsed.complete:
            rewards.append(0.0)
            continue
        scores = [reason_f1(parsed.reasons.get(d, ()), reference.get(d, ())) for d in REASON_DIMENSIONS]
        rewards.append(sum(scores) / len(scores))
    return rewards


def reward_functions(
    sigma: float = ACCURACY_SIGMA, dimension_weights: Sequence[float] = EQUAL_WEIGHTS
) -> list[RewardFunc]:
    """The rewards in trl order (format, accuracy, attribution); trl names them after the functions."""
    check_dimension_weights(dimension_weights)
    accuracy = functools.partial(accuracy_reward, sigma=sigma, dimension_weights=tuple(dimension_weights))
    return [format_reward, accuracy, attribution_reward]
