"""A pretrained tiny base: the local profile's stand-in for a pretrained Qwen3-VL.

Production starts from a pretrained VLM that already sees; a randomly initialised tiny Qwen3-VL does not,
and the level-slot loss alone does not teach it to (``docs/learning.md``). :func:`pretrain_tiny` trains
the tiny model to **caption** synthetic clips — the corpus's ``caption`` column: objects, colours, counts,
motion, background and camera, never a quality word — from the video alone (the user turn carries an empty
generation prompt), with token cross-entropy only. The pretraining corpus is its own synthetic corpus
(another seed than the default dataset's), so no evaluation clip is seen.

The result is built once, offline and deterministically, and cached like downloaded weights under
``$QSAVE_HOME/models/tiny-pretrained-<hash>`` (the hash covers :class:`PretrainConfig`, the tiny model's
key and the source the pretraining runs, so an edit to that code rebuilds); :func:`pretrained_tiny_path`
returns it, building it on first use, and ``tiny-pretrained`` as a model name resolves to it
(:func:`qsave.modeling.resolve_model_path`).

A second, label-free pretext (:class:`DegradationPretrainConfig`, cached as
``tiny-quality-pretrained-<hash>``): each pretraining clip is degraded on the fly with one of the
frame-level artefacts of :mod:`qsave.artefacts` (or none) at a random severity, and the model names the
family and a severity bin ("blur strong", "clean") from the video — quality-aware features without MOS or
reasons (ARNIQA/CONTRIQUE-style). ``tiny-quality-pretrained`` resolves to it.

A third (:class:`MatchingPretrainConfig`, ``tiny-matching-pretrained``): image–text matching, the
grounding a pretrained VLM brings to text–video alignment. Each clip is shown with a caption in the user
turn — where SFT puts the generation prompt — either its own (answer ``yes``) or one altered in a single
attribute (:func:`alter_caption`: colour, shape, count or direction of the first object group, an
object the clip does not show, another background; answer ``no, wrong color``, …).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from qsave.modeling import (
    MATCHING_PRETRAINED_TINY,
    PRETRAINED_TINY,
    QUALITY_PRETRAINED_TINY,
    TinyModelConfig,
    qsave_home,
    tiny_model_path,
)
from qsave.storage import text_sha256
from qsave.versioning import source_hash

log = logging.getLogger(__name__)

CONFIG_FILE: Final = "qsave_pretrain_config.json"
DEGRADATION_FAMILIES: Final = (
    "blur",
    "noise",
    "compression_blocks",
    "low_detail",
    "exposure",
    "color_distortion",
    "flicker",
    "freeze_stutter",
)
"""The frame-level artefacts of :func:`qsave.artefacts.degrade_frames` the degradation pretext names."""
CLEAN: Final = "clean"
SEVERITY_BINS: Final = (("mild", 0.15, 0.5), ("strong", 0.5, 1.0))
"""``(name, low, high)``: a degraded view's severity is drawn uniformly in one bin."""

ALTERATIONS: Final = (
    "wrong_color",
    "wrong_shape",
    "wrong_count",
    "wrong_direction",
    "missing_object",
    "wrong_scene",
)
"""How the matching pretext alters a caption: the alignment reasons of :mod:`qsave.taxonomy`, told in text
(``missing_object`` claims one more object than the clip shows)."""


@dataclass(frozen=True)
class PretrainConfig:
    """Caption pretraining of the tiny model; the defaults take a few minutes on two CPU cores."""

    n_clips: int = 600
    corpus_seed: int = 1001
    """Seed of the pretraining corpus: not the default dataset's (0), so its test clips stay unseen."""
    num_train_epochs: float = 3.0
    learning_rate: float = 2e-3
    vision_lr_multiplier: float = 0.0
    """0 keeps the tiny model's analytic vision front end (:mod:`qsave.vision_init`) fixed, as stage 1
    does."""
    per_device_batch_size: int = 8
    warmup_ratio: float = 0.05
    seed: int = 0
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    model_name: ClassVar[str] = PRETRAINED_TINY

    def config_hash(self) -> str:
        """The cache key: this config, the tiny base's key and the source this module runs (an edit to the
        corpus, preprocessing or training code rebuilds the cached model)."""
        record = {
            **dataclasses.asdict(self),
            "tiny": self.tiny.config_hash(),
            "code": source_hash(Path(__file__)),
        }
        return text_sha256(json.dumps(record, sort_keys=True))[:12]

    def dataset(self, items: list[dict[str, Any]]) -> CaptionDataset:
        return CaptionDataset(items)


