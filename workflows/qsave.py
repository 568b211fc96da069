"""The qsave pipeline — read this file to see the whole system.

    ingest ──► validate ──► preprocess (SlowFast, map over shards)

Run locally on the embedded default (a synthetic AIGV corpus):

    pyflyte run workflows/qsave.py qsave_pipeline
    pyflyte run workflows/qsave.py qsave_pipeline \
        --data '{"source": "aigve", "uri": "../shared/data/aigve-bench-toy"}' --max_quarantine 0.5

and on a cluster with ``pyflyte run --remote …``. Every task is cached by its inputs and the qsave source.
"""

from __future__ import annotations

import warnings

from flytekit import workflow

from qsave.ingest import IngestConfig
from tasks.data import Validated, ingest, validate

# pyflyte registers bool inputs under both --a_b and --a-b and warns about its own duplicate.
warnings.filterwarnings("ignore", message=r"The parameter --\w+ is used more than once")


@workflow
def qsave_pipeline(
    data: IngestConfig = IngestConfig(),  # noqa: B008
    max_quarantine: float = 0.25,
    require_labels: bool = True,
) -> Validated:
    """Ingest a dataset, validate it (quarantine bad rows), …

    :param data: where the data comes from (default: the synthetic corpus, 600 clips, seed 0).
    :param max_quarantine: fail when more than this share of rows is quarantined.
    :param require_labels: quarantine rows without MOS (turn off for prompt-only scoring sets).
    """
    dataset = ingest(data=data)
    return validate(dataset=dataset, max_quarantine=max_quarantine, require_labels=require_labels)
