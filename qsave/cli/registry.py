"""``qsave registry``: review registered models and move aliases.

``list`` (every version: aliases, gate, SRCC/PLCC per dimension, data version), ``show REF`` (one version:
all tags, gate reasons, sample explanations), ``compare [A] [B]`` (default champion vs challenger, side by
side with deltas), ``promote [REF]`` (default the challenger → ``champion``; the old champion stays as
``previous-champion``), ``rollback`` (``champion`` ← ``previous-champion``), ``register MODEL_DIR --report
report.json …`` (register a trained model whose registration failed, then gate it). REF is a version number
or an alias. Every command is safe to rerun: a second ``promote`` or ``rollback`` changes nothing.

The tracking URI is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<$QSAVE_HOME or
cwd>/mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qsave.registry import VersionView


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: see qsave registry -h)"
    )
    parser.add_argument("--name", default="qsave", help="registered model name (default qsave)")


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser(
        "registry",
        help="review registered models, compare champion and challenger, promote and roll back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("list", help="every version with aliases, gate and metrics")
    _common(p)
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=run_list)

    p = commands.add_parser("show", help="one version: tags, gate reasons, sample explanations")
    _common(p)
    p.add_argument("ref", help="version number or alias (champion, challenger, previous-champion)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.set_defaults(func=run_show)

    p = commands.add_parser("compare", help="two versions side by side (default champion vs challenger)")
    _common(p)
    p.add_argument("a", nargs="?", default="champion", help="first version or alias (default champion)")
    p.add_argument("b", nargs="?", default="challenger", help="second version or alias (default challenger)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=run_compare)

    p = commands.add_parser("promote", help="make a version champion (default: the challenger)")
    _common(p)
    p.add_argument("ref", nargs="?", default=None, help="version number or alias (default challenger)")
    p.set_defaults(func=run_promote)

    p = commands.add_parser("rollback", help="point champion back at previous-champion")
    _common(p)
    p.set_defaults(func=run_rollback)

    p = commands.add_parser("register", help="register a trained model dir with its evaluation, then gate it")
    _common(p)
    p.add_argument("model_dir", type=Path, help="saved model directory (config.json + *.safetensors)")
    p.add_argument("--report", type=Path, required=True, help="the evaluation's report.json")
    p.add_argument("--set", default="candidate", help="prediction set of the model in the report")
    p.add_argument("--data-version", required=True, help="training data version")
    p.add_argument(
        "--eval-data-version", default=None, help="evaluation split version (default data version)"
    )
    p.add_argument("--config-hash", required=True, help="hash of the training config")
    p.add_argument(
        "--execution-id", default="manual", help="Flyte execution id it was trained in (default manual)"
    )
    p.add_argument("--samples", type=Path, default=None, help="JSON lines of sample explanations to keep")
    p.add_argument("--min-srcc", type=float, default=0.5, help="gate: SRCC threshold per dimension")
    p.add_argument("--min-plcc", type=float, default=0.5, help="gate: PLCC threshold per dimension")
    p.add_argument("--max-regression", type=float, default=0.02, help="gate: tolerated drop vs champion")
    p.add_argument("--auto-promote", action="store_true", help="a passing model becomes champion at once")
    p.set_defaults(func=run_register)


def _fail(message: str) -> int:
    print(f"qsave registry: {message}", file=sys.stderr)
    return 1


def _guard(fn: Any) -> Any:
    """Turn registry/tracking errors into one clear line and exit status 1."""

    def wrapped(args: argparse.Namespace) -> int:
        from qsave.registry import RegistryError
        from qsave.tracking import TrackingError

        try:
            return int(fn(args) or 0)
        except (RegistryError, TrackingError, FileNotFoundError) as exc:
            return _fail(str(exc))

    return wrapped


def _metric_keys() -> list[str]:
    from qsave.gate import GATED_METRICS
    from qsave.schema import DIMENSIONS

    return [f"{m}_{d}" for d in DIMENSIONS for m in GATED_METRICS]


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    )


def _view_dict(view: VersionView) -> dict[str, Any]:
    return {
        "version": view.version,
        "aliases": list(view.aliases),
        "gate": view.gate(),
        "run_id": view.run_id,
        "source": view.source,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(view.created_ms / 1000)),
        "tags": view.tags,
    }


@_guard
def run_list(args: argparse.Namespace) -> int:
    from qsave.registry import list_versions

    views = list_versions(name=args.name, uri=args.tracking_uri)
    if args.json:
        print(json.dumps([_view_dict(v) for v in views], indent=2))
        return 0
    keys = _metric_keys()
    rows = [
        [
            v.version,
            ",".join(v.aliases) or "-",
            v.gate(),
            *(_fmt(v.metrics().get(k)) for k in keys),
            v.tags.get("data_version", "-")[:12],
            v.tags.get("code_version", "-"),
        ]
        for v in views
    ]
    print(_table(["version", "aliases", "gate", *keys, "data", "code"], rows))
    return 0


def _samples(view: VersionView, uri: str | None) -> list[dict[str, Any]]:
    from qsave.registry import sample_explanations

    return sample_explanations(view, uri=uri)


@_guard
def run_show(args: argparse.Namespace) -> int:
    from qsave.registry import get_version

    view = get_version(args.ref, name=args.name, uri=args.tracking_uri)
    samples = _samples(view, args.tracking_uri)
    if args.json:
        print(json.dumps({**_view_dict(view), "samples": samples}, indent=2))
        return 0
    info = _view_dict(view)
    print(f"{args.name} v{view.version}  aliases: {', '.join(view.aliases) or '-'}  gate: {view.gate()}")
    for key in ("run_id", "source", "created"):
        print(f"  {key}: {info[key]}")
    for key, value in sorted(view.tags.items()):
        print(f"  {key}: {value}")
    for sample in samples:
        print(f"  sample: {json.dumps(sample, ensure_ascii=False)}")
    return 0


@_guard
def run_compare(args: argparse.Namespace) -> int:
    from qsave.registry import LINEAGE_TAGS, get_version

    a = get_version(args.a, name=args.name, uri=args.tracking_uri)
    b = get_version(args.b, name=args.name, uri=args.tracking_uri)
    ma, mb = a.metrics(), b.metrics()
    if args.json:
        print(
            json.dumps(
                {
                    "a": {**_view_dict(a), "samples": _samples(a, args.tracking_uri)},
                    "b": {**_view_dict(b), "samples": _samples(b, args.tracking_uri)},
                    "delta": {k: mb[k] - ma[k] for k in _metric_keys() if k in ma and k in mb},
                },
                indent=2,
            )
        )
        return 0
    head = ["", f"{args.a} (v{a.version})", f"{args.b} (v{b.version})", "b - a"]
    rows = [
        [k, _fmt(ma.get(k)), _fmt(mb.get(k)), _fmt(mb[k] - ma[k] if k in ma and k in mb else None)]
        for k in _metric_keys()
    ]
    rows += [[k, a.tags.get(k, "-"), b.tags.get(k, "-"), ""] for k in ("gate", *LINEAGE_TAGS)]
    print(_table(head, rows))
    for label, view in ((args.a, a), (args.b, b)):
        for sample in _samples(view, args.tracking_uri):
            print(f"{label} sample: {json.dumps(sample, ensure_ascii=False)}")
    return 0


@_guard
def run_promote(args: argparse.Namespace) -> int:
    from qsave.registry import promote

    print(promote(args.ref, name=args.name, uri=args.tracking_uri).message)
    return 0


@_guard
def run_rollback(args: argparse.Namespace) -> int:
    from qsave.registry import rollback

    print(rollback(name=args.name, uri=args.tracking_uri).message)
    return 0


@_guard
def run_register(args: argparse.Namespace) -> int:
    from qsave.gate import GateConfig
    from qsave.registry import Lineage, gate_model_version, metrics_from_report, register_model
    from qsave.versioning import code_version

    report = json.loads(args.report.read_text(encoding="utf-8"))
    metrics = metrics_from_report(report, args.set)
    champion = metrics_from_report(report, "champion") if "champion" in report.get("models", {}) else None
    lineage = Lineage(
        data_version=args.data_version,
        eval_data_version=args.eval_data_version or args.data_version,
        code_version=code_version(),
        flyte_execution_id=args.execution_id,
        config_hash=args.config_hash,
    )
    version = register_model(
        args.model_dir, metrics, lineage, name=args.name, samples=args.samples, uri=args.tracking_uri
    )
    cfg = GateConfig(
        min_srcc=args.min_srcc,
        min_plcc=args.min_plcc,
        max_regression=args.max_regression,
        auto_promote=args.auto_promote,
    )
    decision = gate_model_version(
        version, cfg, champion_metrics=champion, name=args.name, uri=args.tracking_uri
    )
    print(f"registered {args.name} v{version}; gate {decision.summary()}")
    return 0
