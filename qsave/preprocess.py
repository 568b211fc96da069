"""The preprocess stage: SlowFast-sample every video of a manifest into a content-addressed cache.

A manifest is split into balanced shards (:func:`shard_manifest`); each shard is processed
independently (:func:`preprocess_shard`, the body of one map task) and the shards' tables are merged
into one (:func:`merge_results`): ``video_id`` → clip file, visual tokens, status.

Cache layout: ``<cache_dir>/<config fingerprint>/<video sha256>.npz`` (default ``cache_dir``:
:func:`clip_cache_dir`) — one compressed file per distinct video content and sampler config
(:meth:`SamplerConfig.fingerprint`), written atomically. A video whose bytes and config are unchanged is
never decoded again, whatever its path or row. A video that fails leaves
``<sha256>.<limits hash>.failed.json`` beside it, so a rerun reports the same error without decoding it
again (except ``decode_timeout``, which depends on load and is retried); delete the file to retry sooner.

Each row ends in one status — ``processed`` (decoded now), ``cached`` (clip already there) or ``failed``
(``reason`` and ``detail`` say why: a :class:`qsave.video.VideoError` code, ``video_missing`` for a path
that is not a file, ``unreadable`` for a file that cannot be read) — so rows = processed + cached + failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from qsave.manifest import resolve_video_path
from qsave.modeling import model_sampler_config, qsave_home, save_sampler_config
from qsave.slowfast import SAMPLER_VERSION, Pathway, SamplerConfig, SlowFastClip, sample_clip
from qsave.storage import atomic_path, file_sha256, write_text_atomic
from qsave.versioning import config_hash
from qsave.video import DecodeLimits, VideoError, VideoInfo

if TYPE_CHECKING:
    import pandas as pd

STATUSES: Final = ("processed", "cached", "failed")

RESULT_COLUMNS: Final = (
    "video_id",
    "video_path",
    "status",
    "clip_path",
    "sha256",
    "slow_tokens",
    "fast_tokens",
    "tokens",
    "reason",
    "detail",
)
"""Columns of a shard's table and of the merged table (tokens are 0 and clip_path empty for failures)."""

_RETRIED_REASONS: Final = frozenset({"decode_timeout"})


def shard_manifest(df: pd.DataFrame, n_shards: int) -> list[pd.DataFrame]:
    """Split rows into at most ``n_shards`` shards whose sizes differ by at most one.

    Rows are ordered by ``video_id`` and dealt round-robin, so the split depends only on the set of rows,
    not on their order. There are ``min(n_shards, rows)`` shards (one empty shard for an empty manifest).
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    ordered = df.sort_values("video_id", kind="stable").reset_index(drop=True)
    count = max(1, min(n_shards, len(ordered)))
    return [ordered.iloc[i::count].reset_index(drop=True) for i in range(count)]


def clip_cache_dir() -> Path:
    """The default cache: ``$QSAVE_HOME/clips`` (``~/.cache/qsave/clips`` when QSAVE_HOME is unset)."""
    return qsave_home() / "clips"


def clip_path_for(cache_dir: str | os.PathLike[str], sha256: str, cfg: SamplerConfig) -> Path:
    """Where the clip of a video with content hash ``sha256`` sampled with ``cfg`` lives."""
    return Path(cache_dir) / cfg.fingerprint() / f"{sha256}.npz"


def _failure_path(clip_path: Path, limits: DecodeLimits) -> Path:
    return clip_path.with_name(f"{clip_path.stem}.{config_hash(limits)}.failed.json")


def _pathway_arrays(prefix: str, pathway: Pathway) -> dict[str, Any]:
    return {
        f"{prefix}_frames": pathway.frames,
        f"{prefix}_source_indices": pathway.source_indices,
        f"{prefix}_timestamps": pathway.timestamps,
    }


def _pathway_meta(pathway: Pathway) -> dict[str, Any]:
    return {"source_fps": pathway.source_fps, "fps": pathway.fps, "tokens": pathway.tokens}


def save_clip(clip: SlowFastClip, path: str | os.PathLike[str]) -> Path:
    """Write a clip as one compressed ``.npz`` (frames, indices, timestamps + JSON metadata), atomically."""
    meta = {
        "sampler_version": SAMPLER_VERSION,
        "config_fingerprint": clip.config_fingerprint,
        "window_s": clip.window_s,
        "info": asdict(clip.info),
        "slow": _pathway_meta(clip.slow),
        "fast": _pathway_meta(clip.fast),
    }
    arrays = {**_pathway_arrays("slow", clip.slow), **_pathway_arrays("fast", clip.fast)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)
    return Path(path)


def _read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        meta: dict[str, Any] = json.loads(str(data["meta"]))
    return meta


def load_clip(path: str | os.PathLike[str]) -> SlowFastClip:
    """Read a clip written by :func:`save_clip`."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))

        def pathway(prefix: str) -> Pathway:
            return Pathway(
                frames=data[f"{prefix}_frames"],
                source_indices=data[f"{prefix}_source_indices"],
                timestamps=data[f"{prefix}_timestamps"],
                **meta[prefix],
            )

        slow, fast = pathway("slow"), pathway("fast")
    return SlowFastClip(
        slow=slow,
        fast=fast,
        info=VideoInfo(**meta["info"]),
        window_s=meta["window_s"],
        config_fingerprint=meta["config_fingerprint"],
    )


