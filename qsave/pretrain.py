"""A pretrained tiny base: the local profile's stand-in for a pretrained Qwen3-VL.

Production starts from a pretrained VLM that already sees; a randomly initialised tiny Qwen3-VL does not,
and the level-slot loss alone does not teach it to (``docs/learning.md``). :func:`pretrain_tiny` trains
the tiny model to **caption** synthetic clips — the corpus's ``caption`` column: objects, colours, counts,
motion, background and camera, never a quality word — from the video alone (the user turn carries an empty
generation prompt), with token cross-entropy only. The pretraining corpus is its own synthetic corpus
(another seed than the default dataset's), so no evaluation clip is seen.

The result is built once, offline and deterministically, and cached like downloaded weights under
``$QSAVE_HOME/models/tiny-pretrained-<hash>`` (the hash covers :class:`PretrainConfig`, the tiny model's
config and its tokenizer texts); :func:`pretrained_tiny_path` returns it, building it on first use, and
``tiny-pretrained`` as a model name resolves to it (:func:`qsave.modeling.resolve_model_path`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qsave.modeling import PRETRAINED_TINY, TinyModelConfig, qsave_home, tiny_model_path
from qsave.storage import text_sha256

log = logging.getLogger(__name__)

CONFIG_FILE: Final = "qsave_pretrain_config.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Caption pretraining of the tiny model; the defaults take a few minutes on two CPU cores."""

    n_clips: int = 600
    corpus_seed: int = 1001
    """Seed of the pretraining corpus: not the default dataset's (0), so its test clips stay unseen."""
    num_train_epochs: float = 3.0
    learning_rate: float = 2e-3
    vision_lr_multiplier: float = 5.0
    per_device_batch_size: int = 8
    warmup_ratio: float = 0.05
    seed: int = 0
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)

    def config_hash(self) -> str:
        record = {**dataclasses.asdict(self), "tiny": self.tiny.config_hash()}
        return text_sha256(json.dumps(record, sort_keys=True))[:12]


def _caption_items(manifest: Any, clip_table: Any) -> list[dict[str, Any]]:
    from qsave.training import load_examples

    examples, skipped = load_examples(manifest, clip_table, split=None)
    if skipped:
        log.warning("caption pretraining skips %d clips (first: %s)", len(skipped), skipped[0])
    nan = [float("nan")] * 4
    return [
        {"clip_path": e.clip_path, "prompt": "", "answer": str(e.row["caption"]), "mos": nan, "std": nan}
        for e in examples
    ]


class CaptionDataset:
    """(clip, empty prompt, caption) items in the shape :class:`qsave.training.SupervisedCollator` takes
    (no MOS: the level-distribution term has nothing to read)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        if not items:
            raise ValueError("no clips to caption: the pretraining corpus produced no usable clip")
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from qsave.preprocess import load_clip

        item = self.items[index]
        return {**item, "clip": load_clip(item["clip_path"])}


def pretrain_tiny(cfg: PretrainConfig, out_dir: str | os.PathLike[str], progress: bool = False) -> Path:
    """Build the tiny base, caption-pretrain it on a fresh synthetic corpus, save it to ``out_dir``."""
    from transformers import TrainingArguments

    from qsave.manifest import read_manifest
    from qsave.preprocess import merge_results, preprocess_shard
    from qsave.prompts import level_token_ids
    from qsave.sft import dual_supervision_trainer_class
    from qsave.slowfast import LOCAL_SAMPLER
    from qsave.synthetic import MANIFEST_NAME, SynthConfig, generate_corpus
    from qsave.training import (
        LoraSettings,
        ProfileSettings,
        SupervisedCollator,
        load_for_training,
        runtime_arguments,
        save_trained_model,
    )
    from qsave.video import DecodeLimits

    base = str(tiny_model_path(cfg.tiny))
    with tempfile.TemporaryDirectory(prefix="qsave-pretrain-") as tmp:
        work = Path(tmp)
        generate_corpus(SynthConfig(n=cfg.n_clips, seed=cfg.corpus_seed), work / "dataset", progress=progress)
        manifest = read_manifest(work / "dataset" / MANIFEST_NAME)
        shard = preprocess_shard(
            manifest, LOCAL_SAMPLER, DecodeLimits(), work / "clips", work / "dataset", progress
        )
        dataset = CaptionDataset(_caption_items(manifest, merge_results([shard.table])))
        profile = ProfileSettings()
        args = TrainingArguments(
            output_dir=str(work / "checkpoints"),
            learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.num_train_epochs,
            per_device_train_batch_size=cfg.per_device_batch_size,
            warmup_steps=cfg.warmup_ratio,
            lr_scheduler_type="cosine",
            save_strategy="no",
            logging_steps=5,
            logging_first_step=True,
            disable_tqdm=not progress,
            **runtime_arguments(profile, cfg.seed),
        )
        model, processor = load_for_training(base, profile, LoraSettings())
        level_token_ids(processor.tokenizer)
        trainer = dual_supervision_trainer_class()(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=SupervisedCollator(processor, sigma_min=0.3),
            processing_class=processor,
            lam=0.0,
            vision_lr_multiplier=cfg.vision_lr_multiplier,
        )
        trainer.train()
        history = "\n".join(json.dumps(e, sort_keys=True) for e in trainer.state.log_history)
        extra = {
            CONFIG_FILE: json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True),
            "metrics.jsonl": history,
        }
        return save_trained_model(trainer, processor, base, profile, out_dir, extra)


def pretrained_tiny_path(
    cfg: PretrainConfig | None = None, cache_dir: str | os.PathLike[str] | None = None, progress: bool = False
) -> Path:
    """The cached caption-pretrained tiny model (built on first use): ``<cache>/tiny-pretrained-<hash>``."""
    cfg = cfg or PretrainConfig()
    path = Path(cache_dir or qsave_home() / "models") / f"{PRETRAINED_TINY}-{cfg.config_hash()}"
    if not (path / "config.json").is_file():
        log.info("caption-pretraining the tiny base model into %s (once; cached)", path)
        pretrain_tiny(cfg, path, progress)
    return path
