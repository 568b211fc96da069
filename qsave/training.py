"""What every training stage shares: examples, batches, model set-up and hand-over, checkpoints, logs.

- **Examples** (:func:`load_examples`): the rated rows of one split of a manifest, joined to the
  preprocess stage's clip table (``video_id`` → ``clip_path``). Rows that cannot train — no clip (or its
  preprocessing failed), a clip file that is gone, no MOS, a target that cannot be built — are returned as
  :class:`Skipped` with the reason, never dropped silently.
- **Batches**: :class:`SupervisedDataset` yields (clip, prompt, CoT target, MOS, std) per example, each
  assigned the think or the no-think target once for a seed; :class:`SupervisedCollator` turns a list of
  them into model inputs with :func:`qsave.inputs.build_inputs` (the one place that does it) plus the
  level-slot positions and the soft level targets of :func:`qsave.losses.soft_level_targets`.
- **Model hand-over between stages** (:func:`load_for_training`, :func:`save_trained_model`, which
  gathers sharded weights and calls :func:`save_stage_model`): every stage starts from a *full* model
  directory and ends by writing one. With LoRA the adapter is merged into the base before saving, so the
  next stage never stacks a LoRA on an unmerged LoRA; a model directory holding an adapter is refused.
  The processor and the SlowFast sampler config (:func:`qsave.modeling.save_sampler_config`) travel with
  the weights.
- **Checkpoints** every ``save_steps`` under ``<out_dir>/checkpoints``; :func:`last_checkpoint` finds the
  newest complete one to resume from (the Trainer restores weights, optimizer, scheduler, RNG and the data
  position, so an interrupted run resumed ends with the same weights as an uninterrupted one on CPU).
- **Logs**: :func:`metrics_callback` rewrites ``metrics.jsonl`` (one JSON object per log event: loss,
  the loss terms, learning rate, step, epoch) atomically at every log, so it is complete after a crash and
  continues correctly after a resume.
- **Profiles** (:func:`profile_settings`): ``local`` (tiny model, CPU, float32) and ``qwen3-vl-8b`` (bf16,
  gradient checkpointing, FlashAttention-2 when importable else SDPA, DeepSpeed ZeRO-3 from
  ``configs/deepspeed_zero3.json`` or FSDP from ``configs/fsdp.yaml``, sized for 8×H100 per node). Only
  settings differ; the code path is the same.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from qsave.inputs import build_inputs, mrope_position_ids
from qsave.losses import soft_level_targets
from qsave.manifest import resolve_video_path
from qsave.modeling import (
    PRODUCTION_MODEL,
    TINY,
    load_model,
    model_prompt_style,
    model_sampler_config,
    resolve_model_path,
    save_prompt_style,
    save_sampler_config,
)
from qsave.preprocess import load_clip
from qsave.prompts import build_target
from qsave.schema import DIMENSIONS, mos_column, std_column
from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig
from qsave.storage import atomic_path, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

CONFIG_DIR: Final = Path(__file__).resolve().parent.parent / "configs"
"""The repository's ``configs/`` folder: relative DeepSpeed/FSDP config paths resolve against it."""

CHECKPOINT_DIR: Final = "checkpoints"
MODEL_DIR: Final = "model"
METRICS_FILE: Final = "metrics.jsonl"
SKIPPED_FILE: Final = "skipped.json"
ADAPTER_FILE: Final = "adapter_config.json"

LANGUAGE_LINEAR_MODULES: Final = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Qwen3-VL's language-model linear layers (the vision tower's are ``qkv``, ``proj``, ``linear_fc*``)."""

VISION_MARKER: Final = ".visual."
"""Parameter names containing this belong to the vision side (``model.visual.…``, also under peft)."""
PROJECTOR_MARKER: Final = "merger"
"""Vision-side parameter names containing this belong to the projector (Qwen3-VL's ``merger`` and
``deepstack_merger_list``), which maps the tower's features into the language model and trains at the
language model's rate; the rest of the vision side is the tower."""


