"""Reading, writing and versioning manifests (Parquet, JSONL accepted).

The manifest's columns are defined in :mod:`qsave.schema`. :func:`normalize` brings any frame to that
shape (missing optional columns added empty, types coerced) without dropping rows.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsave.schema import COUNT_COLUMNS, MANIFEST_COLUMNS, MOS_COLUMNS, REASON_COLUMNS, STD_COLUMNS
from qsave.storage import atomic_path, file_sha256, text_sha256

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("video_id", "video_path", "prompt")
"""Columns a source must provide; every other manifest column may be absent and is then left empty."""


class ManifestError(ValueError):
    """A manifest that cannot be read or lacks required columns."""


def _as_reason_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, float) and math.isnan(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return [str(v) for v in json.loads(text)]
        return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    return [str(v) for v in value]


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with every manifest column present, typed, in order; extra columns follow."""
    import numpy as np
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks required column(s) {', '.join(missing)}")
    out = df.copy()
    for col in ("video_id", "video_path", "prompt", "generator", "explanation", "split"):
        if col not in out.columns:
            out[col] = ""
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    for col in (*MOS_COLUMNS, *STD_COLUMNS):
        out[col] = pd.to_numeric(out[col], errors="coerce") if col in out.columns else np.nan
        out[col] = out[col].astype("float64")
    for col in COUNT_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce") if col in out.columns else np.nan
        out[col] = pd.Series(values, index=out.index).fillna(0).astype("int64")
    for col in REASON_COLUMNS:
        source = out[col] if col in out.columns else pd.Series([None] * len(out), index=out.index)
        out[col] = [_as_reason_list(v) for v in source]
    extra = [c for c in out.columns if c not in MANIFEST_COLUMNS]
    return out[[*MANIFEST_COLUMNS, *extra]].reset_index(drop=True)


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Parquet or JSONL manifest and normalise it."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        df = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    else:
        raise ManifestError(f"manifest {path}: unsupported format {suffix!r} (use .parquet or .jsonl)")
    return normalize(df)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a manifest atomically as Parquet (``.parquet``) or JSON lines (``.jsonl``)."""
    path = Path(path)
    frame = normalize(df)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif path.suffix.lower() == ".jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            raise ManifestError(f"cannot write manifest as {path.suffix!r}: use .parquet or .jsonl")
    return path


def resolve_video_path(video_path: str, base_dir: str | os.PathLike[str] | None = None) -> Path:
    """A manifest's ``video_path`` as a local path (relative paths are taken from ``base_dir``)."""
    path = Path(video_path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def dataset_version(df: pd.DataFrame, base_dir: str | os.PathLike[str] | None = None) -> str:
    """A short content hash: the manifest's rows plus the SHA-256 of every video's bytes.

    Missing videos contribute the marker ``missing`` so the version still changes when they appear.
    """
    frame = normalize(df).sort_values("video_id", kind="stable")
    rows = frame[list(MANIFEST_COLUMNS)].to_json(orient="records", force_ascii=False)
    hashes = []
    for video_path in frame["video_path"]:
        path = resolve_video_path(video_path, base_dir)
        hashes.append(file_sha256(path) if path.is_file() else "missing")
    return text_sha256(rows + "\n" + "\n".join(hashes))[:16]
