"""Thin Flyte tasks: resources, images, caching and retries; the work is in :mod:`qsave`."""

from flytekit import Cache

from qsave.versioning import source_hash

CODE_CACHE = Cache(version=source_hash())
"""Stage outputs are cached by their inputs and the qsave source: a code change reruns, nothing else does."""