def is_vision_tower(name: str) -> bool:
    """Whether parameter ``name`` belongs to the vision tower proper (not its projector)."""
    return VISION_MARKER in f".{name}" and PROJECTOR_MARKER not in name


PROFILES: Final = ("local", "qwen3-vl-8b")


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LoraSettings:
    """LoRA (peft) or full fine-tuning. With ``enabled``, only adapters on ``target_modules`` train and are
    merged into the base when the stage ends."""

    enabled: bool = False
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LANGUAGE_LINEAR_MODULES


@dataclass(frozen=True)
class ProfileSettings:
    """Where and how training runs: base model, precision, attention kernel, distribution, devices."""

    name: str = "local"
    base_model: str = TINY
    dtype: str = "float32"
    """``float32`` or ``bfloat16`` (weights and autocast)."""
    attn_implementation: str = "sdpa"
    """``sdpa``, ``eager``, ``flash_attention_2`` or ``auto`` (FlashAttention-2 if importable, else SDPA)."""
    gradient_checkpointing: bool = False
    distributed: str = "none"
    """``none``, ``deepspeed`` or ``fsdp``; the config file comes from ``distributed_config``."""
    distributed_config: str = ""
    """DeepSpeed JSON or FSDP YAML; relative paths resolve against the repository's ``configs/``."""
    use_cpu: bool = True
    dataloader_workers: int = 1
    """Processes that read and collate training clips beside the training loop (0: in the loop). With
    ``torch_threads = 1`` one worker puts the second core to use: reading a batch's clips and running the
    processor is ~20 % of a local SFT step, and a worker overlaps it with the step (0.81× the time per
    step, ``benchmarks/bench_training_speed.py``). SFT stages only: GRPO builds its videos inside the loop."""
    cache_frozen_tower: bool = True
    """While the vision tower is frozen (``vision_lr_multiplier = 0``), compute its outputs once per
    distinct clip and keep them for the stage (:mod:`qsave.tower_cache`): SFT's later epochs and GRPO's
    completions of one clip reuse them; the projector still trains. The same values, less work."""
    sampler: SamplerConfig = LOCAL_SAMPLER
    """How the pipeline SlowFast-samples clips for this profile's model (``qsave.recipe.clip_sampler``): the
    small local sizes for the tiny model, Qwen3-VL's own for the 8B."""
    torch_threads: int = 1
    """CPU threads for torch's intra-op work while training (0: torch's default, one per core). The tiny
    model's ops are too small to split: on a shared 2-core machine 2 threads made an SFT step 2–4× slower
    in wall time and 5–7× in CPU time than 1 (``docs/learning.md``)."""

    def __post_init__(self) -> None:
        problems = []
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2", "auto"):
            problems.append(f"unknown attn_implementation {self.attn_implementation!r}")
        if self.distributed not in ("none", "deepspeed", "fsdp"):
            problems.append(f"distributed must be none, deepspeed or fsdp, got {self.distributed!r}")
        if self.torch_threads < 0:
            problems.append(f"torch_threads must be 0 (torch's default) or more, got {self.torch_threads}")
        if self.dataloader_workers < 0:
            problems.append(
                f"dataloader_workers must be 0 (load in the loop) or more, got {self.dataloader_workers}"
            )
        if self.distributed != "none" and not self.distributed_config:
            problems.append(f"distributed={self.distributed!r} needs a distributed_config file")
        if problems:
            raise ValueError(f"invalid ProfileSettings {self.name!r}: " + "; ".join(problems))


