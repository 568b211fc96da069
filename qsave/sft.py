"""Supervised fine-tuning with the dual-supervision loss: stage 1 (SFT) and stage 3 (final SFT).

Both stages are :func:`run_sft` with a :class:`SFTStageConfig` (one dataclass per stage, in the spirit of
trl's ``SFTConfig``); final SFT differs only by its config — a lower learning rate, fewer epochs — and by
starting from the GRPO stage's model directory. :func:`profile_configs` gives both configs for a profile.

The trainer is a ``transformers.Trainer`` subclass (:class:`DualSupervisionTrainer`), as trl's trainers
are: the batches come from :mod:`qsave.training` (clips + prompts + targets through
:func:`qsave.inputs.build_inputs`), and the loss is :func:`qsave.losses.dual_supervision_loss` — token
cross-entropy on the assistant turn plus λ × the KL between the level softmax at each level slot and the
MOS/std soft target. Logits are computed only from the first answer token on (``logits_to_keep``): the
syllabus and the video tokens never need a vocabulary projection, which matters at Qwen's 152k vocabulary.

Outputs under ``out_dir``: ``model/`` (the merged full model, processor, sampler config: the next stage's
input), ``checkpoints/checkpoint-<step>`` (every ``save_steps``; ``resume=True`` continues from the newest),
``metrics.jsonl`` (per log event: ``loss``, ``ce``, ``dist``, ``learning_rate``, ``grad_norm``, ``step``,
``epoch``; a copy goes into ``model/``), ``skipped.json`` (rows not trained on, with reasons).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qsave.inputs import IGNORE_INDEX
from qsave.losses import DualLoss, dual_supervision_loss
from qsave.prompts import level_token_ids
from qsave.tower_cache import tower_cache_for
from qsave.training import (
    METRICS_FILE,
    LoraSettings,
    ProfileSettings,
    SupervisedCollator,
    SupervisedDataset,
    VisionLrMixin,
    load_for_training,
    metrics_callback,
    prepare_stage,
    profile_settings,
    runtime_arguments,
    save_trained_model,
    trainable_parameters,
)

if TYPE_CHECKING:
    import pandas as pd
    from transformers import TrainerCallback

    from qsave.slowfast import SamplerConfig

log = logging.getLogger(__name__)

STAGES: Final = ("sft", "final_sft")
CONFIG_FILE: Final = "qsave_sft_config.json"
"""In the stage's model directory: the config it was trained with."""


@dataclass(frozen=True)
class SFTStageConfig:
    """Everything one SFT stage needs; defaults are the ``local`` profile's stage-1 settings."""

    learning_rate: float = 1e-3
    num_train_epochs: float = 6.0
    """Passes over the training split: 6 × 2,040 clips of the default corpus ≈ 1,530 steps of 8 (4 and 5
    epochs read MQ 0.66–0.67 and TA ≈ 0; ``docs/learning.md``, session 23)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (−1: run ``num_train_epochs``)."""
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lam: float = 30.0
    """λ: weight of the level-distribution term against the token cross-entropy (the tiny model learns
    the scores from the video only when the score term dominates early: ``docs/learning.md``, run O)."""
    sigma_min: float = 0.3
    """Floor of the soft target's σ (MOS points); see :mod:`qsave.losses`."""
    think_fraction: float = 0.0
    """Share of examples trained on the CoT target; the rest get the no-think (scoring-mode) target, which
    still names the reasons. Teacher-forced rationales name the artefacts before the level slots, so CoT
    examples teach the slots to read the rationale rather than the video: 0 here, the CoT is taught at the
    final stage (``docs/learning.md``, runs S–U)."""
    vision_lr_multiplier: float = 0.0
    """The vision tower's learning rate is ``learning_rate × vision_lr_multiplier`` (its projector trains
    at ``learning_rate``); 0 keeps the tiny model's analytic front end (:mod:`qsave.vision_init`) fixed."""
    projector_calibration_clips: int = 200
    """Before training, set the projector's input LayerNorms to standardise each channel over the visual
    tokens of this many training clips (:func:`qsave.vision_init.calibrate_projector`; 0: keep the model's).
    For an untrained projector, as the tiny model's; the final stage and pretrained models keep theirs."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    split: str = "train"
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 0
    profile: ProfileSettings = field(default_factory=ProfileSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("set num_train_epochs > 0 or max_steps > 0")
        if self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            problems.append("per_device_batch_size and gradient_accumulation_steps must be at least 1")
        if self.lam < 0:
            problems.append(f"lam must be non-negative, got {self.lam}")
        if self.sigma_min <= 0:
            problems.append(f"sigma_min must be positive, got {self.sigma_min}")
        if not 0.0 <= self.think_fraction <= 1.0:
            problems.append(f"think_fraction must be in [0, 1], got {self.think_fraction}")
        if self.vision_lr_multiplier < 0:
            problems.append(f"vision_lr_multiplier must be non-negative, got {self.vision_lr_multiplier}")
        if self.save_steps < 1:
            problems.append(f"save_steps must be at least 1, got {self.save_steps}")
        if self.projector_calibration_clips < 0:
            problems.append(
                f"projector_calibration_clips must be non-negative, got {self.projector_calibration_clips}"
            )
        if problems:
            raise ValueError("invalid SFTStageConfig: " + "; ".join(problems))

    def training_arguments(self, checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Keyword arguments of ``transformers.TrainingArguments`` for this stage."""
        return {
            "output_dir": str(checkpoint_dir),
            "learning_rate": self.learning_rate,
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "warmup_steps": self.warmup_ratio,
            "lr_scheduler_type": self.lr_scheduler_type,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "logging_steps": self.logging_steps,
            "logging_first_step": True,
            **runtime_arguments(self.profile, self.seed),
        }


