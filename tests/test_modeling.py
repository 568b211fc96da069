"""The tiny Qwen3-VL: offline build, determinism, save/reload, the cache, and the level-token rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from qsave.modeling import (
    BUILD_SOURCES,
    SAMPLER_FILE,
    SPECIAL_TOKENS,
    TINY_CONFIG_FILE,
    TinyModelConfig,
    build_tiny,
    load_model,
    model_sampler_config,
    resolve_model_path,
    tiny_model_path,
)
from qsave.prompts import level_text, level_token_ids
from qsave.schema import LEVELS
from qsave.slowfast import LOCAL_SAMPLER
from qsave.storage import file_sha256
from qsave.tracking import configure


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(TinyModelConfig(), tmp_path_factory.mktemp("tiny") / "model")


def test_tiny_is_deterministic_for_a_seed(tiny_dir: Path, tmp_path: Path) -> None:
    again = build_tiny(TinyModelConfig(), tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert file_sha256(tiny_dir / name) == file_sha256(again / name)
    other = build_tiny(TinyModelConfig(seed=1), tmp_path / "other")
    assert file_sha256(other / "model.safetensors") != file_sha256(tiny_dir / "model.safetensors")
    assert file_sha256(other / "tokenizer.json") == file_sha256(tiny_dir / "tokenizer.json")


def test_tiny_reloads_with_auto_classes_and_keeps_its_outputs(tiny_dir: Path) -> None:
    import torch
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    model, processor = load_model(str(tiny_dir))
    assert isinstance(model, Qwen3VLForConditionalGeneration) and isinstance(processor, Qwen3VLProcessor)
    assert 1e6 <= sum(p.numel() for p in model.parameters()) <= 10e6
    vision: Any = model.config.vision_config
    assert (vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size) == (16, 2, 2)
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    for token in (*SPECIAL_TOKENS, "<think>", "</think>"):
        assert token in vocab
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    assert model.config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    ids = torch.tensor([tokenizer.encode("visual quality: good", add_special_tokens=False)])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.save_pretrained(tiny_dir.parent / "resaved")
    processor.save_pretrained(tiny_dir.parent / "resaved")
    reloaded, _ = load_model(str(tiny_dir.parent / "resaved"))
    with torch.no_grad():
        assert torch.equal(before, reloaded(input_ids=ids).logits)
    messages: Any = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}]
    chat = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    user = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n"
    assert chat == user + "<|im_start|>assistant\n"


def test_level_words_are_single_tokens_of_the_tiny_tokenizer(tiny_dir: Path) -> None:
    _, processor = load_model(str(tiny_dir))
    tokenizer = processor.tokenizer
    ids = level_token_ids(tokenizer)
    assert len(set(ids)) == len(LEVELS)
    assert tokenizer.convert_ids_to_tokens(list(ids)) == [f"Ġ{level}" for level in LEVELS]


def _qwen_style_tokenizer(words: list[str]) -> Any:
    """A tokenizer with Qwen's own class and pre-tokenizer, whose merges build exactly ``words``."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = {"<|endoftext|>": 0}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    merges = []
    for word in words:
        current = word[0]
        for char in word[1:]:
            merges.append((current, char))
            current += char
            vocab.setdefault(current, len(vocab))
    return Qwen2Tokenizer(vocab=vocab, merges=cast(Any, merges))


def test_leading_space_rule_on_a_qwen_pre_tokenizer() -> None:
    tokenizer = _qwen_style_tokenizer([f"Ġ{level}" for level in LEVELS])
    ids = level_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(list(ids)) == [f"Ġ{level}" for level in LEVELS]
    # In answer text the level follows "<dimension>:" and a space: the pre-tokenizer keeps the space on
    # the word, so the token in the answer is the leading-space one…
    for level, level_id in zip(LEVELS, ids):
        answer_ids = tokenizer.encode(f"visual quality:{level_text(level)}\nmotion", add_special_tokens=False)
        assert level_id in answer_ids
        # …and the bare word is a different (here: multi-token) sequence.
        assert tokenizer.encode(level, add_special_tokens=False) != [level_id]
    # A tokenizer that only knows the bare words cannot score: a clear error names the offenders.
    bare = _qwen_style_tokenizer(list(LEVELS))
    with pytest.raises(ValueError, match=r"' good'.*one token"):
        level_token_ids(bare)


def test_tiny_model_is_cached_by_config_hash(tmp_path: Path) -> None:
    first = tiny_model_path(TinyModelConfig(), cache_dir=tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path(TinyModelConfig(), cache_dir=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert tiny_model_path(TinyModelConfig(seed=3), cache_dir=tmp_path) != first
    assert json.loads((first / TINY_CONFIG_FILE).read_text())["seed"] == 0


def test_tiny_cache_key_follows_the_build_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit to a module that builds the tiny model gives a new key: a cached model is never stale."""
    import shutil

    import qsave.modeling as modeling

    for name in BUILD_SOURCES:
        shutil.copy(modeling.PACKAGE_DIR / name, tmp_path / name)
    before = TinyModelConfig().config_hash()
    monkeypatch.setattr(modeling, "PACKAGE_DIR", tmp_path)
    assert TinyModelConfig().config_hash() == before
    with (tmp_path / "vision_init.py").open("a") as f:
        f.write("\n# an edit to the front end\n")
    assert TinyModelConfig().config_hash() != before


def test_tied_embeddings_stay_one_matrix_after_reloading(tmp_path: Path) -> None:
    model, _ = load_model(str(tiny_model_path(TinyModelConfig(tie_word_embeddings=True), cache_dir=tmp_path)))
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    untied, _ = load_model(str(tiny_model_path(TinyModelConfig(), cache_dir=tmp_path)))
    assert not torch.equal(untied.lm_head.weight, untied.model.language_model.embed_tokens.weight)


def test_sampler_config_is_recorded_in_the_model_dir(tiny_dir: Path, tmp_path: Path) -> None:
    assert model_sampler_config(tiny_dir) == LOCAL_SAMPLER
    assert model_sampler_config(tmp_path) is None
    (tmp_path / SAMPLER_FILE).write_text('{"fps": -1}')
    with pytest.raises(ValueError, match=SAMPLER_FILE):
        model_sampler_config(tmp_path)


def test_unknown_model_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot load model"):
        load_model(str(tmp_path / "nowhere"))


def test_mlflow_model_uri_resolves_to_the_saved_model(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered pyfunc model carrying the Hugging Face directory as an artefact loads by alias."""
    import mlflow
    import mlflow.pyfunc

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    configure()  # MLflow's process-wide URI outranks the variable once any earlier test has set one

    python_model: Any = mlflow.pyfunc.PythonModel

    class Echo(python_model):
        def predict(self, context: Any, model_input: list[Any]) -> list[Any]:
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Echo(),
            artifacts={"hf_model": str(tiny_dir)},
            registered_model_name="qsave",
        )
    mlflow.MlflowClient().set_registered_model_alias("qsave", "champion", info.registered_model_version)
    resolved = Path(resolve_model_path("models:/qsave@champion"))
    assert file_sha256(resolved / "model.safetensors") == file_sha256(tiny_dir / "model.safetensors")
    model, _ = load_model("models:/qsave@champion")
    assert model.config.model_type == "qwen3_vl"
