"""Stage 2 — GRPO with trl, with the SlowFast video in every log-prob pass.

**What trl 1.16 does with video, and what is changed here.** ``GRPOTrainer`` tokenises conversational
prompts with ``processor.apply_chat_template(tokenize=True)`` in ``_tokenize_prompts`` and hands every
extra field the processor returns (``pixel_values_videos``, ``video_grid_thw``, ``mm_token_type_ids``) to
``model.generate`` in ``_generate_single_turn`` — so rollouts see the video. The log-prob passes do not:
in ``_generate_and_score_completions`` the ``forward_kwargs`` given to ``_get_per_token_logps_and_entropies``
for the old policy and the reference model are built only when the prompts hold *images* (``images is not
None``), and that method's signature has no video parameters at all; ``_compute_loss`` passes the same
image-only keyword list for the policy pass, and the batch dict it reads carries no video keys. Without
a fix the video placeholder tokens are scored as plain text embeddings: the loss optimises a text-only
model while the rollouts came from the video model.

:class:`VideoGRPOTrainer` overrides four methods, each narrowly:

- ``_generate_and_score_completions(inputs)`` — builds each row's prompt and video tensors with
  :func:`qsave.inputs.build_inputs` (the one input builder training, scoring and serving share), makes them
  the *active video* while trl generates and computes the old-policy and reference log-probs, then adds
  them to the returned batch as a per-sample list under ``"videos"`` (trl shuffles and splits lists in
  unison with the tensors, so each sample keeps its own video).
- ``_tokenize_prompts(prompts)`` — returns those prompt ids and video fields instead of running the chat
  template (trl's own generate path then passes them to ``model.generate``).
- ``compute_loss(model, inputs, …)`` — makes the batch's ``"videos"`` the active video for the policy pass.
- ``_get_per_token_logps_and_entropies(…)`` — the same computation as trl's (chunked forward with
  ``labels`` and ``fused_lm_head=True``) but with the active video's ``pixel_values_videos`` and
  ``video_grid_thw`` sliced per chunk and ``mm_token_type_ids`` (the M-RoPE map) rebuilt from the video
  placeholder tokens of the prompt part. It raises when no video is active or the placeholder counts
  disagree with the video grids, so a log-prob pass can never silently run without the video.

After a trl upgrade, re-check those four methods' call sites in ``trl/trainer/grpo_trainer.py`` (the
``_get_per_token_logps_and_entropies`` calls for old/ref/policy and the ``_tokenize_prompts`` call in
``_generate``); ``tests/test_grpo.py`` counts vision-tower calls per pass and fails if one goes missing.

Rollouts never emit vision placeholder tokens (``suppress_tokens``), so a completion cannot shift the
video/token alignment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from qsave.inputs import build_inputs
from qsave.modeling import SPECIAL_TOKENS
from qsave.preprocess import load_clip
from qsave.rewards import ACCURACY_SIGMA, EQUAL_WEIGHTS, check_dimension_weights, reward_functions
from qsave.schema import DIMENSIONS, REASON_DIMENSIONS, mos_column, reasons_column
from qsave.tower_cache import tower_cache_for, tower_is_frozen
from qsave.training import (
    METRICS_FILE,
    LoraSettings,
    ProfileSettings,
    TrainingExample,
    VisionLrMixin,
    load_for_training,
    lora_config,
    metrics_callback,
    prepare_stage,
    runtime_arguments,
    save_stage_model,
)

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformers import TrainerCallback

    from qsave.slowfast import SamplerConfig

log = logging.getLogger(__name__)

CONFIG_FILE: Final = "qsave_grpo_config.json"
"""In the stage's model directory: the config it was trained with."""
VISION_PLACEHOLDERS: Final = tuple(t for t in SPECIAL_TOKENS if t.startswith("<|vision") or "_pad|>" in t)
"""Tokens a rollout must never produce: they would be read as video/image positions."""