@dataclass
class ShardResult:
    """One shard's outcome: a table with a row per input row (:data:`RESULT_COLUMNS`) and a decode count."""

    table: pd.DataFrame
    decoded: int
    """Videos this call decoded (0 on a rerun with unchanged data and config)."""

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status (every status present); they add up to the shard's rows."""
        return {status: int((self.table["status"] == status).sum()) for status in STATUSES}


def _row(video_id: str, video_path: str, status: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "video_id": video_id,
        "video_path": video_path,
        "status": status,
        "clip_path": "",
        "sha256": "",
        "slow_tokens": 0,
        "fast_tokens": 0,
        "tokens": 0,
        "reason": "",
        "detail": "",
    }
    row.update(values)
    return row


def _tokens(slow: int, fast: int) -> dict[str, Any]:
    return {"slow_tokens": int(slow), "fast_tokens": int(fast), "tokens": int(slow) + int(fast)}


def preprocess_shard(
    df: pd.DataFrame,
    cfg: SamplerConfig,
    limits: DecodeLimits,
    cache_dir: str | os.PathLike[str],
    base_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ShardResult:
    """Sample every row's video into the cache (decoding only what is not cached); never raises per row.

    ``df`` needs ``video_id`` and ``video_path`` (relative paths resolve against ``base_dir``).
    ``progress`` shows a tqdm bar on stderr.
    """
    import pandas as pd
    from tqdm import tqdm

    rows, decoded = [], 0
    records = df[["video_id", "video_path"]].astype(str).itertuples(index=False)
    for video_id, video_path in tqdm(records, total=len(df), desc="preprocess", disable=not progress):
        path = resolve_video_path(video_path, base_dir)
        if not path.is_file():
            detail = f"{path} is not a file; fix the manifest's video_path or add the video"
            rows.append(_row(video_id, video_path, "failed", reason="video_missing", detail=detail))
            continue
        try:
            sha = file_sha256(path)
        except OSError as exc:
            rows.append(_row(video_id, video_path, "failed", reason="unreadable", detail=f"{path}: {exc}"))
            continue
        clip_path = clip_path_for(cache_dir, sha, cfg)
        failure = _failure_path(clip_path, limits)
        found = {"video_id": video_id, "video_path": video_path, "sha256": sha}
        if clip_path.is_file():
            try:
                meta = _read_meta(clip_path)
            except (OSError, ValueError, KeyError):
                meta = None  # unreadable cache entry: decode again and overwrite it
            if meta is not None:
                tokens = _tokens(meta["slow"]["tokens"], meta["fast"]["tokens"])
                rows.append(_row(**found, status="cached", clip_path=str(clip_path), **tokens))
                continue
        if failure.is_file():
            error = json.loads(failure.read_text())
            rows.append(_row(**found, status="failed", reason=error["reason"], detail=error["detail"]))
            continue
        decoded += 1
        try:
            clip = sample_clip(path, cfg, limits)
        except VideoError as exc:
            if exc.reason not in _RETRIED_REASONS:
                write_text_atomic(failure, json.dumps({"reason": exc.reason, "detail": exc.detail}))
            rows.append(_row(**found, status="failed", reason=exc.reason, detail=exc.detail))
            continue
        save_clip(clip, clip_path)
        tokens = _tokens(clip.slow.tokens, clip.fast.tokens)
        rows.append(_row(**found, status="processed", clip_path=str(clip_path), **tokens))
    return ShardResult(table=pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), decoded=decoded)