def profile_settings(name: str) -> ProfileSettings:
    """The hardware side of a profile: ``local`` or ``qwen3-vl-8b``."""
    if name == "local":
        return ProfileSettings()
    if name == "qwen3-vl-8b":
        return ProfileSettings(
            name=name,
            base_model=PRODUCTION_MODEL,
            dtype="bfloat16",
            attn_implementation="auto",
            gradient_checkpointing=True,
            distributed="deepspeed",
            distributed_config="deepspeed_zero3.json",
            use_cpu=False,
            dataloader_workers=4,
            sampler=SamplerConfig(),
            torch_threads=0,
        )
    raise ValueError(f"unknown training profile {name!r}; use one of {', '.join(PROFILES)}")


def resolve_attn_implementation(name: str) -> str:
    """``auto`` → ``flash_attention_2`` when the ``flash_attn`` package is importable, else ``sdpa``."""
    if name != "auto":
        return name
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def distributed_config_path(profile: ProfileSettings) -> Path:
    path = Path(profile.distributed_config)
    path = path if path.is_absolute() else CONFIG_DIR / path
    if not path.is_file():
        raise FileNotFoundError(f"profile {profile.name!r}: distributed config {path} does not exist")
    return path


def read_fsdp_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An FSDP YAML file: ``fsdp`` (the TrainingArguments option string) and ``fsdp_config`` (a mapping)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("fsdp"), str) or "fsdp_config" not in data:
        raise ValueError(f"{path}: an FSDP config needs keys 'fsdp' (string) and 'fsdp_config' (mapping)")
    return data


def runtime_arguments(profile: ProfileSettings, seed: int) -> dict[str, Any]:
    """``TrainingArguments`` (or trl config) keywords for a profile: precision, checkpointing, devices,
    distribution, seeding, no external reporting."""
    kwargs: dict[str, Any] = {
        "bf16": profile.dtype == "bfloat16",
        "activation_checkpointing": profile.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False}
        if profile.gradient_checkpointing
        else None,
        "use_cpu": profile.use_cpu,
        "dataloader_num_workers": profile.dataloader_workers,
        "dataloader_persistent_workers": profile.dataloader_workers > 0,
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "remove_unused_columns": False,
    }
    if profile.distributed == "deepspeed":
        kwargs["deepspeed"] = str(distributed_config_path(profile))
    elif profile.distributed == "fsdp":
        fsdp = read_fsdp_config(distributed_config_path(profile))
        kwargs["fsdp"] = fsdp["fsdp"]
        kwargs["fsdp_config"] = fsdp["fsdp_config"]
    return kwargs


# --------------------------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class TrainingExample:
    """One rated manifest row with its sampled clip."""

    video_id: str
    clip_path: Path
    prompt: str
    row: dict[str, Any]


@dataclass(frozen=True)
class Skipped:
    """A row that cannot be used for training, and why."""

    video_id: str
    reason: str
    detail: str


