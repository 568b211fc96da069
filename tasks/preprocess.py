"""Preprocess: SlowFast-sample the validated videos, sharded over a Flyte map task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flytekit import Deck, Resources, current_context, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from qsave.recipe import Recipe
from qsave.slowfast import SamplerConfig
from tasks import code_cache
from tasks.images import CPU_IMAGE

CODE_CACHE = code_cache(__file__)


@dataclass
class Shard:
    """One map-task element: a slice of the valid manifest, where its videos are, and how to sample."""

    dataset: FlyteDirectory
    rows: FlyteFile
    index: int
    sampler: SamplerConfig


def _workdir(name: str) -> Path:
    return Path(current_context().working_directory) / name


@task(cache=CODE_CACHE, container_image=CPU_IMAGE, requests=Resources(cpu="1", mem="2Gi"))
def plan_shards(
    dataset: FlyteDirectory,
    valid_manifest: FlyteFile,
    n_shards: int,
    recipe: Recipe,
    sampler: SamplerConfig | None = None,
) -> list[Shard]:
    """Deal the valid rows into balanced shards (by video_id, so shards are stable across reruns), each
    sampled with ``sampler`` or else the recipe's profile's sampler."""
    from qsave.manifest import read_manifest, write_manifest
    from qsave.preprocess import shard_manifest
    from qsave.recipe import clip_sampler

    cfg = clip_sampler(recipe, sampler)
    shards = shard_manifest(read_manifest(valid_manifest.download()), n_shards)
    out = _workdir("shards")
    return [
        Shard(dataset, FlyteFile(str(write_manifest(rows, out / f"shard-{i:04d}.parquet"))), i, cfg)
        for i, rows in enumerate(shards)
    ]


@task(cache=CODE_CACHE, container_image=CPU_IMAGE, requests=Resources(cpu="2", mem="4Gi"), retries=2)
def preprocess_shard(shard: Shard) -> FlyteDirectory:
    """Decode and sample one shard (content-addressed cache: unchanged videos are never decoded again)."""
    from qsave.manifest import read_manifest
    from qsave.preprocess import clip_cache_dir, export_clips
    from qsave.preprocess import preprocess_shard as sample_shard
    from qsave.video import DecodeLimits

    rows = read_manifest(shard.rows.download())
    result = sample_shard(
        rows,
        shard.sampler,
        DecodeLimits(),
        clip_cache_dir(),
        base_dir=shard.dataset.download(),
        progress=True,
    )
    print(f"shard {shard.index}: {result.counts}, decoded {result.decoded}")
    out = export_clips(result.table, _workdir(f"shard-{shard.index:04d}"), shard.sampler)
    return FlyteDirectory(str(out))


@task(cache=CODE_CACHE, container_image=CPU_IMAGE, requests=Resources(cpu="1", mem="4Gi"), enable_deck=True)
def merge_clips(shards: list[FlyteDirectory]) -> FlyteDirectory:
    """One clip directory (``clips.parquet`` + ``clips/``) for the next stages; Deck: sample frames."""
    from qsave.preprocess import merge_exported, preview_html

    table = merge_exported([shard.download() for shard in shards], _workdir("clips"))
    Deck("preprocess", preview_html(table))
    return FlyteDirectory(str(_workdir("clips")))
