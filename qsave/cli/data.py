"""``qsave data …``: make, import and validate manifests."""

from __future__ import annotations

import argparse


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("data", help="make, import and validate datasets (manifests)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_import(commands)
    _register_validate(commands)
    _register_synth(commands)


def _register_import(commands: argparse._SubParsersAction) -> None:
    from qsave.importers import FORMATS

    parser = commands.add_parser(
        "import",
        help="import AIGVE-Bench JSON, a prompt-only folder, or a CSV/JSONL table into a manifest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a manifest (Parquet or JSONL, by --out's extension) from another format.\n\n"
            "  aigve   AIGVE-Bench annotations.json (or its folder): technical_quality -> mos_vq,\n"
            "          mean(dynamic, physics) -> mos_mq, mean(element_presentence, action_presentence)\n"
            "          -> mos_ta, overall -> mos_overall; 0 means 'not applicable' (left out of means).\n"
            "          Generator from the file name (cogvideox_0.mp4 -> cogvideox).\n"
            "  folder  prompt-only videos, unlabelled: a folder with annotations.json (prompt_gt,\n"
            "          video_path_pd) or plain videos whose prompt is the file stem\n"
            "          ('a cat-0.mp4' -> 'a cat').\n"
            "  csv, jsonl  a table; --map MANIFEST_COLUMN=SOURCE_COLUMN (repeatable), e.g. for a\n"
            "          T2VQA-DB-style file:\n"
            "          --map video_path=video_name --map mos_overall=mos --mos-range 0 100\n\n"
            "Video paths become absolute. Rows whose video is missing are kept and listed."
        ),
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="source format")
    parser.add_argument("src", help="source file or folder")
    parser.add_argument("--out", required=True, help="manifest to write (.parquet or .jsonl)")
    parser.add_argument("--split", default="test", help="split for rows that have none (default: test)")
    parser.add_argument(
        "--videos", default=None, help="folder holding the videos (default: beside the source)"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=SOURCE",
        help="csv/jsonl: take manifest COLUMN from the source's SOURCE column (repeatable)",
    )
    parser.add_argument("--generator", default="", help="folder: generator name for every row")
    parser.add_argument(
        "--mos-range",
        nargs=2,
        type=float,
        default=None,
        metavar=("LOW", "HIGH"),
        help="csv/jsonl: the source's MOS scale, rescaled linearly onto 1-5",
    )
    parser.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    import sys

    from qsave.importers import ImportFailed, import_source, parse_mapping
    from qsave.manifest import write_manifest

    try:
        result = import_source(
            args.format,
            args.src,
            split=args.split,
            videos_dir=args.videos,
            mapping=parse_mapping(args.map),
            generator=args.generator,
            mos_range=tuple(args.mos_range) if args.mos_range else None,
        )
    except ImportFailed as exc:
        print(f"qsave data import: {exc}", file=sys.stderr)
        return 2
    out = write_manifest(result.manifest, args.out)
    print(f"{result.report()}\nwrote {out}")
    return 0


def _register_synth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth",
        help="render the synthetic AIGV corpus (mp4 clips + manifest with known truth)",
        description=(
            "Render prompt-conditioned procedural clips from several simulated generators, rate them "
            "with a simulated panel, split the prompts into train/val/test and write DIR/videos/*.mp4 "
            "and DIR/manifest.parquet (video_path relative to DIR). Options left out take "
            "qsave.synthetic.SynthConfig's defaults (1200 clips of 128x128, 24 frames at 8 fps, seed 0, "
            "prompts split 70/15/15). The pipeline's default corpus is --n 2400 --splits 0.85,0.075,0.075."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, help="number of clips")
    parser.add_argument("--seed", type=int, help="random seed (same seed, same corpus)")
    parser.add_argument("--workers", type=int, help="render processes")
    parser.add_argument("--width", type=int, help="frame width (multiple of 16)")
    parser.add_argument("--height", type=int, help="frame height (multiple of 16)")
    parser.add_argument("--frames", dest="num_frames", type=int, help="frames per clip")
    parser.add_argument("--fps", type=int, help="frames per second")
    parser.add_argument("--generators", help="comma-separated simulated generators to use")
    parser.add_argument("--renders-per-prompt", type=int, help="generators that render each prompt")
    parser.add_argument(
        "--splits", help="train,val,test shares of the prompts (summing to 1), e.g. 0.85,0.075,0.075"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_synth)


