"""The rating schema: dimensions, levels, and the manifest's columns.

A manifest has one row per video. MOS values are on the 1–5 scale; an unrated row (prompt-only data,
used for scoring) has every MOS empty. Reasons are taxonomy codes (see :mod:`qsave.taxonomy`), chosen
by the raters who rated that dimension Bad–Fair.
"""

from __future__ import annotations

import math
from typing import Final

DIMENSIONS: Final = ("vq", "mq", "ta", "overall")
"""Visual quality, motion quality, text-video alignment, overall — in answer order."""

REASON_DIMENSIONS: Final = ("vq", "mq", "ta")
"""Dimensions that carry attribution reasons (overall is explained by the other three)."""

DIMENSION_NAMES: Final = {
    "vq": "visual quality",
    "mq": "motion quality",
    "ta": "text-video alignment",
    "overall": "overall quality",
}

LEVELS: Final = ("bad", "poor", "fair", "good", "excellent")
"""The five rating levels, worst first; level i (0-based) means score i + 1."""

LOW_LEVELS: Final = ("bad", "poor", "fair")
"""Levels at which raters are asked why (Bad–Fair)."""

SCORE_MIN: Final = 1.0
SCORE_MAX: Final = 5.0

SPLITS: Final = ("train", "val", "test")


def level_to_score(level: str) -> int:
    """``"bad"`` → 1 … ``"excellent"`` → 5."""
    try:
        return LEVELS.index(level.strip().lower()) + 1
    except ValueError as exc:
        raise ValueError(f"unknown rating level {level!r}; expected one of {', '.join(LEVELS)}") from exc


def score_to_level(score: float) -> str:
    """The level nearest to a continuous 1–5 score (clamped; halves round up: 2.5 → fair)."""
    clamped = min(max(float(score), SCORE_MIN), SCORE_MAX)
    return LEVELS[math.floor(clamped + 0.5) - 1]


def is_low(score: float) -> bool:
    """True when a score rounds to Bad–Fair."""
    return score_to_level(score) in LOW_LEVELS


def mos_column(dim: str) -> str:
    return f"mos_{dim}"


def std_column(dim: str) -> str:
    return f"std_{dim}"


def count_column(dim: str) -> str:
    return f"n_raters_{dim}"


def reasons_column(dim: str) -> str:
    return f"reasons_{dim}"


ID_COLUMNS: Final = ("video_id", "video_path", "prompt", "generator")
MOS_COLUMNS: Final = tuple(mos_column(d) for d in DIMENSIONS)
STD_COLUMNS: Final = tuple(std_column(d) for d in DIMENSIONS)
COUNT_COLUMNS: Final = tuple(count_column(d) for d in DIMENSIONS)
REASON_COLUMNS: Final = tuple(reasons_column(d) for d in REASON_DIMENSIONS)

MANIFEST_COLUMNS: Final = (
    *ID_COLUMNS,
    *MOS_COLUMNS,
    *STD_COLUMNS,
    *COUNT_COLUMNS,
    *REASON_COLUMNS,
    "explanation",
    "split",
)
"""Every manifest has exactly these columns, in this order (extra columns are kept after them)."""