def profile_configs(name: str) -> dict[str, SFTStageConfig]:
    """The ``sft`` and ``final_sft`` configs of a profile (``local`` or ``qwen3-vl-8b``).

    ``local``: the tiny model on CPU, full fine-tuning of the language model and the vision projector
    (a LoRA on a randomly initialised model learns little) with the analytic vision front end fixed
    (``vision_lr_multiplier=0``), λ = 30, 6 epochs of 8 clips on the no-think targets; the final stage
    is the same objective at a twentieth of the rate for 0.4 epoch, ~100 steps (at a fifth, a fresh Adam
    state shook the answer format GRPO had settled: 79 % of greedy answers parsed instead of 99 %; adding the
    CoT there, for half the examples, cost 0.04–0.15 SRCC and taught the tiny model no rationale:
    ``docs/learning.md``, runs AK and AO).
    ``qwen3-vl-8b``: full fine-tuning of the pretrained 8B model in bf16 under DeepSpeed ZeRO-3 on 8×H100
    per node, 2 clips per GPU × 4 accumulation steps = 64 clips per optimizer step per node; the
    pretrained vision tower at 0.1× the rate, λ = 1, the CoT target for half the examples. Final SFT: a fifth
    of the learning rate, one epoch.
    """
    profile = profile_settings(name)
    if name == "local":
        sft = SFTStageConfig(profile=profile)
        final = dataclasses.replace(
            sft, learning_rate=sft.learning_rate / 20, num_train_epochs=0.4, projector_calibration_clips=0
        )
    else:
        sft = SFTStageConfig(
            learning_rate=1e-5,
            num_train_epochs=2.0,
            per_device_batch_size=2,
            gradient_accumulation_steps=4,
            warmup_ratio=0.03,
            weight_decay=0.01,
            lam=1.0,
            think_fraction=0.5,
            vision_lr_multiplier=0.1,
            projector_calibration_clips=0,
            save_steps=200,
            save_total_limit=3,
            logging_steps=10,
            profile=profile,
        )
        final = dataclasses.replace(sft, learning_rate=2e-6, num_train_epochs=1.0)
    return {"sft": sft, "final_sft": final}


def answer_loss(
    model: Any, batch: Mapping[str, Any], level_ids: tuple[int, ...], lam: float
) -> tuple[DualLoss, Any]:
    """The dual-supervision loss of a collated batch, and the model outputs.

    Logits are computed only from the position before the batch's first answer token on
    (``logits_to_keep``), and labels and level positions are cut to the same window.
    """
    import torch

    inputs = dict(batch)
    labels = inputs.pop("labels")
    positions = inputs.pop("level_positions")
    targets = inputs.pop("level_targets")
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if not len(labelled):
        raise ValueError("a batch without answer tokens reached the loss; check the collator")
    start = max(int(labelled[0]) - 1, 0)
    outputs = model(**inputs, logits_to_keep=labels.shape[1] - start)
    shifted = torch.where(positions >= 0, positions - start, positions)
    terms = dual_supervision_loss(outputs.logits, labels[:, start:], shifted, targets, level_ids, lam)
    return terms, outputs


