"""GRPO on the tiny Qwen3-VL: video in every log-prob pass, rollouts scored, the merged model reloads."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from qsave.grpo import GRPOStageConfig, SampleVideo, build_trainer, grpo_row, run_grpo
from qsave.inputs import build_inputs
from qsave.manifest import read_manifest
from qsave.modeling import SAMPLER_FILE, load_model, tiny_model_path
from qsave.preprocess import load_clip, preprocess_shard
from qsave.slowfast import LOCAL_SAMPLER
from qsave.synthetic import MANIFEST_NAME, SynthConfig, generate_corpus
from qsave.training import (
    LANGUAGE_LINEAR_MODULES,
    METRICS_FILE,
    SKIPPED_FILE,
    LoraSettings,
    is_vision_tower,
    load_examples,
)
from qsave.video import DecodeLimits

TINY_RUN = GRPOStageConfig(
    num_generations=2,
    per_device_train_batch_size=2,
    max_completion_length=8,
    max_steps=1,
    lora=LoraSettings(enabled=True, rank=4, alpha=8),
    beta=0.1,
    learning_rate=1e-3,
    save_steps=1000,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A four-clip synthetic dataset directory and its preprocess table (clips.parquet)."""
    root = tmp_path_factory.mktemp("grpo-corpus")
    generate_corpus(SynthConfig(n=4, workers=1, width=64, height=64, num_frames=16), root / "data")
    manifest = read_manifest(root / "data" / MANIFEST_NAME)
    result = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), root / "cache", base_dir=root / "data")
    table = root / "clips.parquet"
    result.table.to_parquet(table)
    return root / "data", table


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model_path()


def all_rows(corpus: tuple[Path, Path]) -> list[dict[str, Any]]:
    data, table = corpus
    split = str(read_manifest(data / MANIFEST_NAME)["split"].iloc[0])
    examples, skipped = load_examples(read_manifest(data / MANIFEST_NAME), table, split)
    assert examples and not skipped
    return [grpo_row(e) for e in examples]


def vision_tower(model: Any) -> torch.nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    visual: torch.nn.Module = base.model.visual
    return visual


@contextmanager
def counting(module: torch.nn.Module) -> Iterator[list[int]]:
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def test_grpo_rows_carry_what_rollouts_and_rewards_read(corpus: tuple[Path, Path]) -> None:
    manifest = read_manifest(corpus[0] / MANIFEST_NAME).set_index("video_id")
    for row in all_rows(corpus):
        assert Path(row["clip_path"]).is_file() and row["prompt"] == manifest.loc[row["video_id"], "prompt"]
        assert row["mos_overall"] == pytest.approx(float(manifest.loc[row["video_id"], "mos_overall"]))
        assert isinstance(row["reasons_vq"], list) and all(isinstance(c, str) for c in row["reasons_vq"])
    json.dumps(all_rows(corpus))  # plain values: a datasets.Dataset holds them as they are


def test_every_logprob_pass_runs_the_vision_tower(
    corpus: tuple[Path, Path], tiny: Path, tmp_path: Path
) -> None:
    """Old policy (num_iterations=2), reference (β>0, adapter off) and policy loss all encode the video."""
    model, processor = load_model(str(tiny))
    cfg = replace(TINY_RUN, num_iterations=2)
    trainer = build_trainer(model, processor, all_rows(corpus), cfg, tmp_path / "ckpt")
    assert cfg.profile.dataloader_workers > 0 and trainer.args.dataloader_num_workers == 0  # none to idle
    passes: list[tuple[bool, bool, int]] = []
    original = trainer._get_per_token_logps_and_entropies

    def recorded(*args: Any, **kwargs: Any) -> Any:
        with counting(vision_tower(trainer.model)) as calls:
            out = original(*args, **kwargs)
        passes.append((torch.is_grad_enabled(), bool(kwargs.get("compute_entropy")), calls[0]))
        return out

    trainer._get_per_token_logps_and_entropies = recorded
    with counting(vision_tower(trainer.model)) as total:
        trainer.train()
    # trl's order: old policy and reference under no_grad, then the policy pass of the loss
    assert [(grad, entropy) for grad, entropy, _ in passes] == [(False, False), (False, False), (True, True)]
    assert all(calls >= 1 for _, _, calls in passes), passes
    assert total[0] > sum(calls for _, _, calls in passes)  # generation encoded the video too


