"""Ingest and validate: the dataset the rest of the pipeline trusts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from flytekit import Deck, HashMethod, Resources, current_context, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from qsave.ingest import IngestConfig
from tasks import code_cache
from tasks.images import CPU_IMAGE

CODE_CACHE = code_cache(__file__)


def _dataset_hash(dataset: FlyteDirectory) -> str:
    from qsave.manifest import dataset_version, read_manifest
    from qsave.synthetic import MANIFEST_NAME

    return dataset_version(read_manifest(Path(dataset.path) / MANIFEST_NAME), dataset.path)


@dataclass
class Validated:
    """Where validation put its outputs, and its summary (JSON)."""

    valid_manifest: FlyteFile
    quarantine_manifest: FlyteFile
    data_docs: FlyteDirectory
    summary: str


@task(cache=CODE_CACHE, container_image=CPU_IMAGE, requests=Resources(cpu="2", mem="4Gi"))
def ingest(data: IngestConfig) -> Annotated[FlyteDirectory, HashMethod(_dataset_hash)]:
    """Render the synthetic corpus or import a source into one dataset directory (manifest + videos)."""
    from qsave.ingest import ingest as run_ingest

    out = Path(current_context().working_directory) / "dataset"
    run_ingest(data, out, progress=True)
    return FlyteDirectory(str(out))


@task(
    cache=CODE_CACHE,
    container_image=CPU_IMAGE,
    requests=Resources(cpu="2", mem="4Gi"),
    enable_deck=True,
)
def validate(dataset: FlyteDirectory, max_quarantine: float, require_labels: bool) -> Validated:
    """Great Expectations checks + a decode probe per video; bad rows quarantined with a reason."""
    from qsave.manifest import read_manifest
    from qsave.synthetic import MANIFEST_NAME
    from qsave.validation import ValidationConfig, ValidationFailed, summary_html, validate_manifest

    local = Path(dataset.download())
    out = Path(current_context().working_directory) / "validation"
    cfg = ValidationConfig(max_quarantine_fraction=max_quarantine, require_labels=require_labels)
    try:
        result = validate_manifest(
            read_manifest(local / MANIFEST_NAME), cfg, out, base_dir=local, progress=True
        )
    except ValidationFailed as failed:
        Deck("validation", summary_html(failed.result.summary, failed.result.quarantine))
        raise
    Deck("validation", summary_html(result.summary, result.quarantine))
    return Validated(
        valid_manifest=FlyteFile(str(out / "valid.parquet")),
        quarantine_manifest=FlyteFile(str(out / "quarantine.parquet")),
        data_docs=FlyteDirectory(str(out / "data_docs")),
        summary=json.dumps(result.summary, sort_keys=True),
    )
