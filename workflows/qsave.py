"""The qsave pipeline — read this file to see the whole system.

    ingest ──► validate ──► preprocess (SlowFast, a map task over shards) ──► merge

Run locally on the embedded default (a synthetic AIGV corpus):

    pyflyte run workflows/qsave.py qsave_pipeline
    pyflyte run workflows/qsave.py qsave_pipeline \
        --data '{"source": "aigve", "uri": "../shared/data/aigve-bench-toy"}' --max_quarantine 0.5

and on a cluster with ``pyflyte run --remote …``. Every task is cached by its inputs and the qsave source.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

from flytekit import map_task, workflow
from flytekit.types.directory import FlyteDirectory

from qsave.ingest import IngestConfig
from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig
from tasks.data import Validated, ingest, validate
from tasks.preprocess import merge_clips, plan_shards, preprocess_shard

# pyflyte registers bool inputs under both --a_b and --a-b and warns about its own duplicate.
warnings.filterwarnings("ignore", message=r"The parameter --\w+ is used more than once")


class PipelineOutputs(NamedTuple):
    validation: Validated
    clips: FlyteDirectory


@workflow
def qsave_pipeline(
    data: IngestConfig = IngestConfig(),  # noqa: B008
    max_quarantine: float = 0.25,
    require_labels: bool = True,
    sampler: SamplerConfig = LOCAL_SAMPLER,
    n_shards: int = 4,
) -> PipelineOutputs:
    """Ingest a dataset, validate it (quarantine bad rows), SlowFast-sample the valid videos, …

    :param data: where the data comes from (default: the synthetic corpus, 600 clips, seed 0).
    :param max_quarantine: fail when more than this share of rows is quarantined.
    :param require_labels: quarantine rows without MOS (turn off for prompt-only scoring sets).
    :param sampler: SlowFast sampling (default: the small local sizes; production uses SamplerConfig()).
    :param n_shards: preprocessing shards, processed in parallel on a cluster.
    """
    dataset = ingest(data=data)
    validated = validate(dataset=dataset, max_quarantine=max_quarantine, require_labels=require_labels)
    shards = plan_shards(
        dataset=dataset, valid_manifest=validated.valid_manifest, n_shards=n_shards, sampler=sampler
    )
    clips = merge_clips(shards=map_task(preprocess_shard, concurrency=8)(shard=shards))
    return PipelineOutputs(validation=validated, clips=clips)
