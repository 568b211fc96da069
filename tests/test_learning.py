"""End-to-end learning: the local recipe's three stages (SFT → GRPO → final SFT) on a small synthetic corpus
beat the untrained base on held-out clips, scored the way evaluation scores (greedy earlier slots).

The margin is small and robust on purpose (CI runs it on two shared cores); the full-size numbers come
from ``make run`` and ``benchmarks/bench_learning.py`` (README, ``docs/learning.md``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from conftest import training_corpus

from qsave.grpo import run_grpo
from qsave.manifest import read_manifest
from qsave.predictions import PredictConfig, predict_clips, srcc_by_dimension
from qsave.recipe import Recipe, stage_configs
from qsave.sft import run_sft
from qsave.synthetic import MANIFEST_NAME

N_CLIPS = 300
HELD_OUT = ("val", "test")
MARGIN = 0.2
"""Mean held-out SRCC over visual and motion quality must beat the untrained base's by this much."""
EACH = 0.1
"""…and each of the two on its own by this much (90 held-out clips: ±0.1 is noise)."""


def held_out_srcc(model_dir: str, dataset: Path, table: Path) -> dict[str, float]:
    manifest = read_manifest(dataset / MANIFEST_NAME)
    rows = manifest[manifest["split"].isin(HELD_OUT)].reset_index(drop=True)
    clips = pd.read_parquet(table)
    clips["clip_path"] = [str(table.parent / p) for p in clips["clip_path"]]
    preds = predict_clips(model_dir, clips, rows, PredictConfig(batch_size=16))
    assert not preds["error"].fillna("").astype(bool).any(), preds["error"].unique()
    return srcc_by_dimension(preds, rows)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], dict[str, float]]:
    root = tmp_path_factory.mktemp("learning")
    dataset, table = training_corpus(root, N_CLIPS, side=128, frames=24)  # the default corpus's clips
    sft, grpo, final = stage_configs(Recipe(sft_epochs=10.0, grpo_steps=2, final_sft_epochs=1.0))
    assert grpo is not None and final is not None
    model = run_sft("tiny", dataset, table, dataclasses.replace(sft, save_steps=10**6), root / "sft")
    model = run_grpo(str(model), dataset, table, dataclasses.replace(grpo, save_steps=10**6), root / "grpo")
    model = run_sft(str(model), dataset, table, dataclasses.replace(final, save_steps=10**6), root / "final")
    return held_out_srcc("tiny", dataset, table), held_out_srcc(str(model), dataset, table)


def test_three_stages_beat_the_untrained_base_on_held_out_clips(
    learned: tuple[dict[str, float], dict[str, float]],
) -> None:
    base, trained = learned
    print(f"held-out SRCC base {base} trained {trained}")
    gain = (trained["vq"] + trained["mq"]) / 2 - (base["vq"] + base["mq"]) / 2
    assert gain >= MARGIN, f"SRCC gain {gain:.2f} over the untrained base (base {base}, trained {trained})"
    assert all(trained[d] >= base[d] + EACH for d in ("vq", "mq")), (base, trained)
