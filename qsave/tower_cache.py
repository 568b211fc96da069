"""Compute a frozen vision tower once per clip: its outputs are cached, the projector still trains.

When the vision tower does not train (the local profile's ``vision_lr_multiplier = 0``,
:func:`qsave.training.freeze_vision_tower`), every epoch of SFT runs it on the same pixels again, and a
GRPO step runs it on each of a group's completions although they share one clip: in generation, in the
reference model's pass and in the policy's. :func:`cached_frozen_tower` wraps the tower's forward so that
the blocks run once per distinct clip, and what the projector reads — the last block's output and the
DeepStack blocks' outputs — is kept; the projector (``merger``, ``deepstack_merger_list``) runs on every
call, with gradients, as before. The result is the same computation: a clip's tower output depends only on
its own pixels (attention stays within a clip's frames), so taking it from the cache changes no value
(``tests/test_tower_cache.py`` checks trained weights against an uncached run).

Clips are recognised by their content, not by a name the caller must pass along: each clip's patch rows
are projected onto four fixed random directions, summed plainly and position-weighted (so reordered
patches differ), and the sums, with the clip's (t, h, w) grid, are the key. Two different clips share a
key only if their difference is orthogonal to all eight fixed weightings at float precision; projecting
costs ~1/100 of the tower, where hashing the pixel bytes cost half of what caching saved (session 12).

The cache lives in memory for one stage (a ``with`` block around training): at the tiny model's sizes
840 clips × 2 levels × 320 patches × 96 channels ≈ 200 MB. It refuses a tower that has a trainable
parameter, since a cached output of a changing tower would be stale.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qsave.training import is_vision_tower
from qsave.vision_init import vision_tower

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FINGERPRINT_DIRECTIONS = 4
"""Random directions each clip's patch rows are projected onto to form its key."""


@dataclass
class TowerCacheStats:
    """Per clip segment: how often the tower's outputs came from the cache (``hits``) or were computed
    (``misses``)."""

    hits: int = 0
    misses: int = 0
    entries: dict[tuple[Any, ...], tuple[torch.Tensor, ...]] = field(default_factory=dict, repr=False)


def tower_is_frozen(model: Any) -> bool:
    """Whether no parameter of ``model``'s vision tower proper (its projector aside) requires grad."""
    return not any(p.requires_grad for n, p in model.named_parameters() if is_vision_tower(n))


def _fingerprints(rows: torch.Tensor, sizes: list[int], grids: torch.Tensor) -> list[tuple[Any, ...]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(rows.shape[1], FINGERPRINT_DIRECTIONS, generator=generator).to(rows)
    keys = []
    for clip, grid in zip(torch.split(rows, sizes), grids.tolist(), strict=True):
        projected = (clip @ directions).double()
        position = torch.arange(1, clip.shape[0] + 1, dtype=torch.float64, device=clip.device)
        weighted = (projected * position[:, None]).sum(0)
        keys.append((*grid, *projected.sum(0).tolist(), *weighted.tolist()))
    return keys


def _tower_levels(
    visual: Any, forward: Any, wanted: list[int], rows: torch.Tensor, grids: torch.Tensor
) -> list[torch.Tensor]:
    """The outputs of blocks ``wanted`` for ``rows`` (patch rows of the clips in ``grids``), by the
    tower's own forward with hooks on those blocks."""
    import torch

    captured: dict[int, torch.Tensor] = {}

    def keep(index: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            captured[index] = output.detach()

        return hook

    hooks = [visual.blocks[i].register_forward_hook(keep(i)) for i in wanted]
    try:
        with torch.no_grad():
            forward(rows, grid_thw=grids)
    finally:
        for hook in hooks:
            hook.remove()
    return [captured[i] for i in wanted]


def _cached_forward(visual: Any, forward: Any, stats: TowerCacheStats) -> Any:
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    indexes = list(visual.deepstack_visual_indexes)
    wanted = sorted({*indexes, len(visual.blocks) - 1})  # the blocks whose outputs the projector reads

    def cached(hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
        import torch

        if any(kwargs.get(k) for k in ("output_hidden_states", "output_attentions")):
            return forward(hidden_states, grid_thw=grid_thw, **kwargs)
        sizes = grid_thw.prod(-1).tolist()
        keys = _fingerprints(hidden_states, sizes, grid_thw)
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        missing = sorted(i for key, i in first.items() if key not in stats.entries)
        stats.misses += len(missing)
        stats.hits += len(keys) - len(missing)
        if missing:
            clips = torch.split(hidden_states, sizes)
            levels = _tower_levels(
                visual, forward, wanted, torch.cat([clips[i] for i in missing]), grid_thw[missing]
            )
            per_clip = [torch.split(level, [sizes[i] for i in missing]) for level in levels]
            for j, i in enumerate(missing):
                stats.entries[keys[i]] = tuple(level[j] for level in per_clip)
        levels = [torch.cat([stats.entries[key][k] for key in keys]) for k in range(len(wanted))]
        by_block = dict(zip(wanted, levels, strict=True))
        last = by_block[len(visual.blocks) - 1]
        return BaseModelOutputWithDeepstackFeatures(
            last_hidden_state=last,
            pooler_output=visual.merger(last),
            deepstack_features=[
                merger(by_block[i]) for i, merger in zip(indexes, visual.deepstack_merger_list, strict=True)
            ],
        )

    return cached


def tower_cache_for(models: Sequence[Any], enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """:func:`cached_frozen_tower` for those of ``models`` (``None`` skipped) whose tower is frozen; a
    no-op context when ``enabled`` is off or none is frozen (a tower that trains is never cached)."""
    frozen = [m for m in models if m is not None and tower_is_frozen(m)]
    return cached_frozen_tower(*frozen) if enabled and frozen else contextlib.nullcontext([])


@contextlib.contextmanager
def cached_frozen_tower(*models: Any) -> Iterator[list[TowerCacheStats]]:
    """Within the block, each model's frozen vision tower runs once per distinct clip (one cache per
    model). Raises ``ValueError`` for a model whose tower has a trainable parameter. Yields the caches'
    statistics; the models' forwards are restored on exit."""
    for model in models:
        if not tower_is_frozen(model):
            raise ValueError(
                "cached_frozen_tower needs a frozen vision tower; this one trains (vision_lr_multiplier > 0)"
            )
    visuals = [vision_tower(model) for model in models]
    stats = [TowerCacheStats() for _ in visuals]
    for visual, stat in zip(visuals, stats, strict=True):
        visual.forward = _cached_forward(visual, visual.forward, stat)
    try:
        yield stats
    finally:
        for visual, stat in zip(visuals, stats, strict=True):
            del visual.forward  # the instance attribute: the class's forward is visible again
            log.info(
                "frozen vision tower: %d clips computed, %d taken from the cache", stat.misses, stat.hits
            )
            stat.entries.clear()
