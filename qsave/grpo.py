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
from qsave.manifest import read_manifest
from qsave.modeling import SPECIAL_TOKENS, load_model, model_sampler_config, save_sampler_config
from qsave.preprocess import load_clip
from qsave.rewards import ACCURACY_SIGMA, reward_functions
from qsave.schema import DIMENSIONS, REASON_DIMENSIONS, mos_column, reasons_column
from qsave.storage import atomic_path, write_text_atomic
from qsave.synthetic import MANIFEST_NAME

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

METRICS_FILE: Final = "metrics.jsonl"
SKIPPED_FILE: Final = "skipped.jsonl"
MODEL_DIR: Final = "model"
CHECKPOINT_DIR: Final = "checkpoints"
VISION_PLACEHOLDERS: Final = tuple(t for t in SPECIAL_TOKENS if t.startswith("<|vision") or "_pad|>" in t)
"""Tokens a rollout must never produce: they would be read as video/image positions."""
LORA_TARGETS: Final = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's projections (Qwen3-VL's vision tower names its layers differently)."""


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
    lora_r: int = 16
    """LoRA rank on the language model's projections; 0 trains every weight (full fine-tuning)."""
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    save_steps: int = 25
    seed: int = 0
    split: str = "train"
    """Manifest split the prompts come from."""
    bf16: bool = False
    gradient_checkpointing: bool = False
    output_dir: str = ""
    """Where trl writes checkpoints; empty: ``<out_dir>/checkpoints``."""
    resume: bool = False
    """Continue from the last checkpoint under the checkpoint directory when there is one."""
    extra_args: dict[str, Any] = field(default_factory=dict)
    """Further ``trl.GRPOConfig`` fields (e.g. DeepSpeed/FSDP settings of a cluster profile)."""

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations}: GRPO compares at least 2 completions")
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} must be a multiple of "
                f"num_generations={self.num_generations} (whole groups per step)"
            )
        if len(self.reward_weights) != 3:
            raise ValueError(f"reward_weights={self.reward_weights}: give format, accuracy, attribution")


# --------------------------------------------------------------------------------------------- data


def _clip_table(path: str | os.PathLike[str]) -> dict[str, str]:
    """``video_id`` → absolute clip path of the processed/cached rows of a preprocess table."""
    import pandas as pd

    path = Path(path)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
    clips = {}
    for video_id, status, clip in table[["video_id", "status", "clip_path"]].itertuples(index=False):
        if status in ("processed", "cached") and isinstance(clip, str) and clip:
            clip_path = Path(clip)
            clips[str(video_id)] = str(clip_path if clip_path.is_absolute() else path.parent / clip_path)
    return clips


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_rows(
    dataset_dir: str | os.PathLike[str], clips_table: str | os.PathLike[str], split: str = "train"
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """GRPO rows (``prompt``, ``clip_path``, ``video_id``, MOS, reasons) of one split, and the skipped rows.

    A row is skipped, with its ``video_id`` and the reason, when a MOS is empty or its video has no clip
    in the preprocess table (failed or missing).
    """
    manifest = read_manifest(Path(dataset_dir) / MANIFEST_NAME)
    clips = _clip_table(clips_table)
    rows, skipped = [], []
    for record in manifest[manifest["split"] == split].to_dict("records"):
        video_id = str(record["video_id"])
        empty = [mos_column(d) for d in DIMENSIONS if _is_missing(record.get(mos_column(d)))]
        if empty:
            skipped.append({"video_id": video_id, "reason": f"unrated: {', '.join(empty)} empty"})
            continue
        if video_id not in clips:
            skipped.append({"video_id": video_id, "reason": f"no clip in {clips_table} (failed or missing)"})
            continue
        row: dict[str, Any] = {
            "prompt": str(record["prompt"]),
            "clip_path": clips[video_id],
            "video_id": video_id,
        }
        row.update({mos_column(d): float(record[mos_column(d)]) for d in DIMENSIONS})
        for dim in REASON_DIMENSIONS:
            raw: Any = record.get(reasons_column(dim))
            row[reasons_column(dim)] = [] if _is_missing(raw) else [str(c) for c in raw]
        rows.append(row)
    return rows, skipped


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

    class VideoGRPOTrainer(GRPOTrainer):
        """``GRPOTrainer`` whose every log-prob pass (policy, old policy, reference) sees the video.

        Dataset rows carry ``prompt`` (the generation prompt) and ``clip_path`` (a preprocessed clip); see
        the module docstring for the four overridden methods and why.
        """

        _active_videos: Sequence[SampleVideo] | None = None
        _pending_prompts: Sequence[VideoPrompt] = ()

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
        save_steps=cfg.save_steps,
        save_strategy="steps",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=1,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        generation_kwargs={"suppress_tokens": suppress},
        **cfg.extra_args,
    )