def read_clip_table(table: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """The preprocess stage's merged table, from a frame or a Parquet file."""
    import pandas as pd

    frame = table if isinstance(table, pd.DataFrame) else pd.read_parquet(table)
    missing = [c for c in ("video_id", "clip_path", "status") if c not in frame.columns]
    if missing:
        raise ValueError(f"clip table lacks column(s) {', '.join(missing)}; pass qsave.preprocess's table")
    return frame


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _float_or_nan(value: Any) -> float:
    return float("nan") if _is_nan(value) else float(value)


def load_examples(
    manifest: pd.DataFrame,
    clip_table: pd.DataFrame | str | os.PathLike[str],
    split: str | None = "train",
    clips_base_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[TrainingExample], list[Skipped]]:
    """Rated rows of ``split`` (``None``: all rows) joined to their clips; unusable rows as :class:`Skipped`.

    Relative ``clip_path`` values resolve against ``clips_base_dir`` (default: the clip table file's
    folder when a path is given, else the working directory).
    """
    if clips_base_dir is None and not hasattr(clip_table, "columns"):
        clips_base_dir = Path(str(clip_table)).resolve().parent
    table = read_clip_table(clip_table)
    clips = {str(r.video_id): r for r in table.itertuples(index=False)}
    rows = manifest if split is None else manifest[manifest["split"] == split]
    examples, skipped = [], []
    for record in rows.to_dict(orient="records"):
        row = {str(k): v for k, v in record.items()}
        video_id = str(row["video_id"])
        clip = clips.get(video_id)
        if clip is None:
            skipped.append(Skipped(video_id, "no_clip", "not in the clip table; run preprocess on it"))
            continue
        if clip.status == "failed" or not str(clip.clip_path):
            detail = f"preprocessing failed: {getattr(clip, 'reason', '')} {getattr(clip, 'detail', '')}"
            skipped.append(Skipped(video_id, "preprocess_failed", detail.strip()))
            continue
        path = resolve_video_path(str(clip.clip_path), clips_base_dir)
        if not path.is_file():
            skipped.append(Skipped(video_id, "clip_missing", f"{path} is not a file; rerun preprocess"))
            continue
        unrated = [mos_column(d) for d in DIMENSIONS if _is_nan(row.get(mos_column(d)))]
        if unrated:
            skipped.append(Skipped(video_id, "unrated", f"empty {', '.join(unrated)}"))
            continue
        try:
            build_target(row)
        except ValueError as exc:
            skipped.append(Skipped(video_id, "bad_target", str(exc)))
            continue
        examples.append(TrainingExample(video_id, path, str(row["prompt"]), row))
    return examples, skipped


def write_skipped(skipped: Sequence[Skipped], path: str | os.PathLike[str]) -> Path:
    """The skipped rows as a JSON list (written even when empty, so "none skipped" is on record)."""
    return write_text_atomic(path, json.dumps([asdict(s) for s in skipped], indent=2))


class SupervisedDataset:
    """Training items: the clip, the generation prompt, the CoT (or no-think) target, MOS and rater std.

    Each example gets the think target with probability ``think_fraction``, drawn once from ``seed``, so
    a rerun (or a resume) sees the same targets. Clips are read from their ``.npz`` on access.
    """

    def __init__(self, examples: Sequence[TrainingExample], think_fraction: float, seed: int) -> None:
        if not examples:
            raise ValueError("no training examples: every row was skipped (see skipped.json for why)")
        if not 0.0 <= think_fraction <= 1.0:
            raise ValueError(f"think_fraction must be in [0, 1], got {think_fraction}")
        self.examples = list(examples)
        self.think = np.random.default_rng(seed).random(len(self.examples)) < think_fraction

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        row = example.row
        return {
            "video_id": example.video_id,
            "clip": load_clip(example.clip_path),
            "prompt": example.prompt,
            "answer": build_target(row, think=bool(self.think[index])),
            "mos": [float(row[mos_column(d)]) for d in DIMENSIONS],
            "std": [
                float("nan") if _is_nan(row.get(std_column(d))) else float(row[std_column(d)])
                for d in DIMENSIONS
            ],
        }


@dataclass
class SupervisedCollator:
    """Items of :class:`SupervisedDataset` → model inputs (right-padded) with ``labels`` and M-RoPE
    ``position_ids`` (:func:`qsave.inputs.mrope_position_ids`: computed here, in the dataloader worker),
    plus ``level_positions`` (batch × dims) and ``level_targets`` (batch × dims × 5) for the score term."""

    processor: Any
    sigma_min: float

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        batch = build_inputs(
            self.processor,
            [item["clip"] for item in items],
            [item["prompt"] for item in items],
            answers=[item["answer"] for item in items],
            padding_side="right",
        )
        assert batch.level_positions is not None  # answers were given
        targets = soft_level_targets(
            torch.tensor([item["mos"] for item in items]),
            torch.tensor([item["std"] for item in items]),
            self.sigma_min,
        )
        merge = int(self.processor.video_processor.merge_size)
        return {
            **batch.model_kwargs,
            "position_ids": mrope_position_ids(batch.model_kwargs, merge),
            "level_positions": batch.level_positions,
            "level_targets": targets,
        }


# --------------------------------------------------------------------------------------------- models


def lora_module_names(model: Any) -> list[str]:
    """Names of modules that are LoRA layers (peft's ``lora_A``/``lora_B`` holders)."""
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]