def _shares(text: str) -> tuple[float, ...]:
    """``"0.85,0.075,0.075"`` → the shares, or a ValueError that says what to write."""
    try:
        return tuple(float(share) for share in text.split(","))
    except ValueError:
        raise ValueError(f"--splits {text!r}: write three numbers, e.g. 0.85,0.075,0.075") from None


def _run_synth(args: argparse.Namespace) -> int:
    import sys
    import time

    from qsave.manifest import read_manifest
    from qsave.schema import MOS_COLUMNS
    from qsave.synthetic import SynthConfig, generate_corpus

    options = {
        key: getattr(args, key)
        for key in ("n", "seed", "workers", "width", "height", "num_frames", "fps", "renders_per_prompt")
        if getattr(args, key) is not None
    }
    if args.generators:
        options["generators"] = tuple(g.strip() for g in args.generators.split(",") if g.strip())
    try:
        if args.splits:
            options["split_fractions"] = _shares(args.splits)
        cfg = SynthConfig(**options)
    except ValueError as exc:
        print(f"qsave data synth: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    manifest_path = generate_corpus(cfg, args.out, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    df = read_manifest(manifest_path)
    splits = ", ".join(f"{name} {count}" for name, count in df["split"].value_counts().sort_index().items())
    print(f"wrote {len(df)} clips and {manifest_path} in {elapsed:.1f} s ({splits} clips)")
    means = df.groupby("generator")[list(MOS_COLUMNS)].mean().round(2)
    print(f"mean MOS per generator:\n{means.to_string()}")
    return 0


def _register_validate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "validate",
        help="check a manifest (Great Expectations + decode probe); write valid/quarantine/summary/Data Docs",
        description=(
            "Validate MANIFEST: schema, ids, prompts, splits, MOS in 1-5, split leakage and a decode probe "
            "per video (with limits and a timeout). Writes DIR/valid.parquet, DIR/quarantine.parquet "
            "(with quarantine_reason and quarantine_detail), DIR/summary.json and DIR/data_docs/index.html. "
            "Exits 1 when the quarantined share is above --max-quarantine."
        ),
    )
    parser.add_argument("manifest", help="manifest to check (.parquet or .jsonl)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--max-quarantine",
        type=float,
        default=0.25,
        metavar="FRACTION",
        help="fail when more than this share of rows is quarantined (default: 0.25)",
    )
    parser.add_argument(
        "--allow-unlabeled", action="store_true", help="accept rows without MOS (prompt-only data)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed to probe one video")
    parser.add_argument("--workers", type=int, default=2, help="videos probed at once")
    parser.set_defaults(func=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from qsave.manifest import ManifestError, read_manifest
    from qsave.validation import ValidationConfig, ValidationFailed, validate_manifest
    from qsave.video import DecodeLimits

    cfg = ValidationConfig(
        limits=DecodeLimits(timeout_s=args.timeout),
        max_quarantine_fraction=args.max_quarantine,
        require_labels=not args.allow_unlabeled,
        probe_workers=args.workers,
    )
    try:
        frame = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"qsave data validate: {exc}", file=sys.stderr)
        return 2
    failure = None
    try:
        result = validate_manifest(
            frame, cfg, args.out, base_dir=Path(args.manifest).resolve().parent, progress=not args.json
        )
    except ValidationFailed as exc:
        result, failure = exc.result, exc
    summary = result.summary
    if args.json:
        print(json.dumps(summary))
    else:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary["by_reason"].items() if v) or "none"
        print(
            f"rows in: {summary['rows_in']}  valid: {summary['valid']}  "
            f"quarantined: {summary['quarantined']} ({reasons})\n"
            f"valid manifest: {result.out_dir / 'valid.parquet'} "
            f"(dataset version {summary['valid_dataset_version']})\n"
            f"quarantine: {result.out_dir / 'quarantine.parquet'}\n"
            f"data docs: {result.out_dir / 'data_docs' / 'index.html'}"
        )
    if failure is not None:
        print(f"qsave data validate: FAILED: {failure}", file=sys.stderr)
        return 1
    return 0