def _lora_config(cfg: GRPOStageConfig) -> Any:
    if cfg.lora_r == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )


def _write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _last_checkpoint(directory: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def build_trainer(
    model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], cfg: GRPOStageConfig, output_dir: Path
) -> Any:
    """A :class:`VideoGRPOTrainer` over ``rows`` (from :func:`load_rows`) with qsave's rewards."""
    from datasets import Dataset

    model.train()
    return _trainer_class()(
        model=model,
        reward_funcs=reward_functions(cfg.accuracy_sigma),
        args=_grpo_args(cfg, output_dir, processor),
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=processor,
        peft_config=_lora_config(cfg),
    )


def run_grpo(
    model_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    clips_table: str | os.PathLike[str],
    cfg: GRPOStageConfig,
    out_dir: str | os.PathLike[str],
) -> Path:
    """Train ``model_dir`` with GRPO on the rated rows of ``cfg.split``; return the merged model directory.

    Writes into ``out_dir``: ``model/`` (a full model — LoRA merged — with its processor and sampler
    config, loadable by :func:`qsave.modeling.load_model`), ``metrics.jsonl`` (trl's log history, one
    line per step: ``rewards/<function>/mean``, ``reward``, ``kl``, ``completions/mean_length`` …),
    ``skipped.jsonl`` (rows left out and why) and ``checkpoints/`` (every ``cfg.save_steps``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = load_rows(dataset_dir, clips_table, cfg.split)
    _write_jsonl(out / SKIPPED_FILE, skipped)
    for entry in skipped:
        log.warning("GRPO skips row %s: %s", entry["video_id"], entry["reason"])
    if not rows:
        raise ValueError(
            f"no GRPO rows in split {cfg.split!r} of {dataset_dir} ({len(skipped)} skipped, see "
            f"{out / SKIPPED_FILE}); GRPO needs rated rows with preprocessed clips"
        )
    sampler = model_sampler_config(model_dir)
    if sampler is not None:
        found = load_clip(rows[0]["clip_path"]).config_fingerprint
        if found and found != sampler.fingerprint():
            raise ValueError(
                f"row {rows[0]['video_id']!r}: its clip was sampled with sampler config {found}, but "
                f"{model_dir} records {sampler.fingerprint()}; preprocess the dataset with the model's "
                "sampler"
            )

    model, processor = load_model(str(model_dir))
    checkpoints = Path(cfg.output_dir) if cfg.output_dir else out / CHECKPOINT_DIR
    trainer = build_trainer(model, processor, rows, cfg, checkpoints)
    trainer.train(resume_from_checkpoint=_last_checkpoint(checkpoints) if cfg.resume else None)
    _write_jsonl(out / METRICS_FILE, trainer.state.log_history)

    trained = trainer.model
    if cfg.lora_r:
        trained = trained.merge_and_unload()
    with atomic_path(out / MODEL_DIR) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if sampler is not None:
            save_sampler_config(tmp, sampler)
        (tmp / "qsave_grpo.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
    return out / MODEL_DIR
