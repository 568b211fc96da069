"""Synthetic prediction sets with known structure, shared by the evaluation, report and CLI tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qsave.schema import DIMENSIONS, LEVELS, REASON_DIMENSIONS
from qsave.taxonomy import codes_for

GENERATOR_QUALITY = {"gen_a": 1.8, "gen_b": 2.6, "gen_c": 3.3, "gen_d": 4.1}


def make_predictions(
    n: int = 120, noise: float = 0.4, seed: int = 0, probs: bool = True, reasons: bool = True
) -> pd.DataFrame:
    """A predictions file's rows: ``video_id``, ``generator``, ``mos_/std_/pred_<dim>``, and optionally
    ``prob_<dim>_<level>`` (a discretised Gaussian around the prediction) and reason columns (raters
    give two codes to videos rated below 3; the model repeats the first and sometimes adds a wrong one).
    The MOS depends only on ``n`` (rng seeded with 0), so sets made with different ``seed`` share it."""
    truth_rng = np.random.default_rng(0)
    rng = np.random.default_rng(seed + 1)
    names = list(GENERATOR_QUALITY)
    generators = [names[i % len(names)] for i in range(n)]
    frame = pd.DataFrame({"video_id": [f"vid{i:04d}" for i in range(n)], "generator": generators})
    levels = np.arange(1, len(LEVELS) + 1)
    for dim in DIMENSIONS:
        mos = np.clip([GENERATOR_QUALITY[g] for g in generators] + truth_rng.normal(0, 0.6, n), 1, 5)
        pred = np.clip(mos + rng.normal(0, noise, n), 1, 5)
        frame[f"mos_{dim}"] = mos
        frame[f"std_{dim}"] = truth_rng.uniform(0.3, 1.0, n)
        frame[f"pred_{dim}"] = pred
        if probs:
            weights = np.exp(-((levels[None, :] - pred[:, None]) ** 2) / (2 * 0.6**2))
            weights /= weights.sum(axis=1, keepdims=True)
            for j, level in enumerate(LEVELS):
                frame[f"prob_{dim}_{level}"] = weights[:, j]
        if dim in REASON_DIMENSIONS:
            codes = codes_for(dim)
            truth = [[str(c) for c in truth_rng.choice(codes, 2, replace=False)] for _ in mos]
            truth = [t if m < 3 else [] for t, m in zip(truth, mos)]
            if reasons:
                frame[f"reasons_{dim}"] = truth
                frame[f"pred_reasons_{dim}"] = [
                    t[:1] + ([codes[0]] if rng.random() < 0.2 else []) for t in truth
                ]
    return frame
