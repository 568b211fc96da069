"""Atomic file output and content hashing.

Every artefact is written to a temporary name beside its destination and renamed into place, so a
crash never leaves a partial file that a rerun or a cache would take as complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``.

    Works for files and directories: whatever the body creates at the yielded path is moved into place
    (an existing directory at ``dest`` is replaced). On error the temporary is removed and ``dest`` is
    left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    target = tmp / dest.name
    try:
        try:
            yield target
        except Exception as exc:  # e.g. a full disk (OSError, SafetensorError): name the artefact
            exc.add_note(f"while writing {dest} (left untouched; the partial temporary was removed)")
            raise
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to {target} for {dest}")
        if target.is_dir() and dest.is_dir():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
            target.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(dest: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(dest, text.encode("utf-8"))


def link_or_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Hard-link ``src`` to ``dest`` (free on one filesystem), copying when linking is not possible."""
    dest = Path(dest)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
    return dest


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (memory stays bounded for large videos)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
