"""SFT end to end on a small synthetic corpus: the loss goes down, terms are logged, the merged model reloads
and scores; final SFT chains from it with LoRA; an interrupted run resumed ends with the same weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import training_corpus
from safetensors.torch import load_file

from qsave.losses import dual_supervision_loss
from qsave.manifest import read_manifest
from qsave.modeling import is_fresh_tiny, load_model, model_sampler_config, tiny_model_path
from qsave.preprocess import load_clip
from qsave.prompts import level_token_ids
from qsave.schema import DIMENSIONS
from qsave.scoring import score_clips
from qsave.sft import CONFIG_FILE, SFTStageConfig, answer_loss, profile_configs, run_sft
from qsave.slowfast import LOCAL_SAMPLER
from qsave.synthetic import MANIFEST_NAME
from qsave.training import (
    LoraSettings,
    SupervisedCollator,
    SupervisedDataset,
    is_vision_tower,
    load_examples,
    lora_module_names,
    read_metrics,
)

FAST = SFTStageConfig(
    per_device_batch_size=2, save_steps=2, warmup_ratio=0.0, lr_scheduler_type="linear", think_fraction=0.0
)
"""Short sequences (no-think targets), few steps: these tests check machinery, not accuracy."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 24-clip synthetic dataset directory and its clip table (Parquet, relative clip paths)."""
    return training_corpus(tmp_path_factory.mktemp("sft"), 24)


def training_loss(model_dir: Path, corpus: tuple[Path, Path]) -> tuple[float, float]:
    """(ce, dist) of a model on the first 8 training examples, no-think targets, one batch."""
    dataset, table = corpus
    model, processor = load_model(str(model_dir))
    examples, _ = load_examples(read_manifest(dataset / MANIFEST_NAME), table)
    batch = SupervisedCollator(processor, 0.3)([SupervisedDataset(examples[:8], 0.0, 0)[i] for i in range(8)])
    labels, positions, targets = (batch.pop(k) for k in ("labels", "level_positions", "level_targets"))
    with torch.no_grad():
        logits = model(**batch).logits
    terms = dual_supervision_loss(
        logits, labels, positions, targets, level_token_ids(processor.tokenizer), lam=1.0
    )
    return float(terms.ce), float(terms.dist)


def test_answer_window_loss_equals_the_full_sequence_loss(corpus: tuple[Path, Path]) -> None:
    """The trainer projects only the answer window to logits; the terms must equal the full computation
    (answers of different lengths: one CoT, one no-think, right-padded)."""
    dataset, table = corpus
    model, processor = load_model("tiny")
    examples, _ = load_examples(read_manifest(dataset / MANIFEST_NAME), table)
    data = SupervisedDataset(examples[:2], 0.5, 0)
    data.think[:] = [True, False]
    batch = SupervisedCollator(processor, 0.3)([data[0], data[1]])
    level_ids = level_token_ids(processor.tokenizer)
    with torch.no_grad():
        windowed, outputs = answer_loss(model, batch, level_ids, lam=0.7)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "level_positions", "level_targets")}
        full = dual_supervision_loss(
            model(**inputs).logits,
            batch["labels"],
            batch["level_positions"],
            batch["level_targets"],
            level_ids,
            lam=0.7,
        )
    assert outputs.logits.shape[1] < batch["input_ids"].shape[1] / 2
    for name in ("total", "ce", "dist"):
        assert float(getattr(windowed, name)) == pytest.approx(float(getattr(full, name)), abs=1e-5)


