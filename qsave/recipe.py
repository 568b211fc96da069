"""The training recipe as the workflow sees it: a profile plus the few knobs people change per run.

Flyte inputs must be simple types, and a change of any of them must rerun exactly the stages it affects
(cache keys are task inputs). :class:`Recipe` holds those knobs; :func:`stage_configs` expands it into the
full stage configs (:class:`qsave.sft.SFTStageConfig`, :class:`qsave.grpo.GRPOStageConfig`) of the profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qsave.grpo import GRPOStageConfig
    from qsave.sft import SFTStageConfig
    from qsave.slowfast import SamplerConfig
    from qsave.training import LoraSettings


@dataclass
class Recipe:
    profile: str = "local"
    """``local`` (tiny Qwen3-VL, CPU, minutes) or ``qwen3-vl-8b`` (bf16, DeepSpeed ZeRO-3, H100s)."""
    base_model: str = ""
    """Override the profile's base model (a path, hub id, ``tiny`` or ``models:/…``); empty: the profile's."""
    sft_epochs: float = -1.0
    """Stage-1 SFT epochs; −1: the profile's."""
    grpo_steps: int = -1
    """GRPO optimizer steps; 0 skips GRPO; −1: the profile's."""
    final_sft_epochs: float = -1.0
    """Final SFT epochs; 0 skips it; −1: the profile's."""
    lora: bool = False
    """LoRA adapters (merged at the end of every stage) instead of full fine-tuning."""
    seed: int = 0


LOCAL_GRPO_STEPS = 40
"""GRPO on the tiny local model: 40 steps of 4 clips × 4 sampled completions at 1e-4 (about 1–2 minutes on
CPU). Six steps of one clip moved nothing; 70–100 steps lift the format reward of sampled answers from
about 0.34 to 0.5 and keep SRCC (2e-4 diverges; ``docs/learning.md``, runs AL–AO and BE). 40 since
session 23, when stage 1 grew to 6 epochs of the 2,040-clip default: GRPO moves no SRCC, and the 30 steps
it gave up hold the whole pipeline inside 20 minutes."""


def _with_lora(lora_settings: LoraSettings, enabled: bool) -> LoraSettings:
    return dataclasses.replace(lora_settings, enabled=enabled)


def stage_configs(
    recipe: Recipe,
) -> tuple[SFTStageConfig, GRPOStageConfig | None, SFTStageConfig | None]:
    """The SFT, GRPO and final-SFT configs of ``recipe`` (profile defaults with the recipe's overrides);
    ``None`` for a stage the recipe skips (0 steps or epochs)."""
    from qsave.grpo import GRPOStageConfig
    from qsave.modeling import is_fresh_tiny
    from qsave.sft import profile_configs
    from qsave.training import profile_settings

    configs = profile_configs(recipe.profile)
    profile = profile_settings(recipe.profile)
    if recipe.base_model:
        profile = dataclasses.replace(profile, base_model=recipe.base_model)
    sft, final = configs["sft"], configs["final_sft"]
    sft = dataclasses.replace(sft, profile=profile, seed=recipe.seed, lora=_with_lora(sft.lora, recipe.lora))
    final = dataclasses.replace(
        final, profile=profile, seed=recipe.seed, lora=_with_lora(final.lora, recipe.lora)
    )
    if not is_fresh_tiny(base_model(recipe)):  # a trained projector keeps its LayerNorms
        sft = dataclasses.replace(sft, projector_calibration_clips=0)
    if recipe.sft_epochs >= 0:
        sft = dataclasses.replace(sft, num_train_epochs=recipe.sft_epochs)
    final_or_none: SFTStageConfig | None = final
    if recipe.final_sft_epochs == 0:
        final_or_none = None
    elif recipe.final_sft_epochs > 0:
        final_or_none = dataclasses.replace(final, num_train_epochs=recipe.final_sft_epochs)
    if recipe.profile == "local":
        grpo = GRPOStageConfig(
            max_steps=LOCAL_GRPO_STEPS,
            per_device_train_batch_size=16,
            learning_rate=1e-4,
            max_completion_length=96,
            profile=profile,
        )
    else:
        grpo = GRPOStageConfig(
            max_steps=500,
            learning_rate=1e-6,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=4,
            vision_lr_multiplier=0.1,
            save_steps=50,
            profile=profile,
        )
    grpo = dataclasses.replace(grpo, seed=recipe.seed, lora=_with_lora(grpo.lora, recipe.lora))
    if recipe.grpo_steps == 0:
        return sft, None, final_or_none
    if recipe.grpo_steps > 0:
        grpo = dataclasses.replace(grpo, max_steps=recipe.grpo_steps)
    return sft, grpo, final_or_none


def base_model(recipe: Recipe) -> str:
    """The model stage 1 starts from."""
    from qsave.training import profile_settings

    return recipe.base_model or profile_settings(recipe.profile).base_model


def clip_sampler(recipe: Recipe, override: SamplerConfig | None = None) -> SamplerConfig:
    """The SlowFast sampler the pipeline preprocesses with: ``override`` when given, else the profile's —
    the small local sizes for ``local`` (the tiny model), Qwen3-VL's for ``qwen3-vl-8b``. The trained
    model records it (:attr:`qsave.training.StageInputs.sampler`), so serving samples as training did."""
    from qsave.training import profile_settings

    sampler = profile_settings(recipe.profile).sampler  # an unknown profile fails before any decoding
    return override if override is not None else sampler
