"""Caption pretraining of the tiny base: cached by config, deterministic, a loadable model that keeps the
tiny model's prompt and sampler contract, and its caption loss goes down."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from qsave.modeling import load_model, model_prompt_style, model_sampler_config, tiny_model_path
from qsave.pretrain import CONFIG_FILE, PretrainConfig, pretrained_tiny_path
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
