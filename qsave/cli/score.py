"""``qsave score``: score videos with a model and write one JSON line per video.

Inputs (positional, mixed freely): video files (need ``--prompt``), folders (videos found recursively, or
the folder's ``annotations.json``; the prompt is the file stem without VBench's ``-<n>`` suffix), and
manifests (``.parquet``/``.jsonl``; prompt and video_id from the rows). ``--prompt`` overrides every prompt.

Each line: ``video_id``, ``path``, ``prompt``, ``scores`` (continuous 1–5 per dimension), ``levels``,
``level_probs`` (per dimension, per level), ``reasons`` and ``explanation`` (with ``--explain``, else
null), ``timing_ms`` (decode, score, explain). A video that cannot be read gets a line with ``error``
(a :class:`qsave.video.VideoError` reason code) and ``detail`` instead, and the run goes on; the exit
status is non-zero only when every video failed.

``--model``: a local model directory, a hub id, ``tiny`` (the cached offline tiny model), or an MLflow
model URI (``models:/qsave@champion``). The sampler is the one recorded in the model directory
(``qsave_sampler.json``) unless ``--sampler`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qsave.scoring import ScoreRequest
    from qsave.slowfast import SamplerConfig

MANIFEST_SUFFIXES = (".parquet", ".jsonl")


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "score",
        help="score videos (VQ, MQ, TA, overall; 1-5) and optionally explain them; JSON lines out",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="video files, folders of videos, or manifests")
    parser.add_argument(
        "--model", default="tiny", help="model dir, hub id, 'tiny' or models:/… (default tiny)"
    )
    parser.add_argument("--prompt", default=None, help="generation prompt for every video")
    parser.add_argument("--out", type=Path, default=None, help="write JSON lines here (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per forward pass (default 4)")
    parser.add_argument("--explain", action="store_true", help="also generate rationale and reasons")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="explanation length cap")
    parser.add_argument(
        "--sampler",
        choices=("model", "local", "default"),
        default="model",
        help="sampler sizes: the model's recorded config (default; 'default' when none), "
        "'local' (tiny model / CI sizes) or 'default' (production sizes)",
    )
    parser.add_argument(
        "--uniform", action="store_true", help="one uniformly sampled segment instead of SlowFast"
    )
    parser.add_argument("--dtype", default="auto", help="model dtype (auto, float32, bfloat16, …)")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    parser.set_defaults(func=run)


class InputError(ValueError):
    """Inputs that name no video or lack a prompt."""


def collect_items(inputs: Sequence[str], prompt: str | None) -> list[ScoreRequest]:
    """The videos named by files, folders and manifests, in the order given."""
    from qsave.importers import VIDEO_EXTENSIONS, ImportFailed, import_folder
    from qsave.manifest import ManifestError, read_manifest, resolve_video_path
    from qsave.scoring import ScoreRequest

    items: list[ScoreRequest] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                frame = import_folder(path).manifest
            except ImportFailed as exc:
                raise InputError(str(exc)) from exc
            items += [
                ScoreRequest(str(r.video_id), str(r.video_path), prompt or str(r.prompt))
                for r in frame.itertuples()
            ]
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            try:
                frame = read_manifest(path)
            except ManifestError as exc:
                raise InputError(str(exc)) from exc
            items += [
                ScoreRequest(
                    str(r.video_id),
                    str(resolve_video_path(str(r.video_path), path.parent)),
                    prompt or str(r.prompt),
                )
                for r in frame.itertuples()
            ]
        elif path.suffix.lower() in VIDEO_EXTENSIONS or not path.exists():
            if prompt is None:
                raise InputError(f"{path}: a video given directly needs --prompt (its generation prompt)")
            items.append(ScoreRequest(path.stem, str(path), prompt))
        else:
            raise InputError(
                f"{path}: not a video ({', '.join(VIDEO_EXTENSIONS)}), a folder or a manifest "
                f"({', '.join(MANIFEST_SUFFIXES)})"
            )
    if not items:
        raise InputError("no videos to score")
    return items


def _sampler(choice: str, model_dir: str) -> SamplerConfig:
    from qsave.modeling import model_sampler_config
    from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig

    if choice == "local":
        return LOCAL_SAMPLER
    if choice == "default":
        return SamplerConfig()
    recorded = model_sampler_config(model_dir) if Path(model_dir).is_dir() else None
    return recorded or SamplerConfig()


def _write_lines(lines: Iterator[dict[str, Any]], out: IO[str]) -> tuple[int, int]:
    ok = failed = 0
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
        failed += "error" in line
        ok += "error" not in line
    return ok, failed


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        print("qsave score: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        items = collect_items(args.inputs, args.prompt)
    except InputError as exc:
        print(f"qsave score: {exc}", file=sys.stderr)
        return 2

    from transformers.utils import logging as hf_logging

    from qsave.modeling import load_model, resolve_model_path
    from qsave.scoring import ScoringConfig, score_videos
    from qsave.storage import atomic_path

    hf_logging.disable_progress_bar()
    model_dir = resolve_model_path(args.model)
    model, processor = load_model(model_dir, dtype=args.dtype, device=args.device)
    cfg = ScoringConfig(
        batch_size=args.batch_size,
        explain=args.explain,
        max_new_tokens=args.max_new_tokens,
        uniform=args.uniform,
    )
    lines = score_videos(items, model, processor, _sampler(args.sampler, model_dir), cfg, progress=True)
    if args.out is None:
        ok, failed = _write_lines(lines, sys.stdout)
    else:
        with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            ok, failed = _write_lines(lines, fh)
    print(f"qsave score: {ok} scored, {failed} failed", file=sys.stderr)
    return 1 if ok == 0 else 0
