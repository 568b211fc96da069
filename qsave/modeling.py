"""Base models: load a Qwen3-VL by hub id or path, or build the offline ``tiny`` one.

``tiny`` is a randomly initialised :class:`~transformers.Qwen3VLForConditionalGeneration` with Qwen3-VL's
token geometry (16-px patches, 2-frame temporal patches, 2×2 spatial merge, so one visual token covers
32×32 px of two frames), a byte-level BPE tokenizer trained here on the syllabus/prompt/answer texts with
Qwen's pre-tokenizer and special tokens, Qwen3-VL's chat format and a :class:`Qwen3VLProcessor`. It is
built offline in about a second, deterministically for a seed (same weights, same vocabulary), saved with
``save_pretrained`` and cached by config hash under ``$QSAVE_HOME/models`` (default ``~/.cache/qsave``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from qsave.prompts import SYSTEM_PROMPTS, level_token_ids, tokenizer_corpus
from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig
from qsave.storage import atomic_path, text_sha256, write_text_atomic
from qsave.versioning import PACKAGE_DIR

if TYPE_CHECKING:
    import torch

PRODUCTION_MODEL: Final = "Qwen/Qwen3-VL-8B-Instruct"
TINY: Final = "tiny"
PRETRAINED_TINY: Final = "tiny-pretrained"
"""The tiny model after caption pretraining (:mod:`qsave.pretrain`), built once and cached."""
QUALITY_PRETRAINED_TINY: Final = "tiny-quality-pretrained"
"""The tiny model after the label-free degradation pretext (:mod:`qsave.pretrain`), built once and cached."""
MATCHING_PRETRAINED_TINY: Final = "tiny-matching-pretrained"
"""The tiny model after the caption-matching pretext (:mod:`qsave.pretrain`), built once and cached."""
SAMPLER_FILE: Final = "qsave_sampler.json"
"""In a model directory: the SlowFast sampler config the model was built or trained for."""
PROMPT_FILE: Final = "qsave_prompt.json"
"""In a model directory: the system-prompt style the model was built or trained with (absent: ``full``)."""
TINY_CONFIG_FILE: Final = "qsave_tiny.json"
"""Written by :func:`build_tiny` only: a directory holding it is a freshly built, untrained tiny model."""
BUILD_SOURCES: Final = ("modeling.py", "vision_init.py", "prompts.py", "scenes.py")
"""The qsave modules whose code decides the built tiny model's weights and tokenizer: part of its cache key,
so an edit to them rebuilds a cached model instead of loading a stale one."""
PROMPT_ATTRIBUTE: Final = "qsave_system_prompt"
"""Attribute :func:`load_model` sets on the processor: the model's system-prompt style, which
:func:`qsave.inputs.build_inputs` reads."""
VISION_INITS: Final = ("quality", "random")

SPECIAL_TOKENS: Final = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen's control tokens, in Qwen's id order (skipped when decoding with ``skip_special_tokens``)."""

TEXT_TOKENS: Final = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
"""Qwen3's added tokens that stay in decoded text (as in Qwen3, ``<think>`` is not a special token)."""