def lora_config(lora: LoraSettings, task_type: str | None = None) -> Any:
    """peft's ``LoraConfig`` for ``lora`` (``None`` when LoRA is off); trl's trainers want ``CAUSAL_LM``."""
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type=task_type,
    )


def prepare_for_training(model: Any, lora: LoraSettings) -> Any:
    """A loaded model made ready to train: no KV cache, LoRA applied when ``lora.enabled``, train mode."""
    model.config.use_cache = False
    config = lora_config(lora)
    if config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, config)
    return model.train()


def load_for_training(model_dir: str, profile: ProfileSettings, lora: LoraSettings) -> tuple[Any, Any]:
    """``(model, processor)`` ready to train: a full model (never an adapter), with LoRA applied if asked.
    Sets torch's CPU thread count to the profile's ``torch_threads`` (process-wide) when it names one.

    Raises ``ValueError`` when ``model_dir`` holds a peft adapter (transformers would load its base and
    attach it, and a new LoRA would then sit on an unmerged one): stages hand over merged full models
    (see :func:`save_stage_model`).
    """
    import torch

    if profile.torch_threads:
        torch.set_num_threads(profile.torch_threads)
    if (Path(model_dir) / ADAPTER_FILE).is_file():
        raise ValueError(
            f"{model_dir} holds a LoRA adapter ({ADAPTER_FILE}), not a full model; stages must start from "
            "the merged model directory a previous stage saved (<stage out>/model)"
        )
    model, processor = load_model(
        model_dir,
        dtype=getattr(torch, profile.dtype),
        attn_implementation=resolve_attn_implementation(profile.attn_implementation),
    )
    return prepare_for_training(model, lora), processor


