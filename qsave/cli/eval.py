"""``qsave eval``: compute the evaluation report from any model's predictions.

``qsave eval --predictions FILE --out DIR`` reads a CSV/Parquet file with ``video_id``, ``generator``,
``pred_<dim>`` and ``mos_<dim>`` (dim in vq, mq, ta, overall), optionally ``reasons_<dim>`` /
``pred_reasons_<dim>`` (lists or comma-separated codes), ``std_<dim>`` and ``prob_<dim>_<level>``, and
writes ``report.json``, the PNG plots, ``reason_f1.csv`` and ``report.html`` into DIR. ``--compare
NAME=FILE`` adds other prediction sets scored on the same videos (e.g. ``base=…``, ``champion=…``);
``--baseline MANIFEST`` fits the classical feature baseline on the manifest's train split and adds it.
``--json`` prints one JSON object keyed ``<metric>_<dim>`` (``srcc_vq``, ``plcc_fit_ta``,
``model_srcc_overall`` …, plus ``delta_<set>_<metric>_<dim>``); nan is printed as null.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from qsave.evaluation import Evaluation

TEXT_COLUMNS = ("n", "srcc", "krcc", "plcc", "plcc_fit", "rmse_fit", "model_srcc", "level_acc")


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "eval",
        help="evaluate predictions against MOS: SRCC/KRCC/PLCC, model level, reasons, uncertainty, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, metavar="FILE", help="predictions + MOS (.csv/.parquet)")
    source.add_argument(
        "--model",
        metavar="MODEL",
        help="score --manifest with this model (path, hub id, tiny, models:/qsave@champion) and evaluate it",
    )
    parser.add_argument("--manifest", type=Path, help="with --model: the rated videos (.parquet/.jsonl)")
    parser.add_argument(
        "--split", help="with --model: evaluate only this split of the manifest (default: all)"
    )
    parser.add_argument(
        "--base", metavar="MODEL", help="with --model: the untrained base model, scored beside it (e.g. tiny)"
    )
    parser.add_argument(
        "--champion",
        default="models:/qsave@champion",
        metavar="URI",
        help="with --model: the registered champion to compare with, skipped when the alias does not exist "
        "(default: models:/qsave@champion; '' to skip)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="with --model: videos per batch")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="with --model: also generate the full answers of --model and the champion (not of --base, "
        "which never stops writing) and score their reasons against the raters' (precision/recall/F1)",
    )
    parser.add_argument(
        "--name", default="candidate", help="name of the --predictions set (default: candidate)"
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="another prediction set to compare on the same videos (repeatable), e.g. base=base.csv",
    )
    parser.add_argument(
        "--train-predictions",
        type=Path,
        metavar="FILE",
        help="predictions + MOS on the train split: fit the logistic there and apply it to FILE's rows",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="MANIFEST",
        help="fit the classical feature baseline on this manifest's train split and compare with it",
    )
    parser.add_argument(
        "--video-root",
        type=Path,
        help="directory relative video paths are taken from (default: the manifest's)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--ci-level", type=float, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(func=run)


def _named_file(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--compare expects NAME=FILE, got {spec!r}")
    return name, Path(path)


def _baseline_predictions(manifest_path: Path, video_root: Path | None, out: Path) -> pd.DataFrame:
    from qsave.baseline import run_baseline
    from qsave.manifest import read_manifest
    from qsave.storage import write_text_atomic

    manifest = read_manifest(manifest_path)
    result = run_baseline(manifest, video_root or manifest_path.parent, progress=True)
    result.model.save(out / "baseline_model.json")
    if not result.failures.empty:
        write_text_atomic(out / "baseline_failures.csv", result.failures.to_csv(index=False))
        for row in result.failures.itertuples():
            print(f"baseline: video {row.video_id} ({row.video_path}) unreadable: {row.reason}: {row.detail}",
                  file=sys.stderr)  # fmt: skip
    return result.predictions


def _model_predictions(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """Score the manifest with --model (and --base, and the champion when it exists); truth joined in."""
    from qsave.manifest import read_manifest
    from qsave.predictions import PredictConfig, predict_videos
    from qsave.registry import champion_reference

    if args.manifest is None:
        raise ValueError("--model needs --manifest (the rated videos to score)")
    manifest = read_manifest(args.manifest)
    if args.split:
        manifest = manifest[manifest["split"] == args.split].reset_index(drop=True)
        if manifest.empty:
            raise ValueError(f"{args.manifest} has no rows in split {args.split!r}")
    models = {args.name: args.model}
    if args.base:
        models["base"] = args.base
    champion = champion_reference(args.champion)
    if champion:
        models["champion"] = champion
    cfg = PredictConfig(batch_size=args.batch_size)
    explained = PredictConfig(batch_size=args.batch_size, explain=True)
    truth_columns = [c for c in manifest.columns if c != "video_path" and c != "prompt"]
    sets = {}
    for name, model in models.items():
        print(f"scoring {len(manifest)} videos with {name} ({model})", file=sys.stderr)
        explain = args.explain and name != "base"
        predicted = predict_videos(
            model, manifest, args.manifest.parent, explained if explain else cfg, progress=True
        )
        for row in predicted[predicted["error"] != ""].itertuples():
            print(f"{name}: video {row.video_id} not scored: {row.error}", file=sys.stderr)
        sets[name] = predicted.merge(manifest[truth_columns], on="video_id", how="left")
    return sets


def _text_summary(evaluation: Evaluation) -> str:
    lines = []
    for name, model in evaluation.models.items():
        flat = model.flat()
        lines.append(f"{name} ({model.n_scored} of {len(evaluation.truth)} videos scored)")
        lines.append("  dim      " + "".join(f"{c:>11}" for c in TEXT_COLUMNS))
        for dim in evaluation.dimensions:
            values = (flat.get(f"{c}_{dim}", math.nan) for c in TEXT_COLUMNS)
            lines.append(f"  {dim:<8} " + "".join(f"{v:>11.4f}" if c != "n" else f"{v:>11.0f}"
                                                  for c, v in zip(TEXT_COLUMNS, values)))  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from qsave.evaluation import EvalConfig, EvaluationError, evaluate, fit_logistics, read_predictions
    from qsave.metrics import MetricWarning
    from qsave.report import REPORT_HTML, jsonable, write_report

    try:
        sets = _model_predictions(args) if args.model else {args.name: read_predictions(args.predictions)}
        for spec in args.compare:
            name, path = _named_file(spec)
            if name in sets:
                raise ValueError(f"prediction set name {name!r} is used twice")
            sets[name] = read_predictions(path)
        truth = sets[args.name]
        if args.baseline is not None:
            if "baseline" in sets:
                raise ValueError(
                    "--baseline adds a set named 'baseline'; give the --compare set another name"
                )
            sets["baseline"] = _baseline_predictions(args.baseline, args.video_root, args.out)
        fits = (
            {args.name: fit_logistics(read_predictions(args.train_predictions))}
            if args.train_predictions
            else {}
        )
        config = EvalConfig(
            n_bootstrap=args.bootstrap, ci_level=args.ci_level, seed=args.seed, primary=args.name
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)  # printed below as notes
            evaluation = evaluate(sets, truth=truth, config=config, fits=fits)
        paths = write_report(evaluation, args.out)
    except (EvaluationError, ValueError, OSError) as exc:
        print(f"qsave eval: {exc}", file=sys.stderr)
        return 2
    for note in evaluation.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(jsonable(evaluation.summary()), allow_nan=False))
    else:
        print(_text_summary(evaluation))
        print(f"report: {paths[REPORT_HTML]}")
    return 0
