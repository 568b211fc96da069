"""A simulated rater panel: ratings, screening, MOS, voted reasons and a templated explanation.

Each rater has a bias and a noise level; a few are unreliable (they click a random level most of the
time). Every video is rated by a random subset of the panel on each dimension: the rater perceives the
true quality plus their bias (with a small per-dimension part) plus Gaussian noise, and answers an
integer 1–5.

**Screening** (correlation with the panel, as in ITU-T P.913 §11.4 / BT.500 practice): a rater's
ratings are correlated (Pearson, over every video × dimension they rated) with the mean rating the
*other* raters gave the same items; raters below ``min_correlation`` are rejected. MOS is the mean of
the screened raters' ratings, with their sample standard deviation and count.

**Reasons**: on each of VQ/MQ/TA, the screened raters who rated Bad–Fair (≤ 3) vote. Each notices each
true artefact of that dimension with probability ``notice_base + notice_gain × severity`` and, now and
then, votes a reason that is not there. Reasons are voted only when the low raters are at least
``min_low_share`` of the screened raters, and a reason is kept when at least ``vote_share`` of the low
raters voted for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from qsave.schema import DIMENSION_NAMES, DIMENSIONS, LOW_LEVELS, REASON_DIMENSIONS, level_to_score
from qsave.schema import score_to_level as level_of
from qsave.taxonomy import codes_for, get_reason

LOW_RATING: Final = max(level_to_score(level) for level in LOW_LEVELS)
"""Ratings at or below this (Fair) ask the rater why."""


@dataclass(frozen=True)
class RaterPanelConfig:
    n_raters: int = 15
    raters_per_video: int = 9
    n_unreliable: int = 2
    bias_sd: float = 0.3
    dimension_bias_sd: float = 0.1
    noise_min: float = 0.35
    noise_max: float = 0.7
    unreliable_random_share: float = 0.7
    """How often an unreliable rater answers a uniformly random level instead of their perception."""
    min_correlation: float = 0.6
    notice_base: float = 0.35
    notice_gain: float = 0.6
    false_reason_rate: float = 0.06
    min_low_share: float = 0.3
    vote_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.raters_per_video <= self.n_raters:
            raise ValueError(
                f"raters_per_video={self.raters_per_video} must be between 1 and n_raters={self.n_raters}"
            )
        if not 0 <= self.n_unreliable < self.n_raters:
            raise ValueError(f"n_unreliable={self.n_unreliable} must be below n_raters={self.n_raters}")


@dataclass(frozen=True)
class Rater:
    rater_id: str
    bias: np.ndarray
    """(4,) additive bias per dimension, in :data:`qsave.schema.DIMENSIONS` order."""
    noise: float
    random_share: float = 0.0
    """Share of ratings that are uniformly random (0 for a reliable rater)."""


@dataclass(frozen=True)
class PanelRatings:
    """Everything the panel produced for N videos."""

    ratings: np.ndarray
    """(R, N, 4) integer ratings as floats; NaN where a rater did not rate a video."""
    kept: np.ndarray
    """(R,) True for raters that passed screening."""
    correlation: np.ndarray
    """(R,) each rater's correlation with the rest of the panel."""
    mos: np.ndarray
    """(N, 4) mean of the screened ratings."""
    std: np.ndarray
    count: np.ndarray
    reasons: list[dict[str, list[str]]]
    explanations: list[str]


def make_panel(cfg: RaterPanelConfig, rng: np.random.Generator) -> list[Rater]:
    """Draw a panel; the last ``n_unreliable`` raters are the unreliable ones."""
    panel = []
    for i in range(cfg.n_raters):
        bias = rng.normal(0.0, cfg.bias_sd) + rng.normal(0.0, cfg.dimension_bias_sd, len(DIMENSIONS))
        unreliable = i >= cfg.n_raters - cfg.n_unreliable
        panel.append(
            Rater(
                rater_id=f"rater-{i:02d}",
                bias=bias,
                noise=float(rng.uniform(cfg.noise_min, cfg.noise_max)),
                random_share=cfg.unreliable_random_share if unreliable else 0.0,
            )
        )
    return panel


def collect_ratings(
    true_scores: np.ndarray, panel: Sequence[Rater], raters_per_video: int, rng: np.random.Generator
) -> np.ndarray:
    """(R, N, 4) integer ratings of ``true_scores`` (N, 4), NaN where a rater did not rate a video."""
    n_videos = len(true_scores)
    ratings = np.full((len(panel), n_videos, len(DIMENSIONS)), np.nan)
    for v in range(n_videos):
        for r in rng.choice(len(panel), size=raters_per_video, replace=False):
            rater = panel[r]
            perceived = true_scores[v] + rater.bias + rng.normal(0.0, rater.noise, len(DIMENSIONS))
            honest = np.clip(np.round(perceived), 1, 5)
            random = rng.integers(1, 6, len(DIMENSIONS)).astype(np.float64)
            ratings[r, v] = np.where(rng.random(len(DIMENSIONS)) < rater.random_share, random, honest)
    return ratings