def merged_model(model: Any) -> Any:
    """The plain model with any LoRA adapter merged into its weights (the model itself without one)."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def save_stage_model(
    model: Any,
    processor: Any,
    source_dir: str,
    out_dir: str | os.PathLike[str],
    extra_files: Mapping[str, str] | None = None,
    sampler: SamplerConfig | None = None,
) -> Path:
    """Write the stage's full model (adapter merged), processor, sampler config, system-prompt style and
    ``extra_files`` (name → text, e.g. the stage's config and metrics) to ``out_dir``, atomically; the
    prompt style is the one ``source_dir`` recorded, the sampler config ``sampler`` (the one the stage
    trained on, :attr:`StageInputs.sampler`) or else the one ``source_dir`` recorded."""
    plain = merged_model(model)
    if lora_module_names(plain):
        raise RuntimeError("LoRA layers survived merging; refusing to save a model with nested adapters")
    sampler = sampler or model_sampler_config(source_dir)
    with atomic_path(out_dir) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if sampler is not None:
            save_sampler_config(tmp, sampler)
        save_prompt_style(tmp, model_prompt_style(source_dir))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(out_dir)


def save_trained_model(
    trainer: Any,
    processor: Any,
    source_dir: str,
    profile: ProfileSettings,
    out_dir: str | os.PathLike[str],
    extra_files: Mapping[str, str] | None = None,
    sampler: SamplerConfig | None = None,
) -> Path:
    """Write a finished trainer's model as a full, merged model directory (see :func:`save_stage_model`).

    Every rank calls it: ``trainer.save_model`` gathers DeepSpeed ZeRO-3 / FSDP shards (or, with LoRA,
    the adapter) into a staging folder beside ``out_dir``; the main process then reloads it — the adapter
    on top of ``source_dir``'s weights — merges, and writes ``out_dir`` atomically. One path for one CPU
    process and for a sharded multi-GPU run.
    """
    import torch
    from peft import PeftModel

    out = Path(out_dir)
    staging = out.with_name(f".{out.name}.trained")
    if trainer.is_world_process_zero():  # a run killed while saving left one (maybe a stale adapter in it)
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        dtype = getattr(torch, profile.dtype)
        adapter = (staging / ADAPTER_FILE).is_file()
        model, _ = load_model(str(source_dir if adapter else staging), dtype=dtype)
        if adapter:
            model = PeftModel.from_pretrained(model, staging)
        save_stage_model(model, processor, source_dir, out, extra_files, sampler)
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return out


def _checkpoint_complete(path: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last and in place: a checkpoint killed while saving has
    none, or a truncated one, or one from another step."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and str(state.get("global_step")) == path.name.split("-")[-1]


def last_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete ``checkpoint-<step>`` (a parseable ``trainer_state.json`` of that step), or
    ``None``; half-written ones are skipped."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    complete = [
        p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and _checkpoint_complete(p)
    ]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


# --------------------------------------------------------------------------------------------- trainer parts


def vision_param_groups(
    model: Any, learning_rate: float, vision_lr_multiplier: float, weight_decay: float, decay: set[str]
) -> list[dict[str, Any]]:
    """Optimizer groups: (language model and projector, vision tower) × (decay, no decay); the tower's
    groups get ``lr × multiplier`` (0 keeps the tower fixed).

    The first group is a language-model one, so the learning rate the Trainer logs is the base rate.
    """
    groups = []
    for vision in (False, True):
        for with_decay in (True, False):
            params = [
                p
                for n, p in model.named_parameters()
                if p.requires_grad and is_vision_tower(n) == vision and (n in decay) == with_decay
            ]
            if params:
                groups.append(
                    {
                        "params": params,
                        "weight_decay": weight_decay if with_decay else 0.0,
                        "lr": learning_rate * (vision_lr_multiplier if vision else 1.0),
                    }
                )
    return groups


def freeze_vision_tower(model: Any) -> None:
    """Stop gradients at the projector: the vision tower's parameters stop requiring grad. For a tower
    that trains at rate 0, this saves its backward pass (about a quarter of a local SFT step) and keeps
    its gradients out of the clipped global norm."""
    for name, param in model.named_parameters():
        if is_vision_tower(name):
            param.requires_grad_(False)


class VisionLrMixin:
    """For a ``transformers.Trainer`` subclass: the vision tower (not its projector) trains at
    ``vision_lr_multiplier`` × lr; at 0 it is frozen (:func:`freeze_vision_tower`).

    Put it before the Trainer class in the bases and call :meth:`set_vision_lr_multiplier` in
    ``__init__``.
    """

    vision_lr_multiplier: float = 1.0

    def set_vision_lr_multiplier(self, multiplier: float) -> None:
        self.vision_lr_multiplier = multiplier
        if multiplier == 0:
            trainer: Any = self
            freeze_vision_tower(trainer.model)

    def create_optimizer(self, model: Any = None) -> Any:
        trainer: Any = self
        opt_model = trainer.model if model is None else model
        if trainer.optimizer is None:
            decay = set(trainer.get_decay_parameter_names(opt_model))
            groups = vision_param_groups(
                opt_model,
                trainer.args.learning_rate,
                self.vision_lr_multiplier,
                trainer.args.weight_decay,
                decay,
            )
            optimizer_cls, optimizer_kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, opt_model)
            trainer.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return trainer.optimizer


def metrics_callback(path: str | os.PathLike[str]) -> TrainerCallback:
    """A callback that rewrites ``path`` from the trainer's log history (one JSON line per event) at every
    log, atomically, on the main process."""
    from transformers import TrainerCallback

    class _MetricsJsonl(TrainerCallback):
        def on_log(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            if state.is_world_process_zero:
                lines = [json.dumps(entry, sort_keys=True) for entry in state.log_history]
                write_text_atomic(path, "\n".join(lines) + "\n")

    return _MetricsJsonl()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The log events of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


@dataclass(frozen=True)
class StageOutputs:
    """Where a stage wrote its results under its output directory."""

    root: Path
    model: Path = field(init=False)
    checkpoints: Path = field(init=False)
    metrics: Path = field(init=False)
    skipped: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", self.root / MODEL_DIR)
        object.__setattr__(self, "checkpoints", self.root / CHECKPOINT_DIR)
        object.__setattr__(self, "metrics", self.root / METRICS_FILE)
        object.__setattr__(self, "skipped", self.root / SKIPPED_FILE)


@dataclass(frozen=True)
class StageInputs:
    """What every training stage starts from (see :func:`prepare_stage`)."""

    outputs: StageOutputs
    source: str
    """The resolved base model directory (or hub id)."""
    examples: list[TrainingExample]
    skipped: list[Skipped]
    checkpoint: Path | None
    """The checkpoint to resume from, or None for a fresh start."""
    sampler: SamplerConfig | None
    """The sampler the stage's clips were made with, which the stage's model records: the source model's
    record, else the clip directory's (a hub model records none), else ``None``."""


def prepare_stage(
    stage: str,
    model_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    clips_table: pd.DataFrame | str | os.PathLike[str],
    split: str,
    out_dir: str | os.PathLike[str],
    *,
    clips_base_dir: str | os.PathLike[str] | None = None,
    clips_sampler: SamplerConfig | None = None,
    resume: bool = False,
) -> StageInputs:
    """The common start of a stage: its rows (unusable ones written to ``skipped.json`` and logged), a
    check that the clips were sampled with the model's sampler, and the checkpoint to resume from (without
    ``resume``, old checkpoints are removed). ``clips_sampler``: what the clip directory records
    (:func:`qsave.preprocess.exported_sampler`); it must equal the source model's record, and it is the
    one the stage's model records when the source records none (a hub model). Raises ``ValueError``
    naming the split when no row is usable."""
    import logging

    from qsave.manifest import read_manifest
    from qsave.synthetic import MANIFEST_NAME

    log = logging.getLogger(f"qsave.{stage}")
    outputs = StageOutputs(Path(out_dir))
    source = resolve_model_path(str(model_dir))
    manifest = read_manifest(Path(dataset_dir) / MANIFEST_NAME)
    examples, skipped = load_examples(manifest, clips_table, split, clips_base_dir)
    outputs.root.mkdir(parents=True, exist_ok=True)
    write_skipped(skipped, outputs.skipped)
    for s in skipped:
        log.warning("%s skips %s: %s (%s)", stage, s.video_id, s.reason, s.detail)
    if not examples:
        raise ValueError(
            f"no {stage} rows in split {split!r} of {dataset_dir} ({len(skipped)} skipped, see "
            f"{outputs.skipped}); {stage} needs rated rows with preprocessed clips"
        )
    recorded = model_sampler_config(source) if Path(source).is_dir() else None
    if recorded is not None and clips_sampler is not None and recorded != clips_sampler:
        raise ValueError(
            f"the clips were sampled with {clips_sampler}, but {source} records {recorded}; "
            "preprocess the dataset with the model's sampler (the workflow's `sampler` input)"
        )
    sampler = recorded or clips_sampler
    found = load_clip(examples[0].clip_path).config_fingerprint
    if sampler is not None and found and found != sampler.fingerprint():
        raise ValueError(
            f"row {examples[0].video_id!r}: its clip was sampled with sampler config {found}, but {source} "
            f"records {sampler.fingerprint()}; preprocess the dataset with the model's sampler"
        )
    checkpoint = last_checkpoint(outputs.checkpoints) if resume else None
    if not resume:
        shutil.rmtree(outputs.checkpoints, ignore_errors=True)
    return StageInputs(outputs, source, examples, skipped, checkpoint, sampler)