@dataclass(frozen=True)
class DegradationPretrainConfig(PretrainConfig):
    """Degradation pretext: name the artefact family and severity bin applied on the fly to each clip."""

    views_per_clip: int = 3
    """Degraded views of each clip per epoch (each with its own family and severity)."""
    clean_share: float = 1.0 / 9.0
    """Share of views left undegraded (answer ``clean``)."""
    families: tuple[str, ...] = DEGRADATION_FAMILIES
    model_name: ClassVar[str] = QUALITY_PRETRAINED_TINY

    def dataset(self, items: list[dict[str, Any]]) -> CaptionDataset:
        return DegradationDataset(items, self)


@dataclass(frozen=True)
class MatchingPretrainConfig(PretrainConfig):
    """Caption matching: does a caption describe the clip? Half the captions are altered in one attribute."""

    views_per_clip: int = 4
    """Captions shown with each clip per epoch (each true or altered on its own draw)."""
    match_share: float = 0.5
    """Share of views that show the clip's true caption (answer ``yes``)."""
    alterations: tuple[str, ...] = tuple(a for a in ALTERATIONS if a != "missing_object")
    """Which of :data:`ALTERATIONS` altered captions use. ``missing_object`` is left out by default: an
    added object group makes the caption longer than the true ones, a cue that needs no video (a model
    pretrained with it tells it apart 98 % of the time while scoring the others at chance)."""
    model_name: ClassVar[str] = MATCHING_PRETRAINED_TINY

    def __post_init__(self) -> None:
        unknown = [a for a in self.alterations if a not in ALTERATIONS]
        if unknown or not self.alterations:
            raise ValueError(
                f"alterations={self.alterations}: choose one or more of {', '.join(ALTERATIONS)}"
            )

    def dataset(self, items: list[dict[str, Any]]) -> CaptionDataset:
        return MatchingDataset(items, self)


PRETEXTS: Final[dict[str, type[PretrainConfig]]] = {
    "caption": PretrainConfig,
    "degradation": DegradationPretrainConfig,
    "matching": MatchingPretrainConfig,
}
"""The pretraining tasks by name."""


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