def merge_results(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One table (``video_id`` → clip_path, tokens, status …) from the shards' tables, ordered by video_id.

    Raises ``ValueError`` naming the ids when a video_id appears in more than one row.
    """
    import pandas as pd

    frames = [t for t in tables if len(t)]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RESULT_COLUMNS))
    duplicated = merged["video_id"][merged["video_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"video_id(s) appear in more than one row: {', '.join(map(str, duplicated[:10]))}")
    return merged[list(RESULT_COLUMNS)].sort_values("video_id", kind="stable").reset_index(drop=True)


EXPORT_TABLE: Final = "clips.parquet"
EXPORT_CLIPS: Final = "clips"


def export_clips(
    table: pd.DataFrame, out_dir: str | os.PathLike[str], sampler: SamplerConfig | None = None
) -> Path:
    """Write a self-contained clip directory: ``clips/<sha>.npz`` + ``clips.parquet`` (relative clip paths),
    and the ``sampler`` the clips were made with (:func:`exported_sampler` reads it back).

    ``table`` is a shard's or a merged table (:data:`RESULT_COLUMNS`; ``clip_path`` absolute, or relative
    to a directory exported before). Clips are hard-linked when possible. Written atomically; returns
    ``out_dir``.
    """
    from qsave.storage import link_or_copy

    out = Path(out_dir)
    exported = table[list(RESULT_COLUMNS)].copy()
    relative = []
    with atomic_path(out) as tmp:
        (tmp / EXPORT_CLIPS).mkdir(parents=True)
        for clip in exported["clip_path"]:
            name = f"{EXPORT_CLIPS}/{Path(clip).name}" if clip else ""
            if name and not (tmp / name).exists():
                link_or_copy(clip, tmp / name)
            relative.append(name)
        exported["clip_path"] = relative
        exported.to_parquet(tmp / EXPORT_TABLE, index=False)
        if sampler is not None:
            save_sampler_config(tmp, sampler)
    return out


def exported_sampler(clip_dir: str | os.PathLike[str]) -> SamplerConfig | None:
    """The sampler config an exported clip directory records (``None`` when it records none)."""
    return model_sampler_config(clip_dir)


def read_exported(clip_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The table of an exported clip directory with ``clip_path`` made absolute (empty for failures)."""
    import pandas as pd

    root = Path(clip_dir)
    table = pd.read_parquet(root / EXPORT_TABLE)
    table["clip_path"] = [str(root / p) if p else "" for p in table["clip_path"]]
    return table


def merge_exported(
    clip_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> pd.DataFrame:
    """Merge exported shard directories into one exported directory; returns the merged table. The shards
    must record the same sampler (or none); the merged directory records it."""
    samplers = {exported_sampler(d) for d in clip_dirs}
    if len(samplers) > 1:
        raise ValueError(f"the shards were sampled with different configs: {sorted(map(str, samplers))}")
    merged = merge_results([read_exported(d) for d in clip_dirs])
    export_clips(merged, out_dir, samplers.pop() if samplers else None)
    return merged


def _png_base64(frames: np.ndarray) -> str:
    """A row of frames (T,H,W,3 uint8) as one base64 PNG."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(list(frames), axis=1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def preview_html(table: pd.DataFrame, max_clips: int = 4) -> str:
    """An HTML fragment (a Flyte Deck): status counts, then each pathway's frames for a few clips."""
    from html import escape

    counts = {status: int((table["status"] == status).sum()) for status in STATUSES}
    parts = [
        f"<h2>SlowFast preprocessing</h2><p>{len(table)} rows: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
        + f"; mean visual tokens per clip {table.loc[table['status'] != 'failed', 'tokens'].mean():.0f}.</p>"
    ]
    failed = table[table["status"] == "failed"]
    if len(failed):
        rows = "".join(
            f"<tr><td>{escape(str(r.video_id))}</td><td>{escape(str(r.reason))}</td>"
            f"<td>{escape(str(r.detail))}</td></tr>"
            for r in failed.itertuples(index=False)
        )
        parts.append(
            f"<h3>Failed</h3><table><tr><th>video_id</th><th>reason</th><th>detail</th></tr>{rows}</table>"
        )
    for row in table[table["status"] != "failed"].head(max_clips).itertuples(index=False):
        clip = load_clip(str(row.clip_path))
        parts.append(f"<h3>{escape(str(row.video_id))}</h3>")
        for name, pathway in (("slow", clip.slow), ("fast", clip.fast)):
            times = ", ".join(f"{t:.2f}" for t in pathway.timestamps)
            parts.append(
                f"<p>{name}: {pathway.num_frames} frames {pathway.width}×{pathway.height}, "
                f"{pathway.tokens} tokens, t = [{times}] s</p>"
                f'<img src="data:image/png;base64,{_png_base64(pathway.frames)}"/>'
            )
    return "".join(parts)
