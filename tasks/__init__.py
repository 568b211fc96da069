"""Thin Flyte tasks: resources, images, caching and retries; the work is in :mod:`qsave`."""

from pathlib import Path

from flytekit import Cache

from qsave.versioning import source_hash


def code_cache(task_file: str) -> Cache:
    """The cache of the tasks in ``task_file``: outputs are reused for the same inputs while that file and
    every qsave module it imports (transitively, :func:`qsave.versioning.module_closure`) are unchanged —
    an edit to the report reruns evaluation, not training."""
    return Cache(version=source_hash(Path(task_file)))