def dual_supervision_trainer_class() -> type:
    from transformers import Trainer

    class DualSupervisionTrainer(VisionLrMixin, Trainer):
        """``Trainer`` whose loss is :func:`qsave.losses.dual_supervision_loss`; logs ``ce`` and ``dist``."""

        loss_is_scaled_for_ga = False  # per-batch means: the Trainer divides by accumulation steps

        def __init__(self, *args: Any, lam: float, vision_lr_multiplier: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lam = lam
            self.set_vision_lr_multiplier(vision_lr_multiplier)
            processor: Any = self.processing_class
            self.level_ids = level_token_ids(processor.tokenizer)
            self._terms: dict[str, list[float]] = {"ce": [], "dist": []}

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            terms, outputs = answer_loss(model, inputs, self.level_ids, self.lam)
            if model.training:
                self._terms["ce"].append(float(terms.ce.detach()))
                self._terms["dist"].append(float(terms.dist.detach()))
            return (terms.total, outputs) if return_outputs else terms.total

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._terms["ce"]:  # a training log: every rank gets here together
                import torch

                local = [sum(v) / len(v) for v in self._terms.values()]
                means = self.accelerator.reduce(torch.tensor(local, device=self.args.device), "mean")
                for key, value in zip(self._terms, means.tolist()):
                    logs[key] = round(value, 6)
                for values in self._terms.values():
                    values.clear()
            super().log(logs, start_time)

    return DualSupervisionTrainer


def calibrate_on(
    model: Any, dataset: SupervisedDataset, collator: SupervisedCollator, clips: int, batch_size: int
) -> None:
    """:func:`qsave.vision_init.calibrate_projector` on the first ``clips`` examples of ``dataset``."""
    from qsave.vision_init import calibrate_projector

    n = min(clips, len(dataset))
    batches = (
        collator([dataset[i] for i in range(start, min(start + batch_size, n))])
        for start in range(0, n, batch_size)
    )
    tokens = calibrate_projector(model, batches)
    log.info("projector calibrated on the %d visual tokens of %d clips", tokens, n)


def run_sft(
    model_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    clips_table: pd.DataFrame | str | os.PathLike[str],
    cfg: SFTStageConfig,
    out_dir: str | os.PathLike[str],
    *,
    clips_base_dir: str | os.PathLike[str] | None = None,
    clips_sampler: SamplerConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Train one SFT stage and return the merged model directory (``<out_dir>/model``).

    ``model_dir``: a full model directory, ``tiny`` or a hub id; ``dataset_dir``: an ingested dataset
    (``manifest.parquet`` + videos); ``clips_table``: the preprocess stage's table (frame or Parquet),
    relative clip paths resolved against ``clips_base_dir``; ``clips_sampler``: the sampler its clip
    directory records, which the trained model records too when the source records none (a hub model),
    see :func:`qsave.training.prepare_stage`. ``resume``: continue from the newest
    checkpoint under ``<out_dir>/checkpoints`` (a fresh start when there is none); without it, old
    checkpoints there are removed first. ``callbacks`` are extra Trainer callbacks.
    """
    from transformers import TrainingArguments

    stage = prepare_stage(
        "SFT", model_dir, dataset_dir, clips_table, cfg.split, out_dir,
        clips_base_dir=clips_base_dir, clips_sampler=clips_sampler, resume=resume,
    )  # fmt: skip
    outputs, source, checkpoint, skipped = stage.outputs, stage.source, stage.checkpoint, stage.skipped
    dataset = SupervisedDataset(stage.examples, cfg.think_fraction, cfg.seed)
    # TrainingArguments before the model: DeepSpeed ZeRO-3 must see them to shard weights while loading.
    args = TrainingArguments(**cfg.training_arguments(outputs.checkpoints))
    model, processor = load_for_training(source, cfg.profile, cfg.lora)
    trainable, total = trainable_parameters(model)
    log.info(
        "SFT on %d examples (%d skipped): %d of %d parameters trainable",
        len(dataset),
        len(skipped),
        trainable,
        total,
    )
    collator = SupervisedCollator(processor, cfg.sigma_min)
    if cfg.projector_calibration_clips:
        calibrate_on(model, dataset, collator, cfg.projector_calibration_clips, cfg.per_device_batch_size)
    trainer = dual_supervision_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=[metrics_callback(outputs.metrics), *callbacks],
        lam=cfg.lam,
        vision_lr_multiplier=cfg.vision_lr_multiplier,
    )
    with tower_cache_for([trainer.model], cfg.profile.cache_frozen_tower):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    record = {"config": dataclasses.asdict(cfg), "examples": len(dataset), "skipped": len(skipped)}
    extra = {CONFIG_FILE: json.dumps(record, indent=2, sort_keys=True)}
    if outputs.metrics.is_file():
        extra[METRICS_FILE] = outputs.metrics.read_text()
    return save_trained_model(
        trainer, processor, source, cfg.profile, outputs.model, extra, sampler=stage.sampler
    )