def test_full_fine_tuning_keeps_the_vision_tower_at_its_rate(
    corpus: tuple[Path, Path], tiny: Path, tmp_path: Path
) -> None:
    """Full fine-tuning: the tower trains at ``vision_lr_multiplier`` × lr (0: frozen, no gradient, not
    in the optimizer), the projector and the language model at the full rate — as in SFT."""
    model, processor = load_model(str(tiny))
    cfg = replace(TINY_RUN, lora=LoraSettings(enabled=False), beta=0.0, vision_lr_multiplier=0.5)
    trainer = build_trainer(model, processor, all_rows(corpus), cfg, tmp_path / "ckpt")

    def rates_by_part(optimizer: Any) -> dict[tuple[bool, bool], float | None]:
        rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        return {
            (is_vision_tower(name), "merger" in name): rate.get(id(p)) if p.requires_grad else None
            for name, p in trainer.model.named_parameters()
        }

    assert rates_by_part(trainer.create_optimizer()) == {
        (True, False): 0.5 * cfg.learning_rate,
        (False, True): cfg.learning_rate,
        (False, False): cfg.learning_rate,
    }
    model, processor = load_model(str(tiny))
    fixed = replace(cfg, vision_lr_multiplier=0.0)
    trainer = build_trainer(model, processor, all_rows(corpus), fixed, tmp_path / "ckpt0")
    assert rates_by_part(trainer.create_optimizer()) == {
        (True, False): None,
        (False, True): cfg.learning_rate,
        (False, False): cfg.learning_rate,
    }
    with pytest.raises(ValueError, match="vision_lr_multiplier"):
        replace(cfg, vision_lr_multiplier=-1.0)


def test_logprobs_match_the_rollout_and_depend_on_the_video(
    corpus: tuple[Path, Path], tiny: Path, tmp_path: Path
) -> None:
    model, processor = load_model(str(tiny))
    rows = all_rows(corpus)[:2]
    trainer = build_trainer(
        model, processor, rows, replace(TINY_RUN, lora=LoraSettings(), beta=0.0), tmp_path
    )
    clips = [load_clip(r["clip_path"]) for r in rows]
    prompts = [r["prompt"] + " " * i for i, r in enumerate(rows)]  # different lengths: left padding
    batch = build_inputs(processor, clips, prompts)
    kwargs = batch.model_kwargs
    n_new = 6
    with torch.no_grad():
        out = trainer.model.generate(
            **kwargs,
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    completion = out.sequences[:, -n_new:]
    rollout = torch.stack(out.logits, dim=1).float().log_softmax(-1).gather(-1, completion[..., None])[..., 0]
    mask = torch.cat([kwargs["attention_mask"], torch.ones_like(completion)], dim=1)
    grids = kwargs["video_grid_thw"].split(2)  # two segments (slow, fast) per clip
    pixels = kwargs["pixel_values_videos"].split([int(g.prod(-1).sum()) for g in grids])
    videos = [SampleVideo(p, g) for p, g in zip(pixels, grids)]

    def logps(videos: list[SampleVideo]) -> torch.Tensor:
        with torch.no_grad(), trainer._using_videos(videos):
            result: torch.Tensor = trainer._get_per_token_logps_and_entropies(
                trainer.model, out.sequences, mask, n_new, batch_size=1
            )[0]
        return result

    assert torch.allclose(logps(videos), rollout, atol=1e-4)
    swapped = logps(videos[::-1])
    assert (swapped - rollout).abs().max() > 1e-3
    with pytest.raises(RuntimeError, match="without the batch's video"):
        trainer._get_per_token_logps_and_entropies(trainer.model, out.sequences, mask, n_new)


def test_run_grpo_logs_rewards_and_kl_and_saves_a_loadable_merged_model(
    corpus: tuple[Path, Path], tiny: Path, tmp_path: Path
) -> None:
    data, table = corpus
    split = str(read_manifest(data / MANIFEST_NAME)["split"].iloc[0])
    cfg = replace(TINY_RUN, max_steps=2, split=split)
    model_dir = run_grpo(tiny, data, table, cfg, tmp_path / "out")

    steps = [json.loads(line) for line in (tmp_path / "out" / METRICS_FILE).read_text().splitlines()]
    per_step = [s for s in steps if "reward" in s]
    assert len(per_step) == 2
    for step in per_step:
        for name in ("format_reward", "accuracy_reward", "attribution_reward"):
            assert math.isfinite(step[f"rewards/{name}/mean"])
        assert math.isfinite(step["kl"]) and step["completions/mean_length"] > 0
    assert json.loads((tmp_path / "out" / SKIPPED_FILE).read_text()) == []

    model, processor = load_model(str(model_dir))
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (model_dir / SAMPLER_FILE).is_file()
    base, _ = load_model(str(tiny))
    changed = [
        name
        for (name, p), (_, q) in zip(model.named_parameters(), base.named_parameters())
        if not torch.equal(p, q)
    ]
    # merged LoRA can only have moved the language model's targeted projections (an untrained base writes
    # no parseable answer, so every reward is 0 and the advantages — hence the updates — may all be 0)
    assert all(".language_model." in n and n.split(".")[-2] in LANGUAGE_LINEAR_MODULES for n in changed), (
        changed
    )
    clip = load_clip(all_rows(corpus)[0]["clip_path"])
    with torch.no_grad():
        logits = model(**build_inputs(processor, [clip], ["a prompt"]).model_kwargs).logits
    assert torch.isfinite(logits).all()
