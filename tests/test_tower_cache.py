"""The frozen vision tower's cache: the same features and projector gradients as the uncached tower, each
distinct clip computed once, refused for a tower that trains, and the tower's forward restored after."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import training_corpus

from qsave.inputs import build_inputs
from qsave.manifest import read_manifest
from qsave.modeling import load_model
from qsave.preprocess import load_clip
from qsave.synthetic import MANIFEST_NAME
from qsave.tower_cache import cached_frozen_tower, tower_cache_for, tower_is_frozen
from qsave.training import freeze_vision_tower, load_examples
from qsave.vision_init import vision_tower


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Video tensors of three clips, the first of them twice (as a GRPO group repeats its clip)."""
    dataset, table = training_corpus(tmp_path_factory.mktemp("tower"), 6)
    examples, _ = load_examples(read_manifest(dataset / MANIFEST_NAME), table)
    _, processor = load_model()
    chosen = [examples[0], examples[1], examples[0], examples[2]]
    batch = build_inputs(processor, [load_clip(e.clip_path) for e in chosen], [e.prompt for e in chosen])
    return {k: batch.model_kwargs[k] for k in ("pixel_values_videos", "video_grid_thw")}


def features_and_projector_grads(model: Any, videos: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The merged visual tokens and DeepStack features of ``videos``, then the projector's gradients of
    a loss on them."""
    model.zero_grad()
    out = model.model.get_video_features(videos["pixel_values_videos"], videos["video_grid_thw"])
    features = [torch.cat(out.pooler_output), *(torch.cat(f) for f in out.deepstack_features)]
    sum(f.square().sum() for f in features).backward()
    grads = [p.grad.clone() for n, p in model.named_parameters() if "merger" in n and p.grad is not None]
    assert grads, "the projector got no gradient"
    return [f.detach() for f in features] + grads


def test_cached_tower_gives_the_same_features_and_gradients(videos: dict[str, torch.Tensor]) -> None:
    model, _ = load_model()
    freeze_vision_tower(model)
    assert tower_is_frozen(model)
    plain = features_and_projector_grads(model, videos)
    segments = len(videos["video_grid_thw"])  # two (slow, fast) per clip
    with cached_frozen_tower(model) as (stats,):
        first = features_and_projector_grads(model, videos)
        assert (stats.misses, stats.hits) == (segments - 2, 2)  # the repeated clip's two segments
        again = features_and_projector_grads(model, videos)
        assert (stats.misses, stats.hits) == (segments - 2, segments + 2)
    for a, b, c in zip(plain, first, again, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0) and torch.equal(b, c)
    assert "forward" not in vars(vision_tower(model)) and not stats.entries  # restored, released

    other = dict(videos, pixel_values_videos=videos["pixel_values_videos"].flip(0))  # reordered patches
    with cached_frozen_tower(model) as (stats,):
        features_and_projector_grads(model, videos)
        changed = features_and_projector_grads(model, other)
        assert stats.misses == 2 * (segments - 2)  # new content is never served from the cache
    assert torch.allclose(changed[0], features_and_projector_grads(model, other)[0], atol=1e-6, rtol=0)


def test_a_tower_that_trains_is_never_cached() -> None:
    model, _ = load_model()
    assert not tower_is_frozen(model)
    with pytest.raises(ValueError, match="frozen vision tower"), cached_frozen_tower(model):
        pytest.fail("a cache was entered for a tower that trains")
    with tower_cache_for([model, None]) as stats:
        assert stats == [] and "forward" not in vars(vision_tower(model))
    freeze_vision_tower(model)
    with tower_cache_for([model], enabled=False) as stats:
        assert stats == []
    with tower_cache_for([model, None]) as stats:
        assert len(stats) == 1 and "forward" in vars(vision_tower(model))
