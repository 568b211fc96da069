"""Importers: bring rated or prompt-only video collections into the manifest format (:mod:`qsave.schema`).

Formats (``qsave data import --format …``):

``aigve``
    AIGVE-Bench JSON: ``{"metainfo": …, "data_list": [row, …]}``, each row with ``id``, ``prompt_gt``,
    ``video_path_pd`` (a file name, looked up beside the JSON and in its ``videos/`` folder), ``model`` and
    1–5 ratings where 0 means "not applicable". Mapping to the manifest:

    ========== =========================================================
    manifest   AIGVE-Bench fields
    ========== =========================================================
    mos_vq     ``technical_quality``
    mos_mq     mean of ``dynamic`` and ``physics``
    mos_ta     mean of ``element_presentence`` and ``action_presentence``
    mos_overall ``overall``
    ========== =========================================================

    Zeros are left out of the means (a dimension whose fields are all 0 stays empty). ``consistency``,
    ``element_quality`` and ``action_quality`` have no manifest dimension and are not imported.
    ``video_id`` is the file stem (``cogvideox_0``); ``generator`` is the stem without its trailing
    ``_<number>`` (``cogvideox``), or the row's ``model`` when the stem has no such suffix.

``folder``
    Prompt-only videos, unlabelled (every MOS empty): either a folder with ``annotations.json``
    (``data_list`` rows with ``prompt_gt`` and ``video_path_pd``, as in VBench-style samples; a
    ``prompt_gt`` that is itself a video file name, a slip seen in those samples, is read as one) or a plain
    folder of videos whose prompt is the file stem without VBench's ``-<number>`` suffix
    (``a cat running-0.mp4`` → ``a cat running``).

``csv`` / ``jsonl``
    A table with a column mapping ``manifest_column=source_column`` (e.g. ``mos_vq=visual_score``).
    Columns already named like manifest columns are taken as they are. T2VQA-DB-style files (video name,
    prompt, one MOS) map the single MOS to ``mos_overall``; ``mos_range`` rescales MOS given on another
    scale (e.g. 0–100) linearly onto 1–5. Without a ``video_id``, the video file's stem is used.

Every importer writes absolute ``video_path`` values (relative names are resolved against the source's
folder, or ``videos_dir`` when given), so a manifest works from any directory. Rows whose video file is
missing are kept and listed in :attr:`ImportResult.missing`; nothing is dropped. Rows get ``split``
``"test"`` unless told otherwise (a mapped ``split`` column wins where it is set).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qsave.manifest import normalize, resolve_video_path
from qsave.schema import MANIFEST_COLUMNS, MOS_COLUMNS, SCORE_MAX, SCORE_MIN, mos_column

if TYPE_CHECKING:
    import pandas as pd

FORMATS: Final = ("aigve", "folder", "csv", "jsonl")
VIDEO_EXTENSIONS: Final = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
DEFAULT_SPLIT: Final = "test"

AIGVE_MOS_FIELDS: Final = {
    "vq": ("technical_quality",),
    "mq": ("dynamic", "physics"),
    "ta": ("element_presentence", "action_presentence"),
    "overall": ("overall",),
}
"""Which AIGVE-Bench rating fields make each manifest dimension (mean of the non-zero ones)."""


class ImportFailed(ValueError):
    """A source that cannot be imported (wrong format, missing mapped column, unreadable file)."""


@dataclass
class ImportResult:
    """The imported manifest and the ids of rows whose video file does not exist (kept in the manifest)."""

    manifest: pd.DataFrame
    missing: list[str] = field(default_factory=list)

    def report(self) -> str:
        """A one-paragraph human summary, naming the rows with missing videos."""
        text = f"imported {len(self.manifest)} row(s)"
        if self.missing:
            text += (
                f"; {len(self.missing)} row(s) have no video file (kept, they will be quarantined by "
                f"validation): {', '.join(self.missing)}"
            )
        return text


def _is_uri(path: str) -> bool:
    return "://" in path


def _absolute(name: str, base_dirs: Sequence[Path]) -> str:
    """The first existing ``base/name`` (or ``name`` when absolute or a URI); else the first candidate."""
    if not name or _is_uri(name):
        return name
    candidates = [resolve_video_path(name, base) for base in base_dirs] or [Path(name)]
    found = next((c for c in candidates if c.is_file()), candidates[0])
    return str(Path(os.path.abspath(found.expanduser())))


def _finish(rows: pd.DataFrame, split: str) -> ImportResult:
    """Normalise, fill empty splits, and list the rows whose local video file is missing."""
    frame = normalize(rows)
    frame["split"] = frame["split"].where(frame["split"].str.strip() != "", split)
    missing = [
        vid
        for vid, path in zip(frame["video_id"], frame["video_path"])
        if not _is_uri(path) and not Path(path).is_file()
    ]
    return ImportResult(frame, missing)


def _mean_nonzero(values: Sequence[Any]) -> float:
    numbers = [float(v) for v in values if v is not None and not math.isnan(float(v)) and float(v) != 0]
    return sum(numbers) / len(numbers) if numbers else math.nan


def _load_data_list(path: Path) -> tuple[list[dict[str, Any]], Path]:
    """``data_list`` rows of an annotations JSON (a file, or a folder holding ``annotations.json``)."""
    json_path = path / "annotations.json" if path.is_dir() else path
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFailed(f"{json_path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ImportFailed(f"{json_path} is not valid JSON: {exc}") from None
    rows = document.get("data_list") if isinstance(document, dict) else document
    if not isinstance(rows, list):
        raise ImportFailed(f"{json_path}: expected a 'data_list' list of rows (AIGVE-Bench format)")
    return rows, json_path.parent


def _video_dirs(root: Path, videos_dir: Path | None) -> list[Path]:
    return [videos_dir] if videos_dir is not None else [root / "videos", root]


def import_aigve(
    src: str | os.PathLike[str], split: str = DEFAULT_SPLIT, videos_dir: Path | None = None
) -> ImportResult:
    """AIGVE-Bench JSON (file or folder with ``annotations.json``) → manifest (see the module docstring)."""
    import pandas as pd

    rows, root = _load_data_list(Path(src))
    dirs = _video_dirs(root, videos_dir)
    records = []
    for position, row in enumerate(rows):
        name = str(row.get("video_path_pd") or row.get("video_path") or "")
        if not name:
            raise ImportFailed(f"{src}: row {position} (id {row.get('id')!r}) has no 'video_path_pd'")
        stem = Path(name).stem
        match = re.fullmatch(r"(.+)_\d+", stem)
        record: dict[str, Any] = {
            "video_id": stem,
            "video_path": _absolute(name, dirs),
            "prompt": str(row.get("prompt_gt") or row.get("prompt") or ""),
            "generator": match.group(1) if match else str(row.get("model") or ""),
        }
        for dim, fields in AIGVE_MOS_FIELDS.items():
            record[mos_column(dim)] = _mean_nonzero([row.get(f) for f in fields])
        records.append(record)
    columns = ["video_id", "video_path", "prompt", "generator", *MOS_COLUMNS]
    return _finish(pd.DataFrame.from_records(records, columns=columns), split)


def _prompt_from_stem(stem: str) -> str:
    return re.sub(r"-\d+$", "", stem).strip()


def _clean_prompt(prompt: str) -> str:
    """A prompt that is really a video file name (a known slip in VBench-style annotations) → its prompt."""
    path = Path(prompt.strip())
    return _prompt_from_stem(path.stem) if path.suffix.lower() in VIDEO_EXTENSIONS else prompt.strip()


def import_folder(
    src: str | os.PathLike[str],
    split: str = DEFAULT_SPLIT,
    videos_dir: Path | None = None,
    generator: str = "",
) -> ImportResult:
    """Prompt-only videos → unlabelled manifest rows (see the module docstring)."""
    import pandas as pd

    root = Path(src)
    if not root.is_dir():
        raise ImportFailed(f"{root} is not a folder (format 'folder' takes a folder of videos)")
    records: list[dict[str, Any]] = []
    if (root / "annotations.json").is_file():
        rows, _ = _load_data_list(root)
        dirs = _video_dirs(root, videos_dir)
        for position, row in enumerate(rows):
            name = str(row.get("video_path_pd") or row.get("video_path_gt") or "")
            if not name:
                raise ImportFailed(f"{root}/annotations.json: row {position} names no video file")
            records.append(
                {
                    "video_id": Path(name).stem,
                    "video_path": _absolute(name, dirs),
                    "prompt": _clean_prompt(str(row.get("prompt_gt") or row.get("prompt") or name)),
                }
            )
    else:
        scan = videos_dir or root
        for path in sorted(
            p for p in scan.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
        ):
            relative = path.relative_to(scan).with_suffix("")
            records.append(
                {
                    "video_id": relative.as_posix(),
                    "video_path": str(path.resolve()),
                    "prompt": _prompt_from_stem(path.stem),
                }
            )
        if not records:
            raise ImportFailed(
                f"{scan} holds no videos ({', '.join(VIDEO_EXTENSIONS)}) and no annotations.json"
            )
    frame = pd.DataFrame.from_records(records, columns=["video_id", "video_path", "prompt"])
    frame["generator"] = generator
    return _finish(frame, split)


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``["mos_vq=visual_score", …]`` → ``{"mos_vq": "visual_score", …}``; keys must be manifest columns."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        target, source = target.strip(), source.strip()
        if not sep or not target or not source:
            raise ImportFailed(
                f"bad mapping {pair!r}: use MANIFEST_COLUMN=SOURCE_COLUMN, e.g. mos_vq=visual_score"
            )
        if target not in MANIFEST_COLUMNS:
            raise ImportFailed(
                f"bad mapping {pair!r}: {target!r} is not a manifest column ({', '.join(MANIFEST_COLUMNS)})"
            )
        mapping[target] = source
    return mapping


def import_table(
    src: str | os.PathLike[str],
    mapping: Mapping[str, str] | None = None,
    split: str = DEFAULT_SPLIT,
    videos_dir: Path | None = None,
    mos_range: tuple[float, float] | None = None,
) -> ImportResult:
    """A CSV or JSONL table (by extension: ``.csv`` or ``.jsonl``/``.json``) → manifest via ``mapping``."""
    import pandas as pd

    path = Path(src)
    mapping = dict(mapping or {})
    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix.lower() in (".jsonl", ".json"):
            table = pd.read_json(path, lines=path.suffix.lower() == ".jsonl", dtype=False)
        else:
            raise ImportFailed(f"{path}: expected a .csv or .jsonl file")
    except FileNotFoundError:
        raise ImportFailed(f"{path} does not exist") from None
    absent = sorted({source for source in mapping.values() if source not in table.columns})
    if absent:
        raise ImportFailed(
            f"{path}: mapped column(s) {', '.join(absent)} not in the file "
            f"(it has {', '.join(map(str, table.columns))})"
        )
    frame = pd.DataFrame(index=table.index)
    for column in MANIFEST_COLUMNS:
        source = mapping.get(column, column if column in table.columns else None)
        if source is not None:
            frame[column] = table[source]
    if "video_path" not in frame.columns:
        raise ImportFailed(f"{path}: no video path column; map one with --map video_path=COLUMN")
    dirs = _video_dirs(path.parent, videos_dir)
    frame["video_path"] = [_absolute(str(name).strip(), dirs) for name in frame["video_path"]]
    if "video_id" not in frame.columns:
        frame["video_id"] = [Path(p).stem for p in frame["video_path"]]
    if "prompt" not in frame.columns:
        raise ImportFailed(f"{path}: no prompt column; map one with --map prompt=COLUMN")
    if mos_range is not None:
        low, high = mos_range
        if not high > low:
            raise ImportFailed(f"mos_range must be LOW < HIGH, got {low}, {high}")
        for column in MOS_COLUMNS:
            if column in frame.columns:
                values = pd.to_numeric(frame[column], errors="coerce")
                frame[column] = SCORE_MIN + (values - low) * (SCORE_MAX - SCORE_MIN) / (high - low)
    return _finish(frame, split)


def import_source(
    fmt: str,
    src: str | os.PathLike[str],
    *,
    split: str = DEFAULT_SPLIT,
    videos_dir: str | os.PathLike[str] | None = None,
    mapping: Mapping[str, str] | None = None,
    generator: str = "",
    mos_range: tuple[float, float] | None = None,
) -> ImportResult:
    """Dispatch on ``fmt`` (one of :data:`FORMATS`)."""
    videos = Path(videos_dir).expanduser().resolve() if videos_dir is not None else None
    if fmt == "aigve":
        return import_aigve(src, split, videos)
    if fmt == "folder":
        return import_folder(src, split, videos, generator)
    if fmt in ("csv", "jsonl"):
        if Path(src).suffix.lower() not in ((".csv",) if fmt == "csv" else (".jsonl", ".json")):
            raise ImportFailed(f"{src}: format {fmt!r} expects a .{fmt} file")
        return import_table(src, mapping, split, videos, mos_range)
    raise ImportFailed(f"unknown import format {fmt!r}; use one of {', '.join(FORMATS)}")
