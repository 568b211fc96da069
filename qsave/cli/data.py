"""``qsave data …``: make, import and validate manifests."""

from __future__ import annotations

import argparse


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("data", help="make, import and validate datasets (manifests)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    del commands  # commands are added below as they land