CHAT_TEMPLATE: Final = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item.type == 'video' or 'video' in item -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif item.type == 'image' or 'image' in item -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'text' in item -%}{{- item.text -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""Qwen3-VL-Instruct's chat format (system/user/assistant turns, vision placeholders), without tools."""


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Qwen3-VL; the defaults give ~1.4 M parameters. Patch geometry is Qwen3-VL's."""

    seed: int = 0
    vocab_size: int = 2048  # upper bound: BPE stops when the corpus has no more merges
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    mrope_section: tuple[int, int, int] = (6, 5, 5)  # sums to head_dim / 2, as Qwen3-VL's (24, 20, 20)
    vision_hidden_size: int = 96
    """96 since session 13: the same analytic front end in a wider tower reads held-out VQ 0.72 on four
    seeds against 64's 0.67 (MQ 0.61 against 0.58, TA level): ``docs/learning.md``, runs FB. (72 would
    give the tower's four heads a dimension rotary embeddings cannot split.)"""
    vision_intermediate_size: int = 128
    vision_depth: int = 2
    vision_num_heads: int = 4
    vision_num_position_embeddings: int = 256  # a 16×16 learned grid, interpolated to each video's grid
    deepstack_visual_indexes: tuple[int, ...] = (0,)
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    """One matrix for the input embeddings and the output head (as Qwen3-VL-2B/4B; the 8B unties them)."""
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    system_prompt: str = "compact"
    """System-prompt style the model is built for (:data:`qsave.prompts.SYSTEM_PROMPTS`): the syllabus
    would be ~90% of the tiny model's tokens and dominate its step time."""
    vision_init: str = "quality"
    """``quality``: the analytic quality-aware front end of :mod:`qsave.vision_init` in the vision tower's
    patch embedding and first block; ``random``: Qwen3-VL's random initialisation everywhere."""

    def __post_init__(self) -> None:
        if self.vision_init not in VISION_INITS:
            raise ValueError(f"vision_init={self.vision_init!r}: use one of {', '.join(VISION_INITS)}")

    def config_hash(self) -> str:
        """The cache key: this config, the tokenizer's training texts, the vision front end's settings and
        the source of :data:`BUILD_SOURCES` (a change to any of them rebuilds)."""
        from qsave.vision_init import QualityInit

        corpus = text_sha256("\n".join(tokenizer_corpus()))
        front = dataclasses.asdict(QualityInit()) if self.vision_init == "quality" else None
        code = text_sha256("".join((PACKAGE_DIR / name).read_text() for name in BUILD_SOURCES))
        record = {**dataclasses.asdict(self), "corpus": corpus, "front": front, "code": code}
        return text_sha256(json.dumps(record, sort_keys=True))[:12]


def qsave_home() -> Path:
    """Where qsave caches built artefacts: ``$QSAVE_HOME`` or ``~/.cache/qsave``."""
    return Path(os.environ.get("QSAVE_HOME") or Path.home() / ".cache" / "qsave").expanduser()


def _train_tokenizer(cfg: TinyModelConfig) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - len(SPECIAL_TOKENS) - len(TEXT_TOKENS) + 1,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[SPECIAL_TOKENS[0]],
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=cast(Any, [tuple(m) for m in model["merges"]]),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS[1:]], True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def _tiny_model_config(cfg: TinyModelConfig, tokenizer: Any) -> Any:
    from transformers import Qwen3VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim,
            "max_position_embeddings": 32768,
            "initializer_range": cfg.initializer_range,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": list(cfg.mrope_section),
                "mrope_interleaved": True,
            },
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": cfg.tie_word_embeddings,
        },
        vision_config={
            "depth": cfg.vision_depth,
            "hidden_size": cfg.vision_hidden_size,
            "intermediate_size": cfg.vision_intermediate_size,
            "num_heads": cfg.vision_num_heads,
            "out_hidden_size": cfg.hidden_size,
            "patch_size": cfg.patch_size,
            "temporal_patch_size": cfg.temporal_patch_size,
            "spatial_merge_size": cfg.spatial_merge_size,
            "num_position_embeddings": cfg.vision_num_position_embeddings,
            "deepstack_visual_indexes": list(cfg.deepstack_visual_indexes),
            "initializer_range": cfg.initializer_range,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=cfg.tie_word_embeddings,
    )