def degrade_view(frames: np.ndarray, family: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 frames ``(T, H, W, 3)`` with one :func:`qsave.artefacts.degrade_frames` artefact applied."""
    from qsave.artefacts import degrade_frames

    if family == CLEAN:
        return frames
    out = degrade_frames(frames.astype(np.float32) / 255.0, {family: severity}, rng)
    return np.round(out * 255.0).astype(np.uint8)


class DegradationDataset(CaptionDataset):
    """``views_per_clip`` views of every clip, each degraded by one family at a random severity (or left
    clean), answered ``"<family> <bin>"``; the draw is a function of ``(seed, index)``, so deterministic."""

    def __init__(self, items: list[dict[str, Any]], cfg: DegradationPretrainConfig) -> None:
        super().__init__(items)
        unknown = [f for f in cfg.families if f not in DEGRADATION_FAMILIES]
        if unknown:
            raise ValueError(f"unknown degradation families {unknown}; choose from {DEGRADATION_FAMILIES}")
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.items) * self.cfg.views_per_clip

    def view(self, index: int) -> tuple[str, float, np.random.Generator]:
        """``(family, severity, rng)`` of view ``index``."""
        rng = np.random.default_rng([self.cfg.seed, index])
        if rng.random() < self.cfg.clean_share:
            return CLEAN, 0.0, rng
        family = str(rng.choice(self.cfg.families))
        _, low, high = SEVERITY_BINS[int(rng.integers(len(SEVERITY_BINS)))]
        return family, float(rng.uniform(low, high)), rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index % len(self.items))
        family, severity, rng = self.view(index)
        clip = item["clip"]
        slow = dataclasses.replace(clip.slow, frames=degrade_view(clip.slow.frames, family, severity, rng))
        fast = dataclasses.replace(clip.fast, frames=degrade_view(clip.fast.frames, family, severity, rng))
        answer = CLEAN if family == CLEAN else f"{family.replace('_', ' ')} {severity_bin(severity)}"
        return {**item, "clip": dataclasses.replace(clip, slow=slow, fast=fast), "answer": answer}


def _group_pattern() -> re.Pattern[str]:
    from qsave.scenes import COLORS, COUNT_WORDS, DIRECTIONS, SHAPES

    def alt(words: Any) -> str:
        return "|".join(words)

    return re.compile(
        rf"\b({alt(COUNT_WORDS.values())}) ({alt(COLORS)}) ({alt(SHAPES)})s? moving ({alt(DIRECTIONS)})"
    )


def alter_caption(caption: str, alteration: str, rng: np.random.Generator) -> str | None:
    """``caption`` (:func:`qsave.scenes.caption`'s grammar) with its first object group or its background
    changed by ``alteration`` (one of :data:`ALTERATIONS`); ``None`` when the caption has nothing to alter
    that way (no object group)."""
    from qsave.scenes import BACKGROUNDS, COLORS, COUNT_WORDS, DIRECTIONS, SHAPES, phrase_group

    if alteration not in ALTERATIONS:
        raise ValueError(f"unknown alteration {alteration!r}; choose from {', '.join(ALTERATIONS)}")

    def other(choices: Any, current: str) -> str:
        return str(rng.choice([c for c in choices if c != current]))

    if alteration == "wrong_scene":
        match = re.search(rf"over a ({'|'.join(BACKGROUNDS)}) background", caption)
        if match is None:
            return None
        return caption[: match.start(1)] + other(BACKGROUNDS, match.group(1)) + caption[match.end(1) :]
    if alteration == "missing_object":
        extra = phrase_group(
            1, str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)), str(rng.choice(list(DIRECTIONS)))
        )
        if caption.startswith(f"{COUNT_WORDS[0]} objects "):
            return extra + caption[len(f"{COUNT_WORDS[0]} objects") :]
        return caption.replace(" over a ", f" and {extra} over a ", 1)
    match = _group_pattern().search(caption)
    if match is None or match.group(1) == COUNT_WORDS[0]:
        return None
    count_by_word = {word: n for n, word in COUNT_WORDS.items()}
    count, color, shape, direction = count_by_word[match.group(1)], *match.group(2, 3, 4)
    if alteration == "wrong_color":
        color = other(COLORS, color)
    elif alteration == "wrong_shape":
        shape = other(SHAPES, shape)
    elif alteration == "wrong_count":
        count = count + 1 if count == 1 or (count < max(COUNT_WORDS) and rng.random() < 0.5) else count - 1
    else:
        direction = other(DIRECTIONS, direction)
    return caption[: match.start()] + phrase_group(count, color, shape, direction) + caption[match.end() :]


class MatchingDataset(CaptionDataset):
    """``views_per_clip`` (clip, caption) pairs per clip: the caption — in the user turn, where the
    generation prompt goes in SFT — is the clip's own (answer ``yes``) or altered by one of
    :data:`ALTERATIONS` (answer ``no, wrong color``, …); the draw is a function of ``(seed, index)``."""

    def __init__(self, items: list[dict[str, Any]], cfg: MatchingPretrainConfig) -> None:
        super().__init__(items)
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.items) * self.cfg.views_per_clip

    def pair(self, index: int) -> tuple[str, str]:
        """``(caption shown, answer)`` of view ``index``."""
        true = str(self.items[index % len(self.items)]["answer"])
        rng = np.random.default_rng([self.cfg.seed, index])
        if rng.random() >= self.cfg.match_share:
            for alteration in rng.permutation(self.cfg.alterations):
                altered = alter_caption(true, str(alteration), rng)
                if altered is not None:
                    return altered, f"no, {str(alteration).replace('_', ' ')}"
        return true, "yes"

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index % len(self.items))
        shown, answer = self.pair(index)
        return {**item, "prompt": shown, "answer": answer}


def severity_bin(severity: float) -> str:
    return next(name for name, _, high in SEVERITY_BINS if severity <= high)


def pretrain_tiny(cfg: PretrainConfig, out_dir: str | os.PathLike[str], progress: bool = False) -> Path:
    """Build the tiny base, pretrain it on a fresh synthetic corpus (captions, or the degradation pretext
    for a :class:`DegradationPretrainConfig`), save it to ``out_dir``."""
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
        dataset = cfg.dataset(_caption_items(manifest, merge_results([shard.table])))
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
    """The cached pretrained tiny model (built on first use): ``<cache>/<cfg.model_name>-<hash>``
    (``tiny-pretrained`` for captions, ``tiny-quality-pretrained`` for the degradation pretext)."""
    cfg = cfg or PretrainConfig()
    path = Path(cache_dir or qsave_home() / "models") / f"{cfg.model_name}-{cfg.config_hash()}"
    if not (path / "config.json").is_file():
        log.info("pretraining the tiny base model into %s (once; cached)", path)
        pretrain_tiny(cfg, path, progress)
    return path
