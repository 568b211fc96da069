"""The ``qsave`` command line: ``qsave <group> <command> …``; ``qsave --help`` lists the groups.

Each group lives in its own module exposing ``register(subparsers)``; add a module to
``GROUP_MODULES`` to add a group. Commands import heavy libraries only when they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

GROUP_MODULES = ("qsave.cli.data", "qsave.cli.eval", "qsave.cli.score", "qsave.cli.registry")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsave",
        description=(
            "Train, evaluate, gate and serve an explainable quality assessor for AI-generated video. "
            "Scores visual quality, motion quality, text-video alignment and overall (1–5) and says why."
        ),
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for module_name in GROUP_MODULES:
        importlib.import_module(module_name).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