def _tiny_processor(cfg: TinyModelConfig, tokenizer: Any) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    merge_px = cfg.patch_size * cfg.spatial_merge_size
    geometry: dict[str, Any] = {
        "patch_size": cfg.patch_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "merge_size": cfg.spatial_merge_size,
    }
    image_processor = Qwen2VLImageProcessor(
        **geometry, size={"shortest_edge": 4 * merge_px**2, "longest_edge": 256 * merge_px**2}
    )
    video_processor = Qwen3VLVideoProcessor(
        **geometry, size={"shortest_edge": 4 * merge_px**2, "longest_edge": 1024 * merge_px**2}
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny(cfg: TinyModelConfig, out_dir: str | os.PathLike[str]) -> Path:
    """Build the tiny model, tokenizer and processor into ``out_dir`` (atomically) and return it."""
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    tokenizer = _train_tokenizer(cfg)
    level_token_ids(tokenizer)
    config = _tiny_model_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen3VLForConditionalGeneration(config).eval()
    if cfg.vision_init == "quality":
        from qsave.vision_init import QualityInit, apply_quality_init

        apply_quality_init(model, QualityInit(), cfg.seed)
    model.generation_config = GenerationConfig(
        eos_token_id=[
            tokenizer.convert_tokens_to_ids("<|im_end|>"),
            tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    processor = _tiny_processor(cfg, tokenizer)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / TINY_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
        save_sampler_config(tmp, LOCAL_SAMPLER)
        save_prompt_style(tmp, cfg.system_prompt)
    return Path(out_dir)


def save_prompt_style(model_dir: str | os.PathLike[str], style: str) -> Path:
    """Record in a model directory which system prompt it reads (write it beside every checkpoint)."""
    if style not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown system prompt style {style!r}; use one of {', '.join(SYSTEM_PROMPTS)}")
    return write_text_atomic(Path(model_dir) / PROMPT_FILE, json.dumps({"system_prompt": style}))


def model_prompt_style(model_dir: str | os.PathLike[str]) -> str:
    """The system-prompt style recorded in a model directory; ``full`` (the syllabus) when it records
    none, as for a hub model."""
    path = Path(model_dir) / PROMPT_FILE
    if not path.is_file():
        return "full"
    try:
        style = json.loads(path.read_text())["system_prompt"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid prompt record ({exc}); delete or rewrite it") from exc
    if style not in SYSTEM_PROMPTS:
        raise ValueError(f"{path}: unknown system prompt style {style!r}; use one of {SYSTEM_PROMPTS}")
    return str(style)


def save_sampler_config(model_dir: str | os.PathLike[str], cfg: SamplerConfig) -> Path:
    """Record in a model directory which sampler its inputs come from (write it beside every checkpoint)."""
    return write_text_atomic(
        Path(model_dir) / SAMPLER_FILE, json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
    )


def model_sampler_config(model_dir: str | os.PathLike[str]) -> SamplerConfig | None:
    """The sampler config recorded in a model directory, or ``None`` when it records none."""
    path = Path(model_dir) / SAMPLER_FILE
    if not path.is_file():
        return None
    try:
        return SamplerConfig(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid sampler config ({exc}); delete or rewrite it") from exc


def tiny_model_path(
    cfg: TinyModelConfig | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cached tiny model for ``cfg`` (built on first use): ``<cache>/models/tiny-<config hash>``."""
    cfg = cfg or TinyModelConfig()
    path = Path(cache_dir or qsave_home() / "models") / f"tiny-{cfg.config_hash()}"
    if not (path / "config.json").is_file():
        build_tiny(cfg, path)
    return path


def is_fresh_tiny(name_or_path: str) -> bool:
    """``tiny``, or a directory :func:`build_tiny` wrote (never trained: stages and pretraining save
    without :data:`TINY_CONFIG_FILE`)."""
    return name_or_path == TINY or (Path(name_or_path) / TINY_CONFIG_FILE).is_file()


def resolve_model_path(name_or_path: str) -> str:
    """``tiny`` → the cached tiny model; ``tiny-pretrained`` → the cached caption-pretrained one,
    ``tiny-quality-pretrained`` the degradation-pretrained one and ``tiny-matching-pretrained`` the
    caption-matching one (each built on first use, minutes); a
    ``models:/`` or ``runs:/`` MLflow URI → its downloaded files; anything else (a local path or a hub
    id) unchanged."""
    if name_or_path == TINY:
        return str(tiny_model_path())
    if name_or_path in (PRETRAINED_TINY, QUALITY_PRETRAINED_TINY, MATCHING_PRETRAINED_TINY):
        from qsave.pretrain import PRETEXTS, pretrained_tiny_path

        pretext = next(kind for kind in PRETEXTS.values() if kind.model_name == name_or_path)
        return str(pretrained_tiny_path(pretext()))
    if name_or_path.startswith(("models:/", "runs:/")):
        return str(_download_mlflow_model(name_or_path))
    return name_or_path


def _download_mlflow_model(uri: str) -> Path:
    """Download a registered model's artefacts and find the saved Hugging Face model directory in them
    (a :mod:`qsave.serving` pyfunc keeps it as its ``model_dir`` artifact). The tracking/registry URI is
    :func:`qsave.tracking.tracking_uri` (``$MLFLOW_TRACKING_URI`` or the local sqlite default)."""
    import mlflow.artifacts

    from qsave.tracking import configure

    configure()
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    candidates = sorted(p.parent for p in root.rglob("config.json") if any(p.parent.glob("*.safetensors")))
    if not candidates:
        raise FileNotFoundError(
            f"MLflow model {uri} (downloaded to {root}) holds no Hugging Face model directory "
            "(a folder with config.json and *.safetensors)"
        )
    return min(candidates, key=lambda p: len(p.parts))


def load_model(
    name_or_path: str = TINY,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, processor)`` in eval mode: a local path, a hub id, ``tiny`` or an MLflow URI.

    Loads safetensors only and never runs remote code. Checks that the tokenizer writes each level word
    as one token (probability scoring depends on it). The processor carries the model's system-prompt
    style (:data:`PROMPT_ATTRIBUTE`).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model_path(name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
        model: Any = AutoModelForImageTextToText.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=attn_implementation,
            use_safetensors=True,
            trust_remote_code=False,
        )
    except OSError as exc:
        raise OSError(
            f"cannot load model {name_or_path!r} (resolved to {path}): {exc}. Pass a local model directory, "
            f"'{TINY}', an MLflow URI (models:/name@alias), or a hub id reachable from here."
        ) from exc
    level_token_ids(processor.tokenizer)
    setattr(processor, PROMPT_ATTRIBUTE, model_prompt_style(path) if Path(path).is_dir() else "full")
    if device is not None:
        model = model.to(device)
    return model.eval(), processor