def test_sft_learns_logs_both_terms_and_hands_over_a_scoring_model(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    dataset, table = corpus
    cfg = dataclasses.replace(
        FAST, per_device_batch_size=4, max_steps=4, learning_rate=5e-3, think_fraction=0.5, lam=1.0
    )  # λ = 1: with the default λ = 30 four steps move the score term first, the text term little
    model_dir = run_sft("tiny", dataset, table, cfg, tmp_path / "sft")
    assert model_dir == tmp_path / "sft" / "model"

    before, after = training_loss(tiny_model_path(), corpus), training_loss(model_dir, corpus)
    print("before (ce, dist)", before, "after", after)
    assert after[0] < before[0] - 0.5, (before, after)  # token cross-entropy
    assert after[0] + after[1] < before[0] + before[1]
    # The tower at rate 0 (the local default) is frozen: bit-identical after training, its projector not.
    assert cfg.vision_lr_multiplier == 0
    base_w = load_file(tiny_model_path() / "model.safetensors")
    trained_w = load_file(model_dir / "model.safetensors")
    tower = [n for n in base_w if is_vision_tower(n)]
    assert tower and all(torch.equal(base_w[n], trained_w[n]) for n in tower)
    assert any(not torch.equal(base_w[n], trained_w[n]) for n in base_w if "merger" in n)

    events = read_metrics(tmp_path / "sft" / "metrics.jsonl")
    steps = [e for e in events if "loss" in e]
    assert [e["step"] for e in steps] == list(range(1, 5))
    for event in steps:
        assert {"ce", "dist", "learning_rate", "grad_norm", "epoch"} <= set(event)
        assert event["loss"] == pytest.approx(event["ce"] + cfg.lam * event["dist"], rel=1e-4)
    assert (model_dir / "metrics.jsonl").read_text() == (tmp_path / "sft" / "metrics.jsonl").read_text()
    assert json.loads((model_dir / CONFIG_FILE).read_text())["config"]["max_steps"] == 4
    assert json.loads((tmp_path / "sft" / "skipped.json").read_text()) == []
    assert model_sampler_config(model_dir) == LOCAL_SAMPLER
    assert is_fresh_tiny(str(tiny_model_path())) and not is_fresh_tiny(str(model_dir))  # no re-calibration

    model, processor = load_model(str(model_dir))
    clip_path = pd.read_parquet(table)["clip_path"].iloc[0]
    [scores] = score_clips(model, processor, [load_clip(table.parent / clip_path)], ["a red ball"])
    assert set(scores.scores()) == set(DIMENSIONS)
    assert all(1.0 <= s <= 5.0 for s in scores.scores().values())

    # Final SFT: the same trainer from the stage's merged output, lower rate, here with LoRA.
    lora = LoraSettings(enabled=True, rank=4, alpha=8)
    final_cfg = dataclasses.replace(FAST, learning_rate=1e-3, max_steps=1, lora=lora)
    final_dir = run_sft(model_dir, dataset, table, final_cfg, tmp_path / "final")
    final_model, _ = load_model(str(final_dir))
    assert not lora_module_names(final_model)
    assert set(load_file(final_dir / "model.safetensors")) == set(load_file(model_dir / "model.safetensors"))
    assert not (final_dir / "adapter_config.json").exists()


def crash_after_save(step: int) -> Any:
    """A callback that simulates a crash right after the checkpoint of ``step`` is written."""
    from transformers import TrainerCallback  # after qsave's torchvision shim

    class CrashAfterSave(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == step:
                raise KeyboardInterrupt(f"simulated crash after step {step}")

    return CrashAfterSave()


def test_an_interrupted_run_resumed_or_collated_in_the_loop_ends_with_the_same_weights(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    dataset, table = corpus
    cfg = dataclasses.replace(FAST, max_steps=3, seed=7)
    straight = run_sft("tiny", dataset, table, cfg, tmp_path / "straight")

    with pytest.raises(KeyboardInterrupt):
        run_sft("tiny", dataset, table, cfg, tmp_path / "resumed", callbacks=[crash_after_save(2)])
    assert not (tmp_path / "resumed" / "model").exists()
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = run_sft("tiny", dataset, table, cfg, tmp_path / "resumed", resume=True)

    assert cfg.profile.dataloader_workers == 1  # the local default: clips collated in a worker process
    in_loop = dataclasses.replace(cfg, profile=dataclasses.replace(cfg.profile, dataloader_workers=0))
    loop = run_sft("tiny", dataset, table, in_loop, tmp_path / "in-loop")

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    c = load_file(loop / "model.safetensors")
    assert set(a) == set(b) == set(c)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
        assert torch.allclose(a[name], c[name], atol=1e-6, rtol=0), name
    losses = [
        [e["loss"] for e in read_metrics(d.parent / "metrics.jsonl") if "loss" in e]
        for d in (straight, resumed)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert read_metrics(resumed.parent / "metrics.jsonl")[-1]["step"] == 3


def test_caching_the_frozen_tower_changes_no_weight(
    corpus: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three epochs: the cache serves epochs 2 and 3 the tower outputs of epoch 1, and the weights match."""
    dataset, table = corpus
    cfg = dataclasses.replace(FAST, num_train_epochs=3, save_steps=100, projector_calibration_clips=4)
    assert cfg.profile.cache_frozen_tower and cfg.vision_lr_multiplier == 0  # the local default
    uncached = dataclasses.replace(cfg, profile=dataclasses.replace(cfg.profile, cache_frozen_tower=False))
    with caplog.at_level(logging.INFO, logger="qsave.tower_cache"):
        a = load_file(run_sft("tiny", dataset, table, cfg, tmp_path / "cached") / "model.safetensors")
    counts = re.findall(r"(\d+) clips computed, (\d+) taken from the cache", caplog.text)
    assert len(counts) == 1 and int(counts[0][1]) == 2 * int(counts[0][0])  # three epochs: 1 computed, 2 kept
    b = load_file(run_sft("tiny", dataset, table, uncached, tmp_path / "plain") / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name


def test_profiles_share_one_trainer_and_differ_only_in_config() -> None:
    local, production = profile_configs("local"), profile_configs("qwen3-vl-8b")
    assert type(local["sft"]) is type(production["final_sft"]) is SFTStageConfig
    assert production["sft"].profile.distributed == "deepspeed"
    assert local["sft"].profile.use_cpu and not production["sft"].profile.use_cpu