def panel_correlation(ratings: np.ndarray) -> np.ndarray:
    """(R,) Pearson correlation of each rater with the mean of the other raters on the same items.

    NaN for a rater with fewer than three co-rated items or constant ratings (no evidence either way).
    """
    n_raters = ratings.shape[0]
    flat = ratings.reshape(n_raters, -1)
    rated = ~np.isnan(flat)
    totals = np.nansum(flat, axis=0)
    counts = rated.sum(axis=0)
    out = np.full(n_raters, np.nan)
    for r in range(n_raters):
        others = counts - rated[r]
        items = rated[r] & (others > 0)
        if items.sum() < 3:
            continue
        mine = flat[r, items]
        rest = (totals[items] - mine) / others[items]
        if mine.std() == 0.0 or rest.std() == 0.0:
            continue
        out[r] = float(np.corrcoef(mine, rest)[0, 1])
    return out


def screen(ratings: np.ndarray, min_correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """(kept, correlation): raters whose panel correlation is at least ``min_correlation`` are kept.

    A rater without enough evidence (NaN correlation) is kept.
    """
    correlation = panel_correlation(ratings)
    kept = np.isnan(correlation) | (correlation >= min_correlation)
    return kept, correlation


def aggregate(ratings: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mos, std, count), each (N, 4), from the kept raters' ratings.

    A video none of whose raters was kept falls back to all of its raters (so no row is left unrated).
    """
    screened = np.where(kept[:, None, None], ratings, np.nan)
    count = (~np.isnan(screened)).sum(axis=0)
    orphaned = count == 0
    screened = np.where(orphaned[None], ratings, screened)
    count = (~np.isnan(screened)).sum(axis=0)
    mos = np.nanmean(screened, axis=0)
    squares = np.nansum((screened - mos[None]) ** 2, axis=0)
    std = np.sqrt(squares / np.maximum(count - 1, 1))
    return mos, std, count


def vote_reasons(
    ratings: np.ndarray,
    kept: np.ndarray,
    severities: Sequence[Mapping[str, float]],
    cfg: RaterPanelConfig,
    rng: np.random.Generator,
) -> list[dict[str, list[str]]]:
    """Per video, per reason dimension: the reasons kept by the low raters' vote (taxonomy order)."""
    out = []
    for v, truth in enumerate(severities):
        chosen: dict[str, list[str]] = {}
        for d in REASON_DIMENSIONS:
            column = DIMENSIONS.index(d)
            votes_of = ratings[kept, v, column]
            votes_of = votes_of[~np.isnan(votes_of)]
            n_low = int((votes_of <= LOW_RATING).sum())
            chosen[d] = []
            if n_low == 0 or n_low < cfg.min_low_share * len(votes_of):
                continue
            codes = codes_for(d)
            true_here = {c: s for c, s in truth.items() if c in codes}
            absent = [c for c in codes if c not in true_here]
            votes = dict.fromkeys(codes, 0)
            for _ in range(n_low):
                for code, severity in true_here.items():
                    if rng.random() < min(0.95, cfg.notice_base + cfg.notice_gain * severity):
                        votes[code] += 1
                if absent and rng.random() < cfg.false_reason_rate:
                    votes[str(rng.choice(absent))] += 1
            needed = max(1, math.ceil(cfg.vote_share * n_low))
            chosen[d] = [c for c in codes if votes[c] >= needed]
        out.append(chosen)
    return out


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def explain(mos: Sequence[float], reasons: Mapping[str, Sequence[str]]) -> str:
    """A templated explanation of one video's ratings (MOS in DIMENSIONS order)."""
    sentences = []
    for d, score in zip(DIMENSIONS, mos):
        level = level_of(score)
        sentence = f"{DIMENSION_NAMES[d].capitalize()} is {level} ({score:.1f}/5)"
        codes = list(reasons.get(d, ()))
        if codes:
            causes = [f"{code.replace('_', ' ')} ({get_reason(code).description})" for code in codes]
            sentence += f": raters point to {_join(causes)}"
        elif d in REASON_DIMENSIONS and level in LOW_LEVELS:
            sentence += ": raters did not agree on a single cause"
        sentences.append(sentence + ".")
    return " ".join(sentences)


def rate(
    true_scores: np.ndarray,
    severities: Sequence[Mapping[str, float]],
    cfg: RaterPanelConfig,
    rng: np.random.Generator,
    panel: Sequence[Rater] | None = None,
) -> PanelRatings:
    """Rate N videos with true scores (N, 4) and artefact severities; a panel is drawn unless given."""
    if len(true_scores) != len(severities):
        raise ValueError(f"{len(true_scores)} true score rows but {len(severities)} severity maps")
    raters = list(panel) if panel is not None else make_panel(cfg, rng)
    if cfg.raters_per_video > len(raters):
        raise ValueError(f"raters_per_video={cfg.raters_per_video} exceeds the panel's {len(raters)} raters")
    ratings = collect_ratings(np.asarray(true_scores, dtype=np.float64), raters, cfg.raters_per_video, rng)
    kept, correlation = screen(ratings, cfg.min_correlation)
    mos, std, count = aggregate(ratings, kept)
    reasons = vote_reasons(ratings, kept, severities, cfg, rng)
    explanations = [explain(row, chosen) for row, chosen in zip(mos, reasons)]
    return PanelRatings(ratings, kept, correlation, mos, std, count, reasons, explanations)
