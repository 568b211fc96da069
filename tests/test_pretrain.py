"""Pretraining of the tiny base: cached by config, deterministic, a loadable model that keeps the tiny
model's prompt and sampler contract, and its loss goes down — for captions and for the degradation
pretext (its views deterministic, every family applied and named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from qsave.modeling import (
    QUALITY_PRETRAINED_TINY,
    load_model,
    model_prompt_style,
    model_sampler_config,
    tiny_model_path,
)
from qsave.pretrain import (
    CLEAN,
    CONFIG_FILE,
    DEGRADATION_FAMILIES,
    DegradationDataset,
    DegradationPretrainConfig,
    PretrainConfig,
    degrade_view,
    pretrained_tiny_path,
    severity_bin,
)
from qsave.training import read_metrics

SMALL = PretrainConfig(n_clips=8, num_train_epochs=4.0, per_device_batch_size=4)


def test_pretrained_tiny_is_cached_deterministic_and_learns(tmp_path: Path) -> None:
    path = pretrained_tiny_path(SMALL, tmp_path / "a")
    assert path.name == f"tiny-pretrained-{SMALL.config_hash()}"
    assert (path / CONFIG_FILE).is_file()
    base = tiny_model_path(SMALL.tiny)
    assert model_prompt_style(path) == model_prompt_style(base) == SMALL.tiny.system_prompt
    assert model_sampler_config(path) == model_sampler_config(base)
    load_model(str(path))
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert pretrained_tiny_path(SMALL, tmp_path / "a") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt

    again = pretrained_tiny_path(SMALL, tmp_path / "b")
    first, second = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(bool((first[k] == second[k]).all()) for k in first)
    losses = [e["ce"] for e in read_metrics(path / "metrics.jsonl") if "ce" in e]
    assert losses[-1] < losses[0]
    assert PretrainConfig(corpus_seed=7).config_hash() != PretrainConfig().config_hash()


DEGRADE = DegradationPretrainConfig(
    n_clips=6, views_per_clip=2, num_train_epochs=3.0, per_device_batch_size=4
)


def test_degradation_views_are_deterministic_and_named() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    for family in DEGRADATION_FAMILIES:
        degraded = degrade_view(frames, family, 0.9, np.random.default_rng(1))
        assert degraded.shape == frames.shape and degraded.dtype == np.uint8
        assert not np.array_equal(degraded, frames), family
    assert degrade_view(frames, CLEAN, 0.0, rng) is frames
    dataset = DegradationDataset([{"clip_path": "unused"}] * 3, DEGRADE)
    assert len(dataset) == 6
    views = [dataset.view(i)[:2] for i in range(200)]
    assert views == [dataset.view(i)[:2] for i in range(200)]
    assert {f for f, _ in views} == {*DEGRADATION_FAMILIES, CLEAN}
    assert severity_bin(0.3) == "mild" and severity_bin(0.8) == "strong"


def test_quality_pretrained_tiny_is_its_own_cached_model_and_learns(tmp_path: Path) -> None:
    path = pretrained_tiny_path(DEGRADE, tmp_path)
    assert path.name == f"{QUALITY_PRETRAINED_TINY}-{DEGRADE.config_hash()}"
    assert (
        DEGRADE.config_hash()
        != PretrainConfig(n_clips=6, num_train_epochs=3.0, per_device_batch_size=4).config_hash()
    )
    assert model_sampler_config(path) == model_sampler_config(tiny_model_path(DEGRADE.tiny))
    load_model(str(path))
    losses = [e["ce"] for e in read_metrics(path / "metrics.jsonl") if "ce" in e]
    assert losses[-1] < losses[0]