@dataclass(frozen=True)
class GRPOStageConfig:
    """GRPO settings (a subset of trl's ``GRPOConfig`` plus qsave's rewards and LoRA)."""

    num_generations: int = 4
    """Group size: completions sampled per prompt; advantages are normalised within a group."""
    beta: float = 0.04
    """KL coefficient against the reference (the starting model); 0 skips the reference pass."""
    temperature: float = 1.0
    max_completion_length: int = 256
    learning_rate: float = 1e-5
    max_steps: int = 50
    per_device_train_batch_size: int = 4
    """Completions per optimiser step and device; a multiple of ``num_generations``."""
    gradient_accumulation_steps: int = 1
    num_iterations: int = 1
    """Optimisation passes per generated batch (GRPO's μ); above 1 trl adds the old-policy log-prob pass."""
    reward_weights: tuple[float, float, float] = (1.0, 1.0, 0.5)
    """Weights of the format, accuracy and attribution rewards (in that order)."""
    accuracy_sigma: float = ACCURACY_SIGMA
    accuracy_weights: tuple[float, float, float, float] = EQUAL_WEIGHTS
    """Weights of VQ, MQ, TA and overall inside the accuracy reward (a weighted mean)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA on the language model (trl creates it; the reference is the model with the adapter off) or
    full fine-tuning (trl loads a frozen copy as the reference when ``beta`` > 0)."""
    vision_lr_multiplier: float = 0.0
    """With full fine-tuning, the vision tower trains at ``learning_rate × vision_lr_multiplier`` (its
    projector at the full rate), as in SFT: 0 keeps the tiny model's analytic front end fixed."""
    save_steps: int = 25
    save_total_limit: int = 2
    seed: int = 0
    split: str = "train"
    """Manifest split the prompts come from."""
    profile: ProfileSettings = field(default_factory=ProfileSettings)

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations}: GRPO compares at least 2 completions")
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} must be a multiple of "
                f"num_generations={self.num_generations} (whole groups per step)"
            )
        if self.vision_lr_multiplier < 0:
            raise ValueError(f"vision_lr_multiplier must be non-negative, got {self.vision_lr_multiplier}")
        if len(self.reward_weights) != 3:
            raise ValueError(f"reward_weights={self.reward_weights}: give format, accuracy, attribution")
        check_dimension_weights(self.accuracy_weights)


# --------------------------------------------------------------------------------------------- data


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def grpo_row(example: TrainingExample) -> dict[str, Any]:
    """A GRPO dataset row: ``prompt`` and ``clip_path`` for the rollout, the columns the rewards read."""
    row: dict[str, Any] = {
        "prompt": example.prompt,
        "clip_path": str(example.clip_path),
        "video_id": example.video_id,
    }
    row.update({mos_column(d): float(example.row[mos_column(d)]) for d in DIMENSIONS})
    for dim in REASON_DIMENSIONS:
        raw: Any = example.row.get(reasons_column(dim))
        row[reasons_column(dim)] = [] if _is_missing(raw) else [str(c) for c in raw]
    return row


# --------------------------------------------------------------------------------------------- trainer


class SampleVideo(NamedTuple):
    """One sample's video tensors: the rows of ``pixel_values_videos`` and ``video_grid_thw`` it owns."""

    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor


class VideoPrompt(NamedTuple):
    prompt_ids: list[int]
    mm_token_type_ids: list[int]
    video: SampleVideo


