"""The pipeline's first stage: make one self-contained dataset directory from any source.

A dataset directory holds ``manifest.parquet`` and ``videos/``, with every ``video_path`` relative to the
directory, so it can be moved, uploaded (a Flyte output) and hashed as one unit. Sources:

- ``synthetic``: the embedded default corpus (:mod:`qsave.synthetic`), rendered here.
- ``aigve``, ``folder``, ``csv``, ``jsonl``: an import (:mod:`qsave.importers`) from ``uri``.
- ``manifest``: an existing manifest (Parquet/JSONL) at ``uri`` — a local path or any fsspec URI
  (``s3://…``, ``gs://…``; the manifest's folder is downloaded first); relative video paths
  are taken from its folder.

Videos of imported sources are linked (or copied) into ``videos/``. Rows whose video is missing are kept
with their original path, so validation quarantines them with the reason ``video_missing`` — nothing is
dropped here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from qsave.importers import FORMATS, import_source
from qsave.manifest import read_manifest, resolve_video_path, write_manifest
from qsave.storage import atomic_path, link_or_copy
from qsave.synthetic import MANIFEST_NAME, VIDEO_DIR, SynthConfig, generate_corpus

if TYPE_CHECKING:
    import pandas as pd

SOURCES: Final = ("synthetic", "manifest", *FORMATS)


@dataclass
class IngestConfig:
    source: str = "synthetic"
    """One of: synthetic, manifest, aigve, folder, csv, jsonl."""
    uri: str = ""
    """Where an imported source lives (file or folder); unused for ``synthetic``."""
    n_videos: int = 2400
    """Synthetic corpus size."""
    seed: int = 0
    """Synthetic corpus seed."""
    val_fraction: float = 0.075
    """Synthetic corpus: the share of prompts held out as ``val`` (splits are prompt-disjoint)."""
    test_fraction: float = 0.075
    """Synthetic corpus: the share of prompts held out as ``test``; the rest is ``train``. 2,400 clips at
    85 / 7.5 / 7.5 train on 2,040 and test on 180; with 6 epochs of stage 1 they read MQ +0.07 and overall
    +0.09 over 840 clips × 10 epochs on the same test clips (``docs/learning.md``, runs D and session 23)."""
    split: str = "test"
    """Split for imported rows that carry none."""


def synth_config(cfg: IngestConfig) -> SynthConfig:
    """The synthetic corpus ``cfg`` asks for."""
    train = 1.0 - cfg.val_fraction - cfg.test_fraction
    if train <= 0 or cfg.val_fraction < 0 or cfg.test_fraction < 0:
        raise ValueError(
            f"val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction}: give non-negative shares "
            "that leave some prompts for train (e.g. 0.075 and 0.075)"
        )
    return SynthConfig(
        n=cfg.n_videos, seed=cfg.seed, split_fractions=(train, cfg.val_fraction, cfg.test_fraction)
    )


def _localise_videos(frame: pd.DataFrame, base_dir: Path | None, out: Path) -> pd.DataFrame:
    """Bring every existing video into ``out/videos`` and point the rows at it (relative paths)."""
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    for i, (video_id, video_path) in enumerate(zip(frame["video_id"], frame["video_path"], strict=True)):
        src = resolve_video_path(video_path, base_dir)
        if not src.is_file():
            continue
        name = f"{i:06d}_{Path(str(video_id)).name}{src.suffix.lower()}"
        link_or_copy(src, out / VIDEO_DIR / name)
        frame.loc[frame.index[i], "video_path"] = f"{VIDEO_DIR}/{name}"
    return frame


def fetch_remote_folder(uri: str, dest: str | os.PathLike[str]) -> Path:
    """Download the folder holding ``uri`` (an fsspec URL of a file) into ``dest``; returns the local file."""
    import fsspec

    folder, name = uri.rstrip("/").rsplit("/", 1)
    fs, root = fsspec.core.url_to_fs(folder)
    if not fs.exists(f"{root}/{name}"):
        raise FileNotFoundError(f"{uri} does not exist (check the snapshot location and credentials)")
    fs.get(root, str(dest), recursive=True)
    return Path(dest) / name


def ingest(cfg: IngestConfig, out_dir: str | os.PathLike[str], progress: bool = False) -> Path:
    """Write the dataset directory ``out_dir`` (atomically) and return its manifest's path."""
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown data source {cfg.source!r}; use one of {', '.join(SOURCES)}")
    if cfg.source != "synthetic" and not cfg.uri:
        raise ValueError(f"data source {cfg.source!r} needs a uri (the file or folder to import)")
    with atomic_path(out_dir) as tmp:
        if cfg.source == "synthetic":
            generate_corpus(synth_config(cfg), tmp, progress=progress)
        else:
            tmp.mkdir(parents=True)
            if cfg.source == "manifest" and "://" in cfg.uri:
                local = fetch_remote_folder(cfg.uri, tmp.parent / f"{tmp.name}-download")
                frame, base = read_manifest(local), local.parent
            elif cfg.source == "manifest":
                frame, base = read_manifest(cfg.uri), Path(cfg.uri).resolve().parent
            else:
                frame, base = import_source(cfg.source, cfg.uri, split=cfg.split).manifest, None
            write_manifest(_localise_videos(frame, base, tmp), tmp / MANIFEST_NAME)
    return Path(out_dir) / MANIFEST_NAME
