"""Versions that travel with every output: code, config and (see qsave.manifest) data.

- ``code_version()``: the git commit of the checkout, ``-dirty`` when the tree has uncommitted changes,
  or — outside a git checkout (an installed wheel, a container) — a hash of the package's source.
- ``source_hash()``: a hash of the qsave package's source files; Flyte cache versions use it, so a code
  change invalidates cached stage outputs and nothing else does.
- ``config_hash(cfg)``: a stable hash of a dataclass config (or any JSON-able value).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@functools.cache
def code_version() -> str:
    commit = _git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return f"src-{source_hash()}"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_hash(cfg: Any) -> str:
    """Stable short hash of a dataclass (nested dataclasses included) or a JSON-able value."""
    text = json.dumps(_jsonable(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