def _trainer_class() -> type:
    from trl import GRPOTrainer

    class VideoGRPOTrainer(VisionLrMixin, GRPOTrainer):
        """``GRPOTrainer`` whose every log-prob pass (policy, old policy, reference) sees the video.

        Dataset rows carry ``prompt`` (the generation prompt) and ``clip_path`` (a preprocessed clip); see
        the module docstring for the four overridden methods and why. The vision tower trains at
        ``vision_lr_multiplier`` × the rate (:class:`qsave.training.VisionLrMixin`).
        """

        _active_videos: Sequence[SampleVideo] | None = None
        _pending_prompts: Sequence[VideoPrompt] = ()

        def __init__(self, *args: Any, vision_lr_multiplier: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.set_vision_lr_multiplier(vision_lr_multiplier)

        @contextlib.contextmanager
        def _using_videos(self, videos: Sequence[SampleVideo]) -> Iterator[None]:
            previous, self._active_videos = self._active_videos, list(videos)
            try:
                yield
            finally:
                self._active_videos = previous

        def _video_prompts(self, inputs: Sequence[Mapping[str, Any]]) -> list[VideoPrompt]:
            built: dict[tuple[str, str], VideoPrompt] = {}
            prompts = []
            for row in inputs:
                key = (str(row["clip_path"]), str(row["prompt"]))
                if key not in built:
                    try:
                        clip = load_clip(key[0])
                    except (OSError, ValueError, KeyError) as exc:
                        raise ValueError(
                            f"row {row.get('video_id', '?')!r}: cannot read clip {key[0]} ({exc}); rerun "
                            "preprocessing for it"
                        ) from exc
                    batch = build_inputs(self.processing_class, [clip], [key[1]])
                    kwargs = batch.model_kwargs
                    built[key] = VideoPrompt(
                        prompt_ids=kwargs["input_ids"][0].tolist(),
                        mm_token_type_ids=kwargs["mm_token_type_ids"][0].tolist(),
                        video=SampleVideo(kwargs["pixel_values_videos"], kwargs["video_grid_thw"]),
                    )
                prompts.append(built[key])
            return prompts

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            self._pending_prompts = self._video_prompts(inputs)
            videos = [p.video for p in self._pending_prompts]
            try:
                with self._using_videos(videos):
                    output: dict[str, Any] = super()._generate_and_score_completions(inputs)
            finally:
                self._pending_prompts = ()
            output["videos"] = videos
            return output

        def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
            import torch

            pending = self._pending_prompts
            if len(pending) != len(prompts):
                raise RuntimeError(
                    f"{len(prompts)} prompts to tokenise but {len(pending)} video prompts were built; "
                    "VideoGRPOTrainer builds prompts in _generate_and_score_completions"
                )
            fields = {
                "pixel_values_videos": torch.cat([p.video.pixel_values_videos for p in pending]),
                "video_grid_thw": torch.cat([p.video.video_grid_thw for p in pending]),
                "mm_token_type_ids": [p.mm_token_type_ids for p in pending],
            }
            return [p.prompt_ids for p in pending], None, fields

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            with self._using_videos(inputs["videos"]):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _get_per_token_logps_and_entropies(
            self,
            model: Any,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            logits_to_keep: int,
            batch_size: int | None = None,
            compute_entropy: bool = False,
            compute_aux_loss: bool = False,
            **image_kwargs: Any,
        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
            import torch

            given = sorted(k for k, v in image_kwargs.items() if v is not None)
            if given:
                raise ValueError(f"VideoGRPOTrainer takes video rows only, got image inputs {given}")
            videos = self._active_videos
            if videos is None:
                raise RuntimeError("a log-prob pass ran without the batch's video (no active video)")
            if len(videos) != input_ids.size(0):
                raise RuntimeError(
                    f"{input_ids.size(0)} sequences but {len(videos)} videos in a log-prob pass"
                )
            mm_token_type_ids = self._video_token_types(input_ids, logits_to_keep, videos)
            batch_size = batch_size or input_ids.size(0)
            logps, entropies, aux = [], [], []
            for start in range(0, input_ids.size(0), batch_size):
                end = min(start + batch_size, input_ids.size(0))
                chunk = videos[start:end]
                ids, mask = input_ids[start:end], attention_mask[start:end]
                labels = ids.masked_fill(mask == 0, -100)
                labels[:, :-logits_to_keep] = -100
                model_inputs: dict[str, Any] = {
                    "input_ids": ids,
                    "attention_mask": mask,
                    "mm_token_type_ids": mm_token_type_ids[start:end],
                    "pixel_values_videos": torch.cat([v.pixel_values_videos for v in chunk]).to(ids.device),
                    "video_grid_thw": torch.cat([v.video_grid_thw for v in chunk]).to(ids.device),
                }
                if compute_aux_loss:
                    model_inputs["output_router_logits"] = True
                with self.accelerator.autocast():
                    outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
                logps.append(outputs.log_probs[:, -logits_to_keep:])
                if compute_entropy:
                    entropies.append(outputs.entropy[:, -logits_to_keep:])
                if compute_aux_loss:
                    aux.append(outputs.aux_loss)
            return (
                torch.cat(logps, dim=0),
                torch.cat(entropies, dim=0) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None,
            )

        def _video_token_types(
            self, input_ids: torch.Tensor, logits_to_keep: int, videos: Sequence[SampleVideo]
        ) -> torch.Tensor:
            """Qwen3-VL's ``mm_token_type_ids`` (2 at video placeholders of the prompt part, else 0)."""
            import torch

            processor: Any = self.processing_class
            merge = processor.video_processor.merge_size**2
            types = torch.zeros_like(input_ids, dtype=torch.int32)
            prompt = input_ids[:, :-logits_to_keep]
            video_pad = int(processor.tokenizer.convert_tokens_to_ids("<|video_pad|>"))
            types[:, : prompt.size(1)] = torch.eq(prompt, video_pad).to(types.dtype) * 2
            for i, video in enumerate(videos):
                placeholders = int((types[i] == 2).sum())
                expected = int(video.video_grid_thw.prod(dim=-1).sum()) // merge
                if placeholders != expected:
                    raise RuntimeError(
                        f"sequence {i}: {placeholders} video placeholder tokens but its video has {expected} "
                        "visual tokens; the prompt and the video tensors are out of step"
                    )
            return types

    return VideoGRPOTrainer


# --------------------------------------------------------------------------------------------- run


def _frozen_reference(trainer: Any) -> Any:
    """trl's reference model (``None`` at β = 0) with every parameter frozen — it never trains, but trl
    leaves ``requires_grad`` on — when the policy's tower is frozen too, so both can cache their tower;
    ``None`` otherwise, and for a reference that DeepSpeed or FSDP wrapped."""
    ref = trainer.ref_model
    if ref is None or not hasattr(ref, "model") or not tower_is_frozen(trainer.model):
        return None
    ref.requires_grad_(False)
    return ref


def _grpo_args(cfg: GRPOStageConfig, output_dir: Path, processor: Any) -> Any:
    from trl import GRPOConfig

    tokenizer = processor.tokenizer
    suppress = [int(tokenizer.convert_tokens_to_ids(t)) for t in VISION_PLACEHOLDERS]
    return GRPOConfig(
        output_dir=str(output_dir),
        num_generations=cfg.num_generations,
        beta=cfg.beta,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length,
        learning_rate=cfg.learning_rate,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_iterations=cfg.num_iterations,
        reward_weights=list(cfg.reward_weights),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=1,
        disable_tqdm=True,
        generation_kwargs={"suppress_tokens": suppress},
        model_init_kwargs={"use_safetensors": True},  # trl loads the reference model (beta > 0) with these
        # rows are plain dicts and the videos are built inside the loop: a loader worker would only idle
        **runtime_arguments(dataclasses.replace(cfg.profile, dataloader_workers=0), cfg.seed),
    )


def build_trainer(
    model: Any,
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    cfg: GRPOStageConfig,
    checkpoint_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
) -> Any:
    """A :class:`VideoGRPOTrainer` over ``rows`` (:func:`grpo_row`) with qsave's rewards.

    ``model`` is a full model (no adapter): with ``cfg.lora.enabled`` trl adds the LoRA adapter.
    """
    from datasets import Dataset

    model.train()
    return _trainer_class()(
        model=model,
        reward_funcs=reward_functions(cfg.accuracy_sigma, cfg.accuracy_weights),
        args=_grpo_args(cfg, checkpoint_dir, processor),
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=processor,
        peft_config=lora_config(cfg.lora, "CAUSAL_LM"),
        callbacks=list(callbacks),
        vision_lr_multiplier=cfg.vision_lr_multiplier,
    )


def run_grpo(
    model_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    clips_table: pd.DataFrame | str | os.PathLike[str],
    cfg: GRPOStageConfig,
    out_dir: str | os.PathLike[str],
    *,
    clips_base_dir: str | os.PathLike[str] | None = None,
    clips_sampler: SamplerConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Train ``model_dir`` with GRPO on the rated rows of ``cfg.split``; return the merged model directory.

    Same layout as :func:`qsave.sft.run_sft` under ``out_dir``: ``model/`` (full model — LoRA merged —
    with processor, sampler config, this config and the metrics; loadable by
    :func:`qsave.modeling.load_model`), ``metrics.jsonl`` (trl's log history, one line per step:
    ``rewards/<function>/mean`` and ``/std``, ``reward``, ``kl``, ``completions/mean_length`` …,
    ``entropy``, ``step_time``), ``skipped.json`` (rows left out and why) and ``checkpoints/`` (every
    ``cfg.save_steps``; ``resume`` continues from the newest, without it old ones are removed first).
    ``clips_sampler`` as in :func:`qsave.training.prepare_stage`.
    """
    stage = prepare_stage(
        "GRPO", model_dir, dataset_dir, clips_table, cfg.split, out_dir,
        clips_base_dir=clips_base_dir, clips_sampler=clips_sampler, resume=resume,
    )  # fmt: skip
    outputs, source, examples, checkpoint = stage.outputs, stage.source, stage.examples, stage.checkpoint
    model, processor = load_for_training(source, cfg.profile, LoraSettings(enabled=False))
    trainer = build_trainer(
        model,
        processor,
        [grpo_row(e) for e in examples],
        cfg,
        outputs.checkpoints,
        [metrics_callback(outputs.metrics), *callbacks],
    )
    with tower_cache_for([trainer.model, _frozen_reference(trainer)], cfg.profile.cache_frozen_tower):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    record = {"config": dataclasses.asdict(cfg), "examples": len(examples), "skipped": len(stage.skipped)}
    extra = {CONFIG_FILE: json.dumps(record, indent=2, sort_keys=True)}
    if outputs.metrics.is_file():
        extra[METRICS_FILE] = outputs.metrics.read_text()
    return save_stage_model(trainer.model, processor, source, outputs.model, extra, sampler=stage.sampler)
