"""`python -m conjure_actors validate` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

HELP = "validate (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    print("conjure_actors: 'validate' is not built yet")
    return 1
