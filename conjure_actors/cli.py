"""The command line: ``python -m conjure_actors COMMAND ...``.

Each command lives in ``conjure_actors/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``main(args) -> int``. This module only dispatches and turns
errors into one clear line (a traceback only with ``--debug``).

Start time: only the dispatched command's module is imported (``--help`` imports none), so a
command loads what it needs and nothing else; the one-line helps listed by ``--help`` are kept
here, in :data:`COMMANDS`, and a test checks that they match each module's ``HELP``. A new
command is one entry in :data:`COMMANDS` and its module.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from conjure_actors.errors import ConjureError, UsageError

# name -> the module's HELP (shown by ``--help`` without importing the module).
COMMANDS: Final[dict[str, str]] = {
    "run": "run a workflow (default: the CONJURE example on the embedded simulated cloud)",
    "replay": "replay an event log: timeline, state at any point, JSON, follow, check, diff",
    "validate": "check a workflow (and its input bindings) without running it",
    "status": "show a ComfyUI's queue, the RunComfy account's machines and costs, or a run log",
    "generate": "write the bundled example workflows and the example sketch image into DIR",
    "machine": "launch, inspect or stop a dev machine that `run` attaches to (RunComfy)",
    "sim": "serve a simulated RunComfy account and ComfyUI on loopback until Ctrl-C",
    "serve": "serve the Comfy API v2 job service over HTTP (default http://127.0.0.1:8189)",
}

EXIT_USAGE = 2
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def command_module_name(name: str) -> str:
    """The module that implements command ``name``."""
    return f"conjure_actors.commands.{name}"


def dispatched_command(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first word that is not an option), if any.

    The only options before the command are flags (``--debug``, ``--help``), so the first
    word that does not start with ``-`` is the command.
    """
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` only (its module alone is imported;
    ``""``: no command's); ``None``: of every command (imports them all)."""
    parser = argparse.ArgumentParser(
        prog="python -m conjure_actors",
        description="Run ComfyUI workflows on rented GPUs (or a simulated cloud).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue
        module = importlib.import_module(command_module_name(name))
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show full tracebacks on errors",
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(dispatched_command(words) or "")
    args = parser.parse_args(words)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args._module.main(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConjureError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
