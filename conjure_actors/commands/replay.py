"""`python -m conjure_actors replay` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

HELP = "replay (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    print("conjure_actors: 'replay' is not built yet")
    return 1
