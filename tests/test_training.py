"""Common training pieces: examples and skip reasons, the collator, LoRA merge hand-over, optimizer groups,
checkpoint discovery, and the profiles' configs (the production one cannot run here, so it is validated)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from qsave.inputs import IGNORE_INDEX
from qsave.losses import soft_level_targets
from qsave.manifest import read_manifest
from qsave.modeling import (
    SAMPLER_FILE,
    TINY_CONFIG_FILE,
    load_model,
    model_sampler_config,
    resolve_model_path,
    save_sampler_config,
    tiny_model_path,
)
from qsave.preprocess import merge_results, preprocess_shard
from qsave.prompts import THINK_CLOSE, THINK_OPEN, level_token_ids
from qsave.recipe import Recipe, clip_sampler, stage_configs
from qsave.schema import DIMENSIONS, LEVELS, mos_column, score_to_level
from qsave.sft import SFTStageConfig, profile_configs
from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig
from qsave.synthetic import SynthConfig, generate_corpus
from qsave.training import (
    CONFIG_DIR,
    LoraSettings,
    ProfileSettings,
    SupervisedCollator,
    SupervisedDataset,
    last_checkpoint,
    load_examples,
    load_for_training,
    lora_module_names,
    merged_model,
    prepare_stage,
    profile_settings,
    read_fsdp_config,
    resolve_attn_implementation,
    runtime_arguments,
    save_stage_model,
    vision_param_groups,
)
from qsave.video import DecodeLimits


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """A 12-clip synthetic dataset, SlowFast-sampled with the local sampler; clip paths relative."""
    root = tmp_path_factory.mktemp("corpus")
    manifest_path = generate_corpus(SynthConfig(n=12, width=64, height=64, num_frames=16, workers=1), root)
    manifest = read_manifest(manifest_path)
    shard = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), root / "clips", base_dir=root)
    table = merge_results([shard.table])
    table["clip_path"] = [str(Path(p).relative_to(root)) for p in table["clip_path"]]
    return manifest, table, root


def test_examples_report_every_unusable_row_with_its_reason(
    corpus: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    manifest, table, root = corpus
    manifest = manifest.copy()
    ids = manifest["video_id"].tolist()
    table = table[table["video_id"] != ids[0]].copy()  # no clip
    table.loc[table["video_id"] == ids[1], "status"] = "failed"
    table.loc[table["video_id"] == ids[2], "clip_path"] = "clips/gone.npz"
    manifest.loc[manifest["video_id"] == ids[3], mos_column("ta")] = float("nan")
    manifest.loc[manifest["video_id"] == ids[4], "reasons_vq"] = pd.Series([["not_a_reason"]]).values
    manifest.loc[manifest["video_id"] == ids[4], mos_column("vq")] = 1.2
    examples, skipped = load_examples(manifest, table, split=None, clips_base_dir=root)
    reasons = {s.video_id: s.reason for s in skipped}
    assert reasons == {
        ids[0]: "no_clip",
        ids[1]: "preprocess_failed",
        ids[2]: "clip_missing",
        ids[3]: "unrated",
        ids[4]: "bad_target",
    }
    assert len(examples) + len(skipped) == len(manifest)
    assert all(e.clip_path.is_absolute() and e.clip_path.is_file() for e in examples)


def test_relative_clip_paths_resolve_against_the_table_file(
    corpus: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    manifest, table, root = corpus
    table.to_parquet(root / "clips.parquet")
    examples, skipped = load_examples(manifest, root / "clips.parquet", split="train")
    assert not skipped and len(examples) == int((manifest["split"] == "train").sum())


def test_think_share_is_drawn_once_per_seed(corpus: tuple[pd.DataFrame, pd.DataFrame, Path]) -> None:
    manifest, table, root = corpus
    examples, _ = load_examples(manifest, table, split=None, clips_base_dir=root)
    assert all(
        f"{THINK_OPEN}\n\n{THINK_CLOSE}" in SupervisedDataset(examples, 0.0, 0)[i]["answer"] for i in (0, 1)
    )
    assert all(
        f"{THINK_OPEN}\n\n{THINK_CLOSE}" not in SupervisedDataset(examples, 1.0, 0)[i]["answer"]
        for i in (0, 1)
    )
    assert list(SupervisedDataset(examples, 0.5, 3).think) == list(SupervisedDataset(examples, 0.5, 3).think)
    with pytest.raises(ValueError, match="no training examples"):
        SupervisedDataset([], 0.5, 0)


def test_collator_marks_answer_labels_level_slots_and_soft_targets(
    corpus: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    manifest, table, root = corpus
    examples, _ = load_examples(manifest, table, split=None, clips_base_dir=root)
    _, processor = load_model("tiny")
    dataset = SupervisedDataset(examples[:3], 0.5, 0)
    items = [dataset[i] for i in range(3)]
    batch = SupervisedCollator(processor, sigma_min=0.3)(items)
    level_ids = level_token_ids(processor.tokenizer)
    assert batch["level_positions"].shape == (3, len(DIMENSIONS))
    assert batch["level_targets"].shape == (3, len(DIMENSIONS), len(LEVELS))
    assert torch.allclose(batch["level_targets"].sum(-1), torch.ones(3, len(DIMENSIONS)))
    for i, item in enumerate(items):
        for d, _dim in enumerate(DIMENSIONS):
            pos = int(batch["level_positions"][i, d])
            token = int(batch["input_ids"][i, pos])
            assert int(batch["labels"][i, pos]) == token
            assert LEVELS[level_ids.index(token)] == score_to_level(item["mos"][d])
        expected = soft_level_targets(torch.tensor(item["mos"]), torch.tensor(item["std"]), 0.3)
        assert torch.allclose(batch["level_targets"][i], expected)
        labelled = (batch["labels"][i] != IGNORE_INDEX).nonzero()
        text = processor.tokenizer.decode(batch["input_ids"][i, labelled[0, 0] : labelled[-1, 0] + 1])
        assert text == item["answer"] + "<|im_end|>"


def fixed_input(processor: Any, corpus: tuple[pd.DataFrame, pd.DataFrame, Path]) -> dict[str, torch.Tensor]:
    manifest, table, root = corpus
    examples, _ = load_examples(manifest, table, split=None, clips_base_dir=root)
    batch = SupervisedCollator(processor, 0.3)([SupervisedDataset(examples[:1], 0.0, 0)[0]])
    return {k: v for k, v in batch.items() if k not in ("labels", "level_positions", "level_targets")}


def test_lora_is_merged_at_hand_over_and_never_stacked(
    corpus: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    lora = LoraSettings(enabled=True, rank=4, alpha=8)
    base_dir = str(tiny_model_path())
    model, processor = load_for_training(base_dir, ProfileSettings(), lora)
    names = lora_module_names(model)
    assert names and all(n.split(".")[-1] in lora.target_modules for n in names)
    with torch.no_grad():  # a trained adapter: B is zero at initialisation, so give it values
        gen = torch.Generator().manual_seed(0)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    inputs = fixed_input(processor, corpus)
    model.eval()
    with torch.no_grad():
        adapter_logits = model(**inputs).logits
    out = save_stage_model(model, processor, base_dir, tmp_path / "stage1")
    assert not (out / "adapter_config.json").exists()
    assert model_sampler_config(out) == model_sampler_config(base_dir)
    reloaded, _ = load_model(str(out))
    assert not [n for n, _ in reloaded.named_parameters() if "lora" in n]
    with torch.no_grad():
        merged_logits = reloaded(**inputs).logits
        untouched = load_model(base_dir)[0](**inputs).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-5)
    assert not torch.allclose(merged_logits, untouched, atol=1e-3)  # the adapter did change the model

    again, _ = load_for_training(str(out), ProfileSettings(), lora)
    assert lora_module_names(again) == names  # one level of adapters, same places
    assert not [
        n for n, _ in again.named_parameters() if "base_layer.base_layer" in n or n.count("lora_") > 1
    ]

    (tmp_path / "adapter" / "adapter_config.json").parent.mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter"):
        load_for_training(str(tmp_path / "adapter"), ProfileSettings(), lora)
    assert merged_model(reloaded) is reloaded


def test_vision_tower_but_not_its_projector_gets_the_learning_rate_multiplier() -> None:
    model, _ = load_model("tiny")
    decay = {n for n, _ in model.named_parameters() if "norm" not in n and "bias" not in n}
    groups = vision_param_groups(model, 1e-3, 10.0, 0.1, decay)
    assert groups[0]["lr"] == 1e-3 and groups[0]["weight_decay"] == 0.1
    by_id = {id(p): g for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        group = by_id[id(param)]
        tower = name.startswith("model.visual.") and "merger" not in name
        assert group["lr"] == pytest.approx(1e-2 if tower else 1e-3)
        assert group["weight_decay"] == (0.1 if name in decay else 0.0)
    assert len(by_id) == len(list(model.parameters()))
    assert any("merger" in n for n, _ in model.named_parameters())


def test_last_checkpoint_skips_incomplete_ones(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((2, True), (10, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_profiles_build_valid_trainer_arguments_and_config_files_parse() -> None:
    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    for name in ("local", "qwen3-vl-8b"):
        stages = profile_configs(name)
        assert set(stages) == {"sft", "final_sft"}
        assert stages["final_sft"].learning_rate < stages["sft"].learning_rate
        assert stages["sft"].profile == profile_settings(name)
        for cfg in stages.values():
            kwargs = cfg.training_arguments("/tmp/ckpt")
            assert set(kwargs) <= known, set(kwargs) - known
            assert kwargs["report_to"] == "none"
    local = TrainingArguments(**profile_configs("local")["sft"].training_arguments("/tmp/ckpt"))
    assert local.use_cpu and not local.bf16

    production = profile_configs("qwen3-vl-8b")["sft"]
    kwargs = production.training_arguments("/tmp/ckpt")
    assert kwargs["bf16"] and kwargs["activation_checkpointing"] and not kwargs["use_cpu"]
    assert production.profile.base_model == "Qwen/Qwen3-VL-8B-Instruct"
    assert production.per_device_batch_size * production.gradient_accumulation_steps * 8 == 64
    deepspeed = json.loads(Path(kwargs["deepspeed"]).read_text())
    assert deepspeed["zero_optimization"]["stage"] == 3 and deepspeed["bf16"]["enabled"] == "auto"

    fsdp_profile = dataclasses.replace(production.profile, distributed="fsdp", distributed_config="fsdp.yaml")
    fsdp_kwargs = runtime_arguments(fsdp_profile, seed=0)
    assert fsdp_kwargs["fsdp"] == "full_shard auto_wrap"
    assert "Qwen3VLTextDecoderLayer" in fsdp_kwargs["fsdp_config"]["transformer_layer_cls_to_wrap"]
    assert read_fsdp_config(CONFIG_DIR / "fsdp.yaml") == yaml.safe_load(
        (CONFIG_DIR / "fsdp.yaml").read_text()
    )

    import importlib.util

    flash = importlib.util.find_spec("flash_attn") is not None
    assert resolve_attn_implementation("auto") == ("flash_attention_2" if flash else "sdpa")
    assert resolve_attn_implementation("eager") == "eager"


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="dtype"):
        ProfileSettings(dtype="float16")
    with pytest.raises(ValueError, match="distributed_config"):
        ProfileSettings(distributed="deepspeed")
    with pytest.raises(ValueError, match="dataloader_workers"):
        ProfileSettings(dataloader_workers=-1)
    with pytest.raises(ValueError, match="unknown training profile"):
        profile_settings("gpu")
    with pytest.raises(ValueError, match="think_fraction"):
        SFTStageConfig(think_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runtime_arguments(ProfileSettings(distributed="deepspeed", distributed_config="nope.json"), seed=0)


def test_a_stage_refuses_an_empty_split_and_clips_from_another_sampler(
    corpus: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    _, table, root = corpus
    with pytest.raises(ValueError, match=r"no SFT rows in split 'holdout'"):
        prepare_stage("SFT", "tiny", root, table, "holdout", tmp_path / "a", clips_base_dir=root)
    model_dir = tmp_path / "model"
    shutil.copytree(resolve_model_path("tiny"), model_dir)
    save_sampler_config(model_dir, SamplerConfig())  # the model records production sizes, the clips are local
    with pytest.raises(ValueError, match="preprocess the dataset with the model's sampler"):
        prepare_stage("SFT", model_dir, root, table, "train", tmp_path / "b", clips_base_dir=root)
    with pytest.raises(ValueError, match="the workflow's `sampler` input"):  # the clip directory's record
        prepare_stage("SFT", "tiny", root, table, "train", tmp_path / "b", clips_base_dir=root,
                      clips_sampler=SamplerConfig())  # fmt: skip
    ready = prepare_stage("SFT", "tiny", root, table, "train", tmp_path / "c", clips_base_dir=root)
    assert ready.examples and ready.checkpoint is None and ready.outputs.skipped.is_file()
    assert ready.sampler == LOCAL_SAMPLER


def test_the_pipeline_samples_clips_for_the_recipes_profile() -> None:
    assert clip_sampler(Recipe()) == LOCAL_SAMPLER
    assert clip_sampler(Recipe(profile="qwen3-vl-8b")) == SamplerConfig()  # Qwen3-VL's sizes, not 128 px
    custom = SamplerConfig(slow_frames=8)
    assert clip_sampler(Recipe(profile="qwen3-vl-8b"), custom) == custom
    with pytest.raises(ValueError, match="unknown training profile"):
        clip_sampler(Recipe(profile="qwen3-vl-80b"))


def test_only_a_freshly_built_tiny_model_gets_its_projector_calibrated(tmp_path: Path) -> None:
    """Stage 1 from the untrained tiny model (by name or as the directory ``build_tiny`` wrote) calibrates
    the projector's LayerNorms; a pretrained or earlier-trained base, the final stage and the 8B profile
    keep theirs."""
    built, trained = tmp_path / "tiny-abc", tmp_path / "sft-model"
    built.mkdir()
    trained.mkdir()
    (built / TINY_CONFIG_FILE).write_text("{}")
    assert stage_configs(Recipe(base_model=str(built)))[0].projector_calibration_clips > 0
    assert stage_configs(Recipe(base_model=str(trained)))[0].projector_calibration_clips == 0
    sft, _, final = stage_configs(Recipe())
    assert sft.projector_calibration_clips > 0
    assert final is not None and final.projector_calibration_clips == 0
    assert stage_configs(Recipe(base_model="tiny-pretrained"))[0].projector_calibration_clips == 0
    assert stage_configs(Recipe(profile="qwen3-vl-8b"))[0].projector_calibration_clips == 0


def test_a_model_without_a_sampler_record_records_the_clips_sampler(
    corpus: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    """A hub model records no sampler: the stage's model must record the one its clips were made with,
    or serving would sample with other sizes than training did."""
    _, table, root = corpus
    hub_like = tmp_path / "hub"
    shutil.copytree(resolve_model_path("tiny"), hub_like)
    (hub_like / SAMPLER_FILE).unlink()
    stage = prepare_stage("SFT", hub_like, root, table, "train", tmp_path / "s", clips_base_dir=root,
                          clips_sampler=LOCAL_SAMPLER)  # fmt: skip
    assert stage.sampler == LOCAL_SAMPLER
    assert (
        prepare_stage("SFT", hub_like, root, table, "train", tmp_path / "t", clips_base_dir=root).sampler
        is None
    )
    model, processor = load_model(str(hub_like))
    out = save_stage_model(model, processor, str(hub_like), tmp_path / "out", sampler=stage.sampler)
    assert model_sampler_config(out) == LOCAL_SAMPLER
