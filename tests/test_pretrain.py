"""Pretraining of the tiny base: cached by config, deterministic, a loadable model that keeps the tiny
model's prompt and sampler contract, and its loss goes down — for captions, for the degradation
pretext (its views deterministic, every family applied and named) and for caption matching (every
alteration changes exactly the attribute it names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from qsave.modeling import (
    MATCHING_PRETRAINED_TINY,
    QUALITY_PRETRAINED_TINY,
    load_model,
    model_prompt_style,
    model_sampler_config,
    tiny_model_path,
)
from qsave.pretrain import (
    ALTERATIONS,
    CLEAN,
    CONFIG_FILE,
    DEGRADATION_FAMILIES,
    DegradationDataset,
    DegradationPretrainConfig,
    MatchingDataset,
    MatchingPretrainConfig,
    PretrainConfig,
    alter_caption,
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


def test_pretrained_cache_key_follows_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key covers the source the pretraining runs (corpus, preprocessing, training), so an edit there
    rebuilds instead of loading a model trained by older code."""
    import qsave.pretrain as pretrain

    before = PretrainConfig().config_hash()
    monkeypatch.setattr(pretrain, "source_hash", lambda *files: "edited")
    assert PretrainConfig().config_hash() != before


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


CAPTION = (
    "two yellow circles moving up and one red square moving down over a grey studio background, static camera"
)


def test_each_alteration_changes_the_attribute_it_names() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        words = CAPTION.split()
        altered = {a: alter_caption(CAPTION, a, rng) for a in ALTERATIONS}
        changed = {
            a: [w for w, v in zip(words, str(t).split(), strict=False) if w != v] for a, t in altered.items()
        }
        assert changed["wrong_color"] and changed["wrong_color"][0] == "yellow"
        assert changed["wrong_shape"] and changed["wrong_shape"][0] == "circles"
        assert str(altered["wrong_count"]).startswith(
            ("one yellow circle moving", "three yellow circles moving")
        )
        assert changed["wrong_direction"] == ["up"]
        assert str(altered["wrong_scene"]).endswith(" background, static camera")
        assert "grey studio" not in str(altered["wrong_scene"])
        assert str(altered["missing_object"]).count(" moving ") == 3
        assert all(t != CAPTION and "red square moving down" in str(t) for t in altered.values())
    empty = "no objects over a blue sky background, static camera"
    assert alter_caption(empty, "wrong_color", rng) is None
    assert str(alter_caption(empty, "missing_object", rng)).startswith("one ")
    with pytest.raises(ValueError, match="unknown alteration"):
        alter_caption(CAPTION, "wrong_mood", rng)


MATCH = MatchingPretrainConfig(n_clips=6, views_per_clip=2, num_train_epochs=3.0, per_device_batch_size=4)


def test_matching_pairs_are_deterministic_and_balanced() -> None:
    cfg = MatchingPretrainConfig()
    dataset = MatchingDataset([{"clip_path": "unused", "answer": CAPTION}] * 50, cfg)
    pairs = [dataset.pair(i) for i in range(len(dataset))]
    assert pairs == [dataset.pair(i) for i in range(len(dataset))]
    answers = [answer for _, answer in pairs]
    assert 0.4 < answers.count("yes") / len(answers) < 0.6
    assert {a for a in answers if a != "yes"} == {f"no, {a.replace('_', ' ')}" for a in cfg.alterations}
    assert "missing_object" not in cfg.alterations  # its longer caption is a cue without the video
    assert all((shown == CAPTION) == (answer == "yes") for shown, answer in pairs)
    with pytest.raises(ValueError, match="alterations"):
        MatchingPretrainConfig(alterations=("wrong_mood",))


def test_matching_pretrained_tiny_is_its_own_cached_model_and_learns(tmp_path: Path) -> None:
    path = pretrained_tiny_path(MATCH, tmp_path)
    assert path.name == f"{MATCHING_PRETRAINED_TINY}-{MATCH.config_hash()}"
    load_model(str(path))
    losses = [e["ce"] for e in read_metrics(path / "metrics.jsonl") if "ce" in e]
    assert losses[-1] < losses[0]
