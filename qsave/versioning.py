"""Versions that travel with every output: code, config and (see qsave.manifest) data.

- ``code_version()``: the git commit of the checkout, ``-dirty`` when the tree has uncommitted changes,
  or — outside a git checkout (an installed wheel, a container) — a hash of the package's source.
- ``source_hash(*files)``: a hash of the qsave source that ``files`` run — the files themselves and every
  qsave module they import, transitively, wherever the import statement sits (:func:`module_closure`);
  with no files, of the whole package. Flyte cache versions use it per task file, so a code change
  reruns the stages whose code it touches and nothing else (an evaluation-report change does not retrain).
- ``config_hash(cfg)``: a stable hash of a dataclass config (or any JSON-able value).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


def _imported_modules(path: Path, package: str) -> set[str]:
    """Dotted names ``package`` modules (or names in them) that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == package
        ):
            module = str(node.module)  # `from pkg.mod import name`: name may be a submodule
            found |= {module, *(f"{module}.{a.name}" for a in node.names)}
    return found


def _module_files(name: str, package_dir: Path) -> list[Path]:
    """The source files importing ``name`` runs: each package's ``__init__.py`` on the way, the module."""
    parts = name.split(".")[1:]
    files = [package_dir / "__init__.py"]
    for depth in range(1, len(parts) + 1):
        stem = package_dir.joinpath(*parts[:depth])
        files += [stem / "__init__.py", stem.with_suffix(".py")]
    return [f for f in files if f.is_file()]


def module_closure(files: Iterable[Path], package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """``files`` and every module of the package at ``package_dir`` they import, transitively (imports
    inside functions included), sorted. Modules imported by string (``importlib``) are not followed."""
    package = package_dir.name
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in files]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_modules(path, package):
            todo += [f.resolve() for f in _module_files(name, package_dir)]
    return sorted(seen)


@functools.cache
def source_hash(*files: Path) -> str:
    """12 hex digits over the package source that ``files`` run (:func:`module_closure`), or over every
    package file when no files are given."""
    paths = module_closure(files) if files else sorted(PACKAGE_DIR.rglob("*.py"))
    root = PACKAGE_DIR.parent
    digest = hashlib.sha256()
    for path in paths:
        name = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        digest.update(name.as_posix().encode())
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
