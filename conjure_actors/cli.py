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
from typing import Final, NoReturn, TextIO

from conjure_actors import __version__
from conjure_actors.commands.streams import to_devnull
from conjure_actors.errors import ConjureError, UsageError

# name -> the module's HELP (shown by ``--help`` without importing the module).
COMMANDS: Final[dict[str, str]] = {
    "run": "run a workflow (default: the CONJURE example on the embedded simulated cloud)",
    "replay": "replay an event log: timeline, state at any point, JSON, follow, check, diff",
    "validate": "check a workflow (and its input bindings) without running it",
    "status": "summarize a run log; or a ComfyUI's queue, the RunComfy account's machines and cost",
    "generate": "write the bundled example workflows and the example sketch image into DIR",
    "machine": "launch, inspect or stop a dev machine that `run` attaches to (RunComfy)",
    "sim": "serve a simulated RunComfy account and ComfyUI on loopback until Ctrl-C",
    "serve": "serve the Comfy API v2 job service over HTTP (default http://127.0.0.1:8189)",
}

EPILOG: Final = """examples:
  python -m conjure_actors run                      the CONJURE example on the simulated cloud
  python -m conjure_actors run my_workflow.json --comfyui-url http://127.0.0.1:8188
  python -m conjure_actors validate my_workflow.json --set 20.steps=30
  python -m conjure_actors replay runs/run-20260101-120000-42.log

RunComfy: set RUNCOMFY_USER_ID and RUNCOMFY_API_TOKEN (see docs/runcomfy.md).
"""

# name -> the examples its ``--help`` ends with (kept here with COMMANDS: one place to read).
EXAMPLES: Final[dict[str, str]] = {
    "run": """
  python -m conjure_actors run                      the CONJURE example, simulated cloud
  python -m conjure_actors run --jobs 3 --seed 7 --prompt "a glass owl"
  python -m conjure_actors run my_workflow.json --image in.png --set 20.steps=30
  python -m conjure_actors run my_workflow.json --comfyui-url http://127.0.0.1:8188
  RUNCOMFY_USER_ID=... RUNCOMFY_API_TOKEN=... python -m conjure_actors run \\
      --workflow-version 0123abcd-... --budget 2     on RunComfy (docs/runcomfy.md)
  python -m conjure_actors run --resume runs/run-20260101-120000-42.log
""",
    "replay": """
  python -m conjure_actors replay runs/run-20260101-120000-42.log
  python -m conjure_actors replay RUN.log --check
  python -m conjure_actors replay RUN.log --json
""",
    "validate": """
  python -m conjure_actors validate my_workflow.json
  python -m conjure_actors validate my_workflow.json --set 20.steps=30 --image sketch.png
  python -m conjure_actors validate my_workflow.json --comfyui-url http://127.0.0.1:8188
""",
    "status": """
  python -m conjure_actors status                   the account's machines (RunComfy
                                                    credentials), else the newest run log
  python -m conjure_actors status runs/run-20260101-120000-42.log     the log only
  python -m conjure_actors status runs/serve.log --account            and the account
  python -m conjure_actors status --comfyui-url http://127.0.0.1:8188
""",
    "generate": """
  python -m conjure_actors generate examples/
  python -m conjure_actors run examples/conjure_flux_mesh.json --image examples/sketch.png
""",
    "machine": """
  python -m conjure_actors machine up --workflow-version 0123abcd-...
  python -m conjure_actors machine status
  python -m conjure_actors machine down
""",
    "sim": """
  python -m conjure_actors sim --port 8300 --fault-429 0.1
  (then, in another shell, the variables it prints and: python -m conjure_actors run)
""",
    "serve": """
  python -m conjure_actors serve                    http://127.0.0.1:8189, simulated cloud
  python -m conjure_actors serve --port 0 --log serve.log --budget 5
""",
}

EXIT_USAGE = 2
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports of `yes | head`


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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose bad argument is one line, ``error: ...`` and where to look,
    exit 2: argparse's default puts the usage (seven lines for ``run``) before the one line
    that matters. Sub-parsers are made of the same class (``add_subparsers`` uses the
    parent's), so every command and ``machine up|status|down`` says it so."""

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(EXIT_USAGE, f"error: {line} (see `{self.prog} --help`)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but arguments nobody took are said by the parser of the
        (sub-)command chosen (``machine down --bogus``: see ``machine down --help``):
        argparse reports them from the top parser, whose help does not list them."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            _chosen_parser(self, parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _chosen_parser(
    parser: argparse.ArgumentParser, parsed: argparse.Namespace
) -> argparse.ArgumentParser:
    """The deepest (sub-)parser the parsed command line chose (``machine`` -> ``down``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
            if isinstance(chosen, argparse.ArgumentParser):
                return _chosen_parser(chosen, parsed)
    return parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` only (its module alone is imported;
    ``""``: no command's); ``None``: of every command (imports them all)."""
    parser = _Parser(
        prog="python -m conjure_actors",
        description="Run ComfyUI workflows on rented GPUs (or a simulated cloud).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"conjure_actors {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue
        module = importlib.import_module(command_module_name(name))
        p.epilog = "examples:" + EXAMPLES[name]
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show full tracebacks on errors",
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _error_lines(exc: UsageError) -> list[str]:
    """A workflow's problems one per line (as ``validate`` lists them); else one line."""
    from conjure_actors.domain.errors import WorkflowError

    if isinstance(exc, WorkflowError) and exc.problems:
        from conjure_actors.domain.workflow import problem_lines

        return problem_lines(exc)
    return [f"error: {exc}"]


def _reader_left(stream: TextIO) -> bool:
    """Whether ``stream`` (stdout, stderr) is a pipe whose reader has left: its flush
    fails so, or (nothing left to flush) the pipe reports the error end (POLLERR)."""
    import select

    try:
        stream.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):  # closed, or not a pipe
        return False
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (replaced in-process)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _to_stderr(line: str) -> None:
    """An error's line; a stderr that cannot be written (``2>/dev/full``, its reader gone)
    loses it, and the exit code still says how the command ended (not a second error's
    traceback on the same stderr)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        to_devnull(sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    try:  # a Ctrl-C while the command's modules load is an interrupt, not a traceback
        parser = build_parser(dispatched_command(words) or "")
    except KeyboardInterrupt:
        if "--debug" in words:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    args = parser.parse_args(words)
    debug = bool(getattr(args, "debug", False))
    try:
        code = int(args._module.main(args))
        sys.stdout.flush()  # what is left in its buffer: the reader may have left
        return code
    except BrokenPipeError as exc:
        # `status LOG | head`: the reader of stdout left. Python's documented handling
        # (the signal module's note on SIGPIPE): exit quietly, with stdout pointed at
        # /dev/null so that the interpreter's last flush cannot fail again. (A run that
        # sees it mid-run stops in order first: commands/run.py.) Only then: a pipe
        # closed under another write (a socket, a subprocess's pipe) is an error to say.
        if debug:
            raise
        if _reader_left(sys.stdout):
            to_devnull(sys.stdout)
            return EXIT_BROKEN_PIPE
        if _reader_left(sys.stderr):
            to_devnull(sys.stderr)
            return EXIT_BROKEN_PIPE
        print(
            f"error: {exc} (a connection or pipe the command wrote to closed; not stdout):"
            " run it again, with --debug to see where",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        if debug:
            raise
        for line in _error_lines(exc):
            _to_stderr(line)
        return EXIT_USAGE
    except ConjureError as exc:
        if debug:
            raise
        _to_stderr(f"error: {exc}")
        return EXIT_ERROR
