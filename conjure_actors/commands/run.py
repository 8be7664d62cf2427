"""``python -m conjure_actors run``: run a workflow (by default the CONJURE example) to the end.

Where it runs, in order of precedence: ``--comfyui-url`` (a ComfyUI you run: no machines, no
cost), RunComfy when ``RUNCOMFY_USER_ID`` and ``RUNCOMFY_API_TOKEN`` are set (or in the
config file; ``RUNCOMFY_API_BASE_URL`` aims it elsewhere, e.g. at ``python -m conjure_actors
sim``), else the embedded simulated cloud, in-process. The first line says which.

Output: on a terminal a live view (fit to the terminal: machines and total cost always
shown); otherwise (or with ``--json``) one JSON line per meaningful event on stdout (node
progress at most twice a second per job), a ``run.error`` record per failed or cancelled
job and a final ``run.summary`` object (docs/run-json.md); the human lines (banner, summary,
why each job failed) go to stderr. The log goes to ``./runs/`` (mode 0600) unless
``--log``; outputs to ``OUT/<job_id>/``.

Ctrl-C, SIGTERM, SIGHUP (the terminal closed): stop launching, leave every unfinished job
``interrupted`` (``run --resume LOG`` runs it to the end; a job the user cancelled stays
cancelled), stop every machine this run launched or adopted (shielded, with a deadline), log
``SystemStopped``, print the summary (if the terminal is still there); one during start-up
(replay, reconcile, resumed jobs relaunching) does so once start-up is done, unless nothing
was launched or adopted yet (no machine, no launch in flight): start-up is then stopped at
once (a RunComfy that does not answer is not retried for a minute first). A second Ctrl-C
exits at once and names the machines (and launches in flight) that may still be running, and
the ``--resume LOG`` that stops them (during start-up: the log that has them; on the embedded
simulated cloud, that nothing is left: it ends with the process). An error anywhere runs
the same ordered shutdown and prints one line (a traceback only with ``--debug``); if the
log cannot take more (a full disk), the machines are stopped anyway and the line says so and
names them.

Exit: 0 when every job succeeded (the summary's ``"ok"``; also a resume of a log that holds
no job: nothing to resume, said in one line, its machines and launches reconciled), 1 when
one failed or was cancelled (or on an error), 2 on bad input (a log with no record at all),
130 on Ctrl-C (SIGINT), 143 on SIGTERM, 129 on SIGHUP (128 + the signal's number), 141 when
stdout's reader left (``run --json | head``: it stops in order, as on a signal). A new run whose
start-up is refused (its ComfyUI does not answer, RunComfy rejects the credentials) leaves no
log (nor does one stopped by a signal before it recorded a job or a machine): the same
command runs again once the cause is fixed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import shlex
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from conjure_actors.actors.example import (
    DEFAULT_PROMPT,
    DEFAULT_WORKFLOW,
    bundled_workflow,
    example_sketch_png,
)
from conjure_actors.actors.view import (
    error_record,
    event_json_line,
    summarize,
    summary_lines,
    summary_record,
)
from conjure_actors.clients.download import make_dirs
from conjure_actors.commands.cloud_args import add_cloud_arguments, cloud_flags, load_cloud_config
from conjure_actors.config import Config, require_priced_server_type
from conjure_actors.domain import events as ev
from conjure_actors.domain.describe import describe as describe_event
from conjure_actors.domain.machines_policy import paid_machines
from conjure_actors.errgroups import describe, meaningful
from conjure_actors.errors import ConjureError, UsageError

log = logging.getLogger("conjure_actors.commands.run")

HELP = "run a workflow (default: the CONJURE example on the embedded simulated cloud)"

EXIT_INTERRUPTED = 130
# More jobs than this in one run is a typo (every one is queued and may launch machines);
# a bigger batch is several runs.
MAX_JOBS: Final = 10_000
# The journal writes the state to LOG.snapshots/ every this many events, so that `replay
# --at SEQ` (and a resumed run) folds at most this many records after the nearest one.
SNAPSHOT_EVERY: Final = 20_000
# A resume that folds this many records or more without a snapshot (~0.5 s) says why.
SLOW_FOLD: Final = 250_000
# Where outputs go (OUT/<job_id>/) when --out is not given and no log says where.
DEFAULT_OUT: Final = "out"

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that end a run in order (``128 + signum`` is the exit code)."""

_REASONS: Final = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated",
    signal.SIGHUP: "hangup",
    signal.SIGPIPE: "broken pipe",  # not a signal here: stdout's reader left (Out, JsonSink)
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "workflow",
        nargs="?",
        metavar="WORKFLOW.json",
        help="API-format workflow (default: the bundled CONJURE workflow)",
    )
    parser.add_argument("--image", metavar="PATH", help="input image for the LoadImage node")
    parser.add_argument("--prompt", metavar="TEXT", help="text for the prompt node")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="set a node input (repeatable)",
    )
    # (None: not given; main makes it 1 and 0, once --resume has refused them.)
    parser.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="run N jobs with different seeds"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the first job")
    parser.add_argument("--priority", type=int, default=None, help="job priority (higher first)")
    add_cloud_arguments(parser)
    parser.add_argument("--log", metavar="PATH", help="event log (default under ./runs/)")
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="outputs go to DIR/<job>/ (default: out; a resume: where its run wrote them)",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    parser.add_argument(
        "--resume",
        metavar="LOG",
        help="resume the run recorded in LOG: its unfinished jobs run to the end, as they"
        " were submitted, and the run goes on writing LOG; it keeps the run's --out,"
        " --server-type, --max-machines and --idle-timeout unless given again, takes the"
        " cloud options, --budget, --config and --json, and refuses a WORKFLOW.json,"
        " --image, --prompt, --set, --jobs, --seed, --priority and --log (those make a new"
        " run)",
    )


_NEW_RUN_ONLY: Final = (
    ("workflow", "WORKFLOW.json"),
    ("image", "--image"),
    ("prompt", "--prompt"),
    ("sets", "--set"),
    ("jobs", "--jobs"),
    ("seed", "--seed"),
    ("priority", "--priority"),
)
"""What makes a new run's jobs: a resumed run runs the jobs its log holds, so ``--resume``
refuses each (as it refuses ``--log``: the resumed run writes the log it resumes)."""


def refuse_new_run_options(args: argparse.Namespace) -> None:
    """``--resume LOG`` with an option of a new run: one line (exit 2), never the option
    dropped without a word (the run would "succeed" by summing up the old one)."""
    resumed = _q(Path(args.resume))
    if args.log is not None:
        raise UsageError(
            f"--log {_q(Path(args.log))} cannot go with --resume {resumed}: a resumed run goes"
            f" on writing the log it resumes; leave --log out (or run without --resume)"
        )
    for attr, flag in _NEW_RUN_ONLY:
        if getattr(args, attr) not in (None, []):
            raise UsageError(
                f"{flag} cannot go with --resume {resumed}: a resumed run runs the unfinished"
                " jobs its log holds, as they were submitted; leave it out, or start a new run"
                " without --resume"
            )


def _config(args: argparse.Namespace) -> Config:
    flags = {**cloud_flags(args), "monitor.json": True if args.json else None}
    return load_cloud_config(args.config, flags)


class Out:
    """Where human lines and event lines go (JSON mode: events on stdout, text on stderr).

    ``stdout_closed``: called (instead of raising) when stdout's reader has left (``run
    --json | head``); the run then stops in order, as on a signal (:class:`_Stopping`)."""

    def __init__(self, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json_mode = json_mode
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_closed: Callable[[], None] | None = None
        self._stderr_ok = True

    def say(self, text: str, kind: str = "run.info", **fields: Any) -> None:
        if self.json_mode:
            self._note(text)
            self._line(json.dumps({"type": kind, "message": text, **fields}))
        else:
            self._line(text)

    def human(self, text: str) -> None:
        """A line for people only: stderr in JSON mode (see :meth:`_note`), else stdout."""
        if self.json_mode:
            self._note(text)
        else:
            print(text, file=self.stdout, flush=True)

    def _note(self, text: str) -> None:
        """JSON mode: a human line on stderr, beside its record on stdout. stderr is only
        for people: when it cannot be written (its reader left, a full disk), the notes
        stop and the run goes on, its records on stdout (``run --json 2>/dev/full``)."""
        if not self._stderr_ok:
            return
        try:
            print(text, file=self.stderr, flush=True)
        except OSError as exc:
            self._stderr_ok = False
            log.info("stderr cannot be written (%s): the run's notes go to stdout only", exc)

    def record(self, record: dict[str, Any]) -> None:
        """One JSON record on stdout (JSON mode only)."""
        if self.json_mode:
            self._line(json.dumps(record))

    def _line(self, text: str) -> None:
        try:
            print(text, file=self.stdout, flush=True)
        except BrokenPipeError:
            if self.stdout_closed is None:
                raise
            self.stdout_closed()
        except OSError as exc:  # a full disk under a redirected stdout
            raise ConjureError(
                f"cannot write the run's output to stdout ({exc.strerror or exc}): free space"
                " where stdout goes, or send it elsewhere"
            ) from None


PROGRESS_INTERVAL: Final = 0.5
"""JSON mode: at most one ``exec.node_progress`` line per job per this many seconds."""

_ENDS: Final = frozenset({"job.failed", "job.cancelled"})
_QUIET: Final = frozenset({"actor.started", "actor.stopped"})  # the runtime's, not the run's
_BUDGET_NOTICES: Final = (ev.BudgetWarning, ev.BudgetExceeded, ev.BudgetLimitReached)


def budget_notice(event: Any) -> str | None:
    """The line a run shows for a budget event (the warning, the excess, the stop of
    launches and renewals), as the replay's timeline words it; ``None`` for the others."""
    if not isinstance(event, _BUDGET_NOTICES):
        return None
    subject, summary = describe_event(event)
    return f"{subject}: {summary}"


class JsonSink:
    """MonitorActor sink: one JSON line per meaningful published event (a job's progress at
    most twice a second), and a ``run.error`` record for every job that fails or is
    cancelled (docs/run-json.md)."""

    def __init__(
        self,
        stream: TextIO,
        progress_interval: float = PROGRESS_INTERVAL,
        notices: TextIO | None = None,
        *,
        closed: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.progress_interval = progress_interval
        self.notices = notices  # where a budget event's line goes too (the terminal)
        self._last_progress: dict[str, float] = {}
        # Called when the stream's reader has left (the monitor would drop the sink
        # and the run go on, unseen: it stops in order instead, as on a signal).
        self._closed = closed

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        try:
            self._record(seq, ts, event, state)
        except BrokenPipeError:
            if self._closed is None:
                raise
            self._closed()

    def _record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        kind = type(event).__struct_config__.tag
        if kind in _QUIET:
            return
        if kind == "exec.node_progress":
            last = self._last_progress.get(event.job_id)
            if last is not None and ts - last < self.progress_interval:
                return
            self._last_progress[event.job_id] = ts
        self.stream.write(event_json_line(seq, ts, event) + "\n")
        if self.notices is not None and (notice := budget_notice(event)) is not None:
            # On its own guard: a closed stderr is not a closed stdout (whose reader
            # leaving stops the run); the notice's event is on stdout and in the log.
            try:
                print(notice, file=self.notices, flush=True)
            except OSError as exc:
                log.info("%s (not shown: %s)", notice, exc)
        if kind in _ENDS:
            job = state.jobs.get(event.job_id) if state is not None else None
            if job is not None and job.status in ("failed", "cancelled"):
                self.stream.write(json.dumps({"seq": seq, "ts": round(ts, 6), **error_record(job)}))
                self.stream.write("\n")

    def tick(self, state: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            if self._closed is None:
                raise
            self._closed()


class RichSink:
    """MonitorActor sink: the Rich live view, redrawn on each tick."""

    def __init__(self, job_ids: list[str]) -> None:
        from rich.live import Live

        self.job_ids = job_ids
        self.live = Live(refresh_per_second=4, transient=False)
        self.live.start()

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        if (notice := budget_notice(event)) is not None:
            self.live.console.print(notice, markup=False, highlight=False)

    def tick(self, state: Any) -> None:
        from conjure_actors.actors.view import render_view

        size = self.live.console.size
        self.live.update(
            render_view(state, time.time(), self.job_ids, height=size.height, width=size.width)
        )

    def close(self) -> None:
        self.live.stop()


def _default_log() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"run-{stamp}-{os.getpid()}.log"


def main(args: argparse.Namespace) -> int:
    logged: Any = None  # a resume's log, read once (snapshot + tail): see keep_run_options
    if args.resume:
        refuse_new_run_options(args)
        logged = keep_run_options(args, note=_tell)
    args.jobs = 1 if args.jobs is None else args.jobs
    args.priority = 0 if args.priority is None else args.priority
    if not 1 <= args.jobs <= MAX_JOBS:
        raise UsageError(f"--jobs {args.jobs}: use a number from 1 to {MAX_JOBS}")
    if not -(2**63) <= args.priority < 2**63:
        raise UsageError(f"--priority {args.priority}: use an integer from -2**63 to 2**63-1")
    config = _config(args)
    json_mode = config.monitor.json or not sys.stdout.isatty()
    out = Out(json_mode, sys.stdout, sys.stderr)
    prepared = _prepare(args, config, logged)
    try:
        return trio.run(_main, args, config, out, prepared, logged)
    except BaseException as exc:
        if getattr(args, "debug", False):
            raise
        raise stopped_error(exc, prepared[0], "run") or one_line_error(exc) from None


def stopped_error(exc: BaseException, log_path: Path, command: str) -> Exception | None:
    """``command`` (``run`` or ``serve``) stopped on an error (the actor system's
    ``RunStoppedError``: its event log refused writes, a crash loop): the one line it ends
    with, said as that command's, without an exception class for a log that cannot be
    appended, with what was stopped and how to go on. None: ``exc`` is not that."""
    from conjure_actors.actors.conjure import RunStoppedError
    from conjure_actors.errgroups import describe, meaningful
    from conjure_actors.errors import ConjureError

    leaf = meaningful(exc)
    if not isinstance(leaf, RunStoppedError):
        return None
    if command == "serve":
        again = f"serve --log {shlex.quote(str(log_path))}"
        goes_on = f"`{again}` serves again and resumes the jobs left unfinished"
    else:
        again = f"run --resume {shlex.quote(str(log_path))}"
        goes_on = f"`{again}` finishes the jobs left unfinished"
    write_error = _log_write_error(leaf)
    if write_error is not None:
        import eventlog

        why = (
            "the disk holding its event log is full"
            if isinstance(write_error, eventlog.DiskFullError)
            else f"its event log refused writes ({_log_write_reason(write_error)})"
        )
        what = f"{why}; the log is unchanged (valid up to its last record)"
        todo = (
            "free space on that disk"
            if isinstance(write_error, eventlog.DiskFullError)
            else "fix that"
        ) + f", then {goes_on}"
    else:
        failure = leaf.failure if leaf.failure is not None else leaf
        what = describe(failure)
        todo = goes_on
    # (The hint for a launch without answer, said with the command that stops it.)
    stops = (leaf.stops or "no machine was running").replace(
        "(--resume stops it)", f"(`{again}` stops it)"
    )
    parts = [f"{command} stopped: {what}", stops, todo]
    return ConjureError("; ".join(parts))


def _log_write_error(exc: BaseException) -> Exception | None:
    """The event log's failed append behind ``exc`` (its failure, causes, group members)."""
    import eventlog
    from conjure_actors.actors.conjure import RunStoppedError
    from conjure_actors.errgroups import leaves

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, eventlog.LogWriteError):
            return current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(leaves(current))
        if isinstance(current, RunStoppedError):
            todo.append(current.failure)
        todo.extend((current.__cause__, current.__context__))
    return None


def _log_write_reason(exc: BaseException) -> str:
    """Why the log's append failed, in words (the OS's), not the exception's class."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return " ".join(str(exc).split())


def one_line_error(exc: BaseException) -> BaseException:
    """What the user sees of ``exc`` (one line, through the CLI): the meaningful error of an
    exception group; a ConjureError or an interrupt as it is; anything else (a bug, an
    unexpected OSError) as a ConjureError naming it and ``--debug``."""
    import eventlog

    leaf = meaningful(exc)
    if isinstance(leaf, eventlog.UnknownEventError):  # (a log read once started: serve's)
        from conjure_actors.commands.replay_impl import newer_log_error

        return newer_log_error(None, leaf)
    if leaf is None or isinstance(
        leaf, ConjureError | KeyboardInterrupt | SystemExit | BrokenPipeError
    ):
        return leaf if leaf is not None else exc
    return ConjureError(f"{describe(leaf)} (run with --debug for the traceback)")


def _prepare(
    args: argparse.Namespace, config: Config, logged: Any = None
) -> tuple[Path, Any, bytes | None, str | None]:
    """Validate every input before anything is launched: log, workflow, image, budget.
    ``logged``: a resume's log as :func:`read_log` read it (None: it could not be)."""
    from conjure_actors.commands.live_copy import (
        refuse_a_copy_being_written,
        refuse_a_live_writers_copy,
    )
    from conjure_actors.domain.workflow import load_workflow, workflow_from_text

    workflow: Any = None
    if args.resume:
        log_path = Path(args.resume)
        if log_path.is_dir():
            raise UsageError(f"--resume {_q(log_path)}: {_a_directory(log_path)}")
        if not log_path.is_file():
            raise UsageError(f"--resume {_q(log_path)}: no such log file")
        import eventlog

        status = eventlog.inspect(log_path)  # damaged, foreign or empty: one line, exit 2
        if status.state == "corrupt" or _unreadable(log_path, status):
            raise refuse_a_log_to_take_up(log_path, "--resume", status, "run --resume")
        if status.state in ("not-a-log", "newer-version"):
            raise UsageError(f"--resume {log_path}: {status.message}")
        if not status.has_records:
            raise UsageError(f"{log_path} holds no run to resume; run without --resume")
        if status.state == "torn":
            print(f"note: {status.message}", file=sys.stderr)
        if _log_in_use(log_path):
            raise UsageError(
                f"--resume {shlex.quote(str(log_path))}: another run is writing this log"
                " (it holds its lock): wait for it to end, or stop it with Ctrl-C first"
            )
        state = logged.state if logged is not None else None  # (None: the journal says why)
        if state is not None:  # said before anything starts (again once the log is open):
            what = f"--resume {_q(log_path)}"
            # (a copy of a log another process of this host writes: no lock of its own)
            instead = "start a new run on another --log"
            refuse_a_copy_being_written(log_path, what, instead, state.system.mode)
            refuse_a_live_writers_copy(state, what, instead)
            refuse_log_of_the_other_command(state, "run", what, log_path)  # a serve log
            if "comfyui" in (state.system.mode, config.mode):  # another cloud's, before the
                # banner (RunComfy vs the simulator once the log is open: a log that cannot
                # be written says first which of its machines may be billing)
                refuse_runcomfy_log_elsewhere(state, config.mode, what)
    else:
        log_path = Path(args.log) if args.log else _default_log()
        if args.log and (log_path.exists() or log_path.is_symlink()):
            _refuse_existing_log(log_path)
        if args.workflow:
            workflow = load_workflow(args.workflow)
        else:
            workflow = workflow_from_text(
                bundled_workflow(DEFAULT_WORKFLOW).decode(), name=DEFAULT_WORKFLOW
            )
    image: bytes | None = None
    prompt = args.prompt
    if prompt is not None and not prompt.strip():
        raise UsageError(
            "--prompt is empty: give the text for the prompt node (an unset shell variable?),"
            " or leave --prompt out"
        )
    if args.out is None:  # (a resume's: keep_run_options took the run's, if recorded)
        args.out = DEFAULT_OUT
    check_out_dir(Path(args.out))
    if not args.resume:
        if args.image:
            try:
                image = Path(args.image).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read image {args.image}: {exc.strerror or exc}") from None
            if not image:
                raise UsageError(f"image {args.image} is empty")
        elif not args.workflow:
            image = example_sketch_png()
        if prompt is None and not args.workflow:
            prompt = DEFAULT_PROMPT
        _preflight(args, config, workflow, image, prompt)  # one line per problem, exit 2
    if config.mode != "comfyui":
        require_priced_server_type(config)
    _check_budget(config)
    if args.resume:
        check_log_path(log_path, "--resume", again="run --resume")
    else:
        check_log_path(log_path, "--log")
    return log_path, workflow, image, prompt


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def _a_directory(path: Path) -> str:
    """What to say of a directory given for a log file (naming its newest log, if any)."""
    try:
        logs = sorted(path.glob("*.log"), key=lambda p: p.stat().st_mtime)
    except OSError:
        logs = []
    example = _q(logs[-1]) if logs else _q(path / "run.log")
    return f"a directory, not a log file: pass a log file's path (e.g. {example})"


def _refuse_existing_log(path: Path) -> None:
    """``--log PATH`` that exists: a new run never appends to an old one. An event log's
    run is finished with ``--resume``; any other file (or a directory) is said to be one."""
    import eventlog

    if path.is_dir():
        raise UsageError(f"--log {_q(path)}: {_a_directory(path)}")
    try:
        status = eventlog.inspect(path)
    except OSError as exc:
        raise UsageError(f"--log {_q(path)}: the file exists ({exc.strerror or exc})") from None
    if status.state in ("ok", "torn"):
        raise UsageError(
            f"--log {_q(path)}: the file exists and a new run never appends to an old one:"
            f" pass --resume {_q(path)} to finish that run, or another --log path"
        )
    raise UsageError(
        f"--log {_q(path)}: the file exists and is not a run's log ({status.message}): a run"
        " never writes over a file: pick another --log path"
    )


def check_log_path(path: Path, flag: str, *, again: str | None = None) -> None:
    """The event log at ``path`` can be written, said now (exit 2) rather than once the run
    (or the service) has started: its directory is made; a file there must be an event log
    this process can open for writing; a new one is created and removed again.

    ``again``: the command that takes an existing log up (``run --resume``, ``serve
    --log``). Such a log is the only record of its run's jobs and machines: what is wrong
    with it is said with how to fix it, and the machines it may have left billing, never
    "pick another path" (that is for a new log only)."""
    import eventlog

    if path.is_dir():
        raise UsageError(f"{flag} {_q(path)}: {_a_directory(path)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{flag} {_q(path)}: cannot create its directory ({exc.strerror or exc}):"
            " pick another path"
        ) from None
    exists = path.exists()
    if exists:
        try:
            status = eventlog.inspect(path)
        except OSError as exc:
            raise UsageError(
                f"{flag} {_q(path)}: cannot read it ({exc.strerror or exc}): pick another path"
            ) from None
        if again is not None and (status.state == "corrupt" or _unreadable(path, status)):
            raise refuse_a_log_to_take_up(path, flag, status, again)
        if again is not None and status.state == "newer-version":  # (it says: upgrade)
            raise UsageError(f"{flag} {_q(path)}: {status.message}")
        if status.state in ("corrupt", "not-a-log", "newer-version"):
            raise UsageError(f"{flag} {_q(path)}: {status.message}: pick another path")
        if _log_in_use(path):
            raise UsageError(
                f"{flag} {_q(path)}: another process is writing this log (it holds its lock):"
                " stop it first, or pick another path"
            )
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (0 if exists else os.O_CREAT | os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        why = (
            "no file can be created in its directory"
            if isinstance(exc, FileNotFoundError)
            else exc.strerror or str(exc)
        )
        if exists and again is not None:
            raise unwritable_log_error(path, flag, exc, again) from None
        raise UsageError(f"{flag} {_q(path)}: cannot write it ({why}): pick another path") from None
    os.close(fd)
    if not exists:
        path.unlink(missing_ok=True)


def _take_up(again: str, path: Path, then: str = "") -> str:
    """The command line that takes the log at ``path`` up (``again``: ``run --resume`` or
    ``serve --log``), ``then`` after it (serve's other options are not in its log)."""
    others = " (with the same other options)" if again.startswith("serve") else ""
    return f"`python -m conjure_actors {again} {_q(path)}`{then}{others}"


def _unreadable(path: Path, status: Any) -> bool:
    """Whether ``inspect`` found ``path`` ``not-a-log`` because it cannot be opened for
    reading (another user's, mostly), not because it is another kind of file."""
    if status.state != "not-a-log" or not path.is_file():
        return False
    try:
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
    except OSError:
        return True
    return False


def refuse_a_log_to_take_up(path: Path, flag: str, status: Any, again: str) -> UsageError:
    """A log ``again`` (``run --resume``, ``serve --log``) must take up is damaged
    (``corrupt``) or cannot be read: what to do (salvage, then take the copy up; get read
    access) and the machines its run may have left billing meanwhile."""
    if status.state == "corrupt":  # its message ends with the salvage command (to .salvaged)
        salvaged = Path(f"{path}.salvaged")
        if again.startswith("serve"):
            # serve keeps its assets' bytes beside its log (LOG.blobs/): served from
            # LOG.salvaged, every output and upload would be "no asset" (QA H6). The copy
            # takes the log's place instead; the damaged log is kept aside.
            aside = Path(f"{path}.corrupt")
            return UsageError(
                f"{flag} {_q(path)}: {status.message}, then put the copy in its place"
                f" (`mv {_q(path)} {_q(aside)} && mv {_q(salvaged)} {_q(path)}`: its assets'"
                f" bytes stay in {_q(Path(f'{path}.blobs'))}, which serve reads beside its"
                f" log) and {_take_up(again, path, ' again')}"
                + machines_left_billing(path, damaged=True)
            )
        return UsageError(
            f"{flag} {_q(path)}: {status.message}, then take the copy up with"
            f" {_take_up(again, salvaged)}; {_q(path)} stays as it is"
            + machines_left_billing(path, damaged=True)
        )
    return UsageError(
        f"{flag} {_q(path)}: {status.message}, then {_take_up(again, path, ' again')};"
        " meanwhile the machines of its run may be billing:"
        f" `python -m conjure_actors status {_q(path)}`, run as its owner, lists them"
    )


def unwritable_log_error(path: Path, flag: str, exc: OSError, again: str) -> UsageError:
    """A log ``again`` must take up can be read but not written (another user's, read-only,
    immutable): why, how to fix it, and the machines its run may have left billing."""
    import errno

    q = _q(path)
    if exc.errno == errno.EACCES:
        why = f"{exc.strerror}: it is read-only, or another user's"
        fix = f"give this user write access to it (chmod u+w {q}, or chown) or run as its owner"
    elif exc.errno == errno.EPERM:
        why = f"{exc.strerror}: it is immutable or append-only (lsattr {q}), or another user's"
        fix = f"lift that (chattr -i -a {q}, as root) or run as its owner"
    elif exc.errno == errno.EROFS:
        why = str(exc.strerror)
        fix = f"remount it read-write, or copy {q} with {q}.snapshots to a writable disk"
    else:
        why, fix = exc.strerror or str(exc), "fix that"
    return UsageError(
        f"{flag} {q}: cannot write it ({why}): {fix}, then {_take_up(again, path, ' again')}"
        + machines_left_billing(path)
    )


def machines_left_billing(path: Path, *, damaged: bool = False) -> str:
    """``"; ..."``: the RunComfy machines the log at ``path`` says may still be running (as
    ``status LOG`` shows them: their status; a resume's own list, ``pending_intents``) and
    its launches of unknown outcome, with how to stop them; ``""`` when there are none, or
    its run was on the simulated cloud (that ended with its process). ``damaged``: the log
    is read up to its damage (what its intact records before it say)."""
    import eventlog
    from conjure_actors.domain.decide import pending_intents
    from conjure_actors.domain.describe import machine_status
    from conjure_actors.domain.state import apply, initial_state

    q = _q(path)
    state = initial_state()
    try:
        for record in eventlog.read(path, ev.Event, upcasters=ev.UPCASTERS):
            apply(state, record.event)
    except eventlog.CorruptLogError:
        pass  # (the records before the damage: all that can be read in order)
    except (OSError, eventlog.EventLogError):
        return (
            "; meanwhile the machines of its run may be billing:"
            f" `python -m conjure_actors status {q}` lists them"
        )
    if state.system.mode == "simulated":
        return ""
    pending = pending_intents(state)
    said = []
    if pending.machines:
        shown = [f"{sid} ({machine_status(state.machines[sid])})" for sid in pending.machines[:5]]
        more = len(pending.machines) - len(shown)
        listed = ", ".join(shown) + (
            f" and {more} more (`python -m conjure_actors status {q}` lists them)" if more else ""
        )
        said.append(
            f"meanwhile the machines of its run may be billing: {listed}"
            + (" (as its records before the damage tell)" if damaged else "")
            + ": stop each with `python -m conjure_actors machine down --server-id ID`,"
            f" or take the {'copy' if damaged else 'log'} up (it adopts them)"
        )
    if pending.launch_requests:
        n = len(pending.launch_requests)
        launches = "1 launch of its run has" if n == 1 else f"{n} launches of its run have"
        said.append(
            f"{launches} no outcome logged: a machine started so is not named in the log"
            " (`python -m conjure_actors status` with the RunComfy credentials lists the"
            " account's machines)"
        )
    return "".join(f"; {part}" for part in said)


def _log_in_use(path: Path) -> bool:
    """Whether a live writer holds ``path``'s lock: asked before anything starts."""
    import eventlog

    return eventlog.being_written(path)


def _preflight(
    args: argparse.Namespace, config: Config, workflow: Any, image: bytes | None, prompt: Any
) -> None:
    """Everything the target can refuse, checked before a machine is launched (the same
    checks as ``validate``): the graph against the target's node catalogue, --set values,
    seeds, the image."""
    from conjure_actors.commands.validate import check_before_launch, run_target, target_note

    target = run_target(config)
    note = target_note(workflow, target)  # what cannot be checked: said even if refused
    if note is not None:
        print(f"note: {note}", file=sys.stderr)
    check_before_launch(
        workflow,
        target,
        image=image,
        image_name=args.image or "(the example sketch)",
        image_binding=Path(args.image).name if args.image else None,
        prompt=prompt,
        sets=args.sets,
        seed=args.seed,
        jobs=args.jobs,
    )


def check_out_dir(out_dir: Path) -> None:
    """--out must be a directory this process can write: made now (its new folders' names
    durable), not found wrong once a job has run on a paid machine."""

    def refused(why: str) -> UsageError:
        return UsageError(f"--out {out_dir}: {why}: pick another directory")

    try:
        try:
            mode = out_dir.stat().st_mode
        except FileNotFoundError:
            if out_dir.is_symlink():
                raise refused("a symbolic link to nothing") from None
            make_dirs(out_dir)
        else:
            if not stat.S_ISDIR(mode):
                raise refused("a file, not a directory")
    except OSError as exc:
        raise refused(f"cannot create it ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise refused("not writable")


async def _main(
    args: argparse.Namespace,
    config: Config,
    out: Out,
    prepared: tuple[Path, Any, bytes | None, str | None],
    logged: Any = None,
) -> int:
    log_path, workflow, image, prompt = prepared
    # Held from the very start (before the journal opens) to exit, past the run's last stop
    # of machines: a signal during start-up (replay, reconcile, resumed jobs launching)
    # waits for start-up to end and then stops the run as one during it would; never the
    # default action that kills the process with machines left billing.
    stopping = _Stopping(config.mode)
    out.stdout_closed = stopping.stdout_closed
    error: Exception | None = None
    code = 1
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        stopping.note_signals()  # (trio's receiver puts its own handlers back as it closes)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, signals, stopping, log_path)
            try:
                resumed = (
                    (log_path, f"--resume {_q(log_path)}", getattr(logged, "state", None))
                    if workflow is None
                    else None
                )
                if workflow is not None:  # a fresh run: nothing can bill before its start-up
                    stopping.nothing_to_stop = lambda: True
                opened = _cloud(config, resumed, checks=stopping.pre_start)
                async with opened as (config, mode, http, ws_connect, banner):
                    out.say(banner, "run.banner", mode=mode)
                    code = await _run(
                        args,
                        config,
                        mode,
                        out,
                        log_path,
                        workflow,
                        image,
                        prompt,
                        http,
                        ws_connect,
                        stopping,
                        logged,
                    )
            except Exception as exc:  # raised as it is, not wrapped in this nursery's group
                error = exc
            finally:
                nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return code


class _Stopping:
    """What the signal loop and the run share: the first stop signal, the scope of the
    run's work (submitting, waiting for the jobs) it cancels, the conjure once it is up."""

    def __init__(self, mode: str = "") -> None:
        self.mode = mode  # "simulated": the cloud ends with this process (nothing left)
        self.signal: signal.Signals | None = None
        self.work = trio.CancelScope()
        self.conjure: Any = None
        # Start-up's scope, cancelled by a signal while start-up holds nothing that could
        # bill (``nothing_to_stop``: no machine, no launch in flight): it is not waited for.
        self.start_up = trio.CancelScope()
        # A fresh run's checks before start-up (its workflow version's listing): nothing is
        # launched yet, so a signal cancels them too.
        self.pre_start = trio.CancelScope()
        self.nothing_to_stop: Callable[[], bool] = lambda: False
        self.ended = False  # the work is over (the run's stop has its reason)
        # A stop signal delivered to the process, before the signal loop's task has run
        # (:meth:`note_signals`): start-up's synchronous stretches (the log's replay, the
        # reconcile) must not relaunch resumed jobs in that gap.
        self.delivered = False

    def note_signals(self) -> None:
        """Note each stop signal as it is delivered (the Python-level handler, run at once
        in the main thread), then hand it on to trio's receiver as before: the signal loop
        only sees it at start-up's next checkpoint, and a resumed run SIGTERMed at its
        banner launched its jobs' machines in between under load (CI)."""
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if not callable(handler):
                continue

            def noted(sig: int, frame: Any, _handler: Callable[..., Any] = handler) -> None:
                self.delivered = True
                _handler(sig, frame)

            signal.signal(signum, noted)

    def stop_asked(self) -> bool:
        """Whether a stop signal came, seen by the signal loop or only delivered."""
        return self.signal is not None or self.delivered

    def stdout_closed(self) -> None:
        """stdout's reader left (``run --json | head``; SIGPIPE itself is ignored by
        Python): stop as on a signal, in order (machines stopped, unfinished jobs left for
        --resume), and exit 141 (128 + SIGPIPE), as a process a pipe closed on does. The
        records not written are in the log. Once the work has ended there is nothing to
        stop: the rest of the output is dropped, without a word (the exit is 141 all the
        same: ``cli.main``'s last flush finds the pipe closed)."""
        if self.signal is not None or self.ended:
            return
        self.signal = signal.SIGPIPE
        _tell(
            "stdout closed (broken pipe): stopping launches, leaving unfinished jobs for"
            " --resume, stopping machines"
        )
        self.work.cancel()


async def _stop_on_signals(
    signals: AsyncIterator[int],
    stopping: _Stopping,
    log_path: Path,
    *,
    quit_now: Callable[[int], object] = os._exit,
    detach: Callable[[], None] | None = None,
) -> None:
    """The first signal stops the run: no more launches (its work is cancelled, at once or
    once start-up is done), unfinished jobs left for --resume, machines stopped (SIGHUP:
    detached from the terminal first). A later SIGINT quits at once (``quit_now``, exit
    130), naming what may still run; later SIGTERM/SIGHUP change nothing."""
    for_detach = detach if detach is not None else _detach_from_terminal
    async for signum in signals:
        received = signal.Signals(signum)
        if stopping.signal is None:
            stopping.signal = received
            if received == signal.SIGHUP:
                for_detach()
            if stopping.conjure is None and stopping.nothing_to_stop():
                # Nothing launched or adopted yet: start-up (its retries against an
                # unreachable RunComfy, say) is not worth waiting for.
                _tell(f"{_REASONS[received]}: stopping now (nothing was launched yet)")
                stopping.pre_start.cancel()
                stopping.start_up.cancel()
                stopping.work.cancel()
                continue
            when = "stopping once start-up is done: then " if stopping.conjure is None else ""
            waits = launch_wait_note(stopping.conjure) if stopping.conjure is not None else ""
            _tell(
                f"{_REASONS[received]}: {when}stopping launches, leaving unfinished jobs for"
                " --resume, stopping machines"
                + (f"; {waits}" if waits else " (Ctrl-C again to quit at once)")
            )
            stopping.work.cancel()
        elif received == signal.SIGINT:
            if stopping.mode == "simulated":
                _tell(QUIT_SIMULATED)
            elif stopping.conjure is None:
                _tell(_quit_during_start_up(log_path))
            else:
                _tell(_quit_now(stopping.conjure, log_path))
            quit_now(EXIT_INTERRUPTED)
            return


QUIT_SIMULATED: Final = (
    "quitting now; the embedded simulated cloud ends with this process: no machine is left"
    " running, nothing bills"
)
"""What a second Ctrl-C says on the simulated cloud (``--resume`` stops nothing there)."""


def resume_waits_for(launches: int, mode: str) -> str:
    """What a resumed run waits for when its log ended with ``launches`` in flight: RunComfy
    to list their machines (adopted, or closed as failed after the grace); on the simulated
    cloud, nothing can appear (that run's cloud ended with it): they are closed at once
    (``open_conjure(fresh_cloud=True)``)."""
    from conjure_actors.domain.machines_policy import NOT_VISIBLE_GRACE

    what = f"{launches} launch{'es' if launches > 1 else ''} in flight when the log ended"
    if mode == "simulated":
        return (
            f"resuming: {what} went to that run's embedded simulated cloud, which ended with"
            " it (nothing of it bills): they are closed as failed at once, and the jobs"
            " waiting on them launch again"
        )
    return (
        f"resuming: {what}: waiting up to {NOT_VISIBLE_GRACE:g} s for RunComfy to list their"
        " machines (each one listed is adopted; one not listed is closed as failed)"
    )


def launch_wait_note(conjure: Any) -> str:
    """What the stop of a run waits for besides its machines: launches in flight whose
    machine RunComfy has not listed yet (a resumed log's, or a POST of unknown outcome),
    each until its landing grace ends (the stop adopts, then stops, one listed meanwhile):
    up to how long, and what a second Ctrl-C leaves. "" when none is waited for."""
    pool = getattr(conjure, "pool", None)
    landing = getattr(pool, "landing", None)
    if not landing:
        return ""
    now = trio.current_time()
    left = [until - now for key, until in landing.items() if key in conjure.state.launch_requests]
    if not left:
        return ""
    n = len(left)
    return (
        f"waiting up to {max(1, math.ceil(max(left)))} s more for RunComfy to list the"
        f" machine of {n} launch{'es' if n > 1 else ''} in flight (Ctrl-C again: quit now;"
        " `status` then lists it)"
    )


def unknown_machine_notes(conjure: Any) -> list[tuple[str, str]]:
    """(server id, line) of each server the recovery's listing showed up on the account
    that the log does not know: another client's, or one a run launched after its log's
    last record (a log cut short or salvaged loses it), billing until its lease ends.
    Named with the command that stops it, never stopped by a guess
    (``machines_policy.unknown_servers`` says why)."""
    from conjure_actors.domain.machines_policy import unknown_server_line

    now = conjure.ctx.now()
    return [(u.server_id, unknown_server_line(u, now=now)) for u in conjure.pool.unknown_listed]


def _quit_during_start_up(log_path: Path) -> str:
    """What a second Ctrl-C during start-up says: the machines it may have launched or
    adopted are not known here; the log has them, and ``--resume`` stops them."""
    return (
        "quitting now, during start-up; machines adopted or launched so far may still be "
        f"running (launches in flight are in the log {shlex.quote(str(log_path))}): "
        f"python -m conjure_actors run --resume {shlex.quote(str(log_path))} stops them"
    )


async def _dev_machine(config: Config) -> Any:
    """The dev machine of ``machine up`` if it is alive (``run`` attaches to it)."""
    import httpx

    from conjure_actors.clients.runcomfy import RunComfyClient
    from conjure_actors.clock import SystemWallClock
    from conjure_actors.commands.machine import attachable_dev_machine

    async with httpx.AsyncClient(timeout=30.0) as http:
        rc = RunComfyClient(
            config.runcomfy.base_url,
            config.runcomfy.user_id,
            config.runcomfy.api_token.reveal(),
            http=http,
            wall=SystemWallClock().now,
        )
        return await attachable_dev_machine(config, rc)


VERSION_CHECK_SECONDS = 15.0
"""The most the check of a new run's workflow version waits for RunComfy's listing (two
attempts, no long rate-limit wait): a listing that fails or is late checks nothing, and
the run's own start-up says what is wrong with RunComfy, in its words."""


async def _check_workflow_version(config: Config) -> None:
    """A new run's workflow version must be one of the account's: said now, as ``machine
    up`` says it (a UsageError, exit 2, naming the versions the account has), rather than
    as a refused launch that fails the jobs (exit 1, as if RunComfy had failed)."""
    import httpx

    from conjure_actors.clients.retry import RetryPolicy
    from conjure_actors.clients.runcomfy import RunComfyClient, RunComfyPolicy
    from conjure_actors.clock import SystemWallClock

    retry = RetryPolicy(attempts=2, request_timeout=VERSION_CHECK_SECONDS, max_retry_after=5.0)
    async with httpx.AsyncClient(timeout=VERSION_CHECK_SECONDS) as http:
        rc = RunComfyClient(
            config.runcomfy.base_url,
            config.runcomfy.user_id,
            config.runcomfy.api_token.reveal(),
            http=http,
            policy=RunComfyPolicy(retry=retry),
            wall=SystemWallClock().now,  # the first answer tells of a host clock off
        )
        await refuse_unknown_version(rc, config.runcomfy.workflow_version)


async def refuse_unknown_version(rc: Any, version: str | None) -> None:
    """UsageError if the account's workflows (``GET /workflows``) do not hold ``version``. A
    listing that fails, or takes more than :data:`VERSION_CHECK_SECONDS`, says nothing (the
    launch is the judge then, as before): it never stops a run that could go."""
    from conjure_actors.clients.errors import ClientError

    if not version:
        return
    workflows = None
    with trio.move_on_after(VERSION_CHECK_SECONDS):
        try:
            workflows = await rc.list_workflows()
        except ClientError as exc:
            log.info("workflow version %s not checked: %s", version, exc)
            return
    if workflows is None:
        log.info("workflow version %s not checked: RunComfy's listing was late", version)
        return
    if any(w.version_id == version for w in workflows):
        return
    from conjure_actors.clients.runcomfy import versions_said

    raise UsageError(
        f"RunComfy does not know workflow version {version!r}: pass one of the account's"
        f" with --workflow-version: {versions_said(workflows)}"
    )


def _dev_workflow_version(config: Config) -> str | None:
    """The workflow version of the dev machine ``machine up`` recorded, if any."""
    from conjure_actors.commands.machine import read_dev_machine, state_path

    recorded = read_dev_machine(state_path(config))
    return recorded.workflow_version if recorded is not None else None


def _check_budget(config: Config) -> None:
    """A budget below the cost of one lease can launch nothing: say so before starting."""
    if config.budget.usd is None or config.mode == "comfyui":
        return
    from conjure_actors.domain.cost_policy import budget_micros, lease_cost_micros
    from conjure_actors.domain.prices import default_price_table, format_usd

    table = default_price_table(config.runcomfy.plan)
    one = lease_cost_micros(table.rate(config.runcomfy.server_type), config.pool.lease_seconds)
    if (budget_micros(config.budget.usd) or 0) < one:  # bad input: exit 2, as README says
        raise UsageError(
            f"budget ${config.budget.usd:g} is below one machine lease "
            f"({format_usd(one)} for {config.pool.lease_seconds:g} s of "
            f"{config.runcomfy.server_type}): raise --budget"
        )


@asynccontextmanager
async def _cloud(
    config: Config,
    log: tuple[Path, str] | tuple[Path, str, Any] | None = None,
    *,
    checks: trio.CancelScope | None = None,
) -> AsyncIterator[tuple[Config, str, Any, Any, str]]:
    """The cloud to run on: the user's ComfyUI, RunComfy, or the embedded simulator.

    ``log``: the log this start resumes and how the user named it (``--resume LOG``), and
    maybe its state as the caller read it already (None: unreadable; opening the journal
    says why): on RunComfy its workflow version is the run's unless one is given, and one
    given that is not the log's is refused (see ``version_for_log``), before anything
    starts. A new run's version the account does not have is refused too
    (``refuse_unknown_version``), a check ``checks`` cancels (a signal: nothing is launched
    yet, and a RunComfy slow to answer is not waited for)."""
    import attrs

    mode = config.mode
    if mode == "comfyui":
        yield (
            config,
            mode,
            None,
            None,
            "conjure_actors: running on your ComfyUI (no machines launched, no cost)",
        )
        return
    if mode == "runcomfy":
        host = config.runcomfy.base_url.split("://", 1)[-1].split("/", 1)[0]
        banner = f"conjure_actors: running on RunComfy ({host})"
        state: Any = None
        if log is not None:
            state = (
                log[2] if len(log) == 3 else await trio.to_thread.run_sync(read_log_state, log[0])
            )
        given = config.runcomfy.workflow_version
        version: str | None = given
        whose = ""
        if log is not None and state is not None:
            refuse_runcomfy_log_elsewhere(state, mode, log[1])
            version = version_for_log(state, given, log[1])
            whose = "the log's"
        if not version:
            version, whose = _dev_workflow_version(config), "the dev machine's"
        if not version and state is not None:  # nothing left to resume: as it last ran
            version, whose = newest_log_version(state), "the log's"
        if not version:
            raise UsageError(
                "RunComfy needs a workflow version: pass --workflow-version, "
                "set runcomfy.workflow_version in the config, or `machine up` one"
            )
        if version != given:
            config = attrs.evolve(
                config, runcomfy=attrs.evolve(config.runcomfy, workflow_version=version)
            )
            banner += f", workflow version {version} ({whose})"
        if log is None:  # a resume may have machines to stop: never refused for this
            with checks if checks is not None else trio.CancelScope():
                await _check_workflow_version(config)
        yield config, mode, None, None, banner
        return
    from conjure_actors.clock import SystemWallClock
    from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud
    from conjure_actors.sim.runcomfy import RunComfyTimings

    timings = CloudTimings(runcomfy=RunComfyTimings(ready_delay=1.0, deleting_delay=0.5))
    async with open_simulated_cloud(
        seed=random.randrange(2**32), wall=SystemWallClock().now, timings=timings
    ) as cloud:
        sim_config = attrs.evolve(
            config,
            runcomfy=attrs.evolve(
                config.runcomfy,
                user_id=cloud.user_id,
                api_token=type(config.runcomfy.api_token)(cloud.token),
                base_url=cloud.base_url,
                workflow_version=config.runcomfy.workflow_version or "wv-conjure-flux-mesh-1",
            ),
            pool=attrs.evolve(config.pool, poll_interval=min(config.pool.poll_interval, 0.2)),
        )
        yield (
            sim_config,
            "simulated",
            cloud.http_transport(),
            cloud.ws_connect,
            (
                "conjure_actors: running on the embedded simulated cloud, nodes "
                f"{cloud.speedup:g}x faster than a real machine (no RunComfy credentials"
                " found; set RUNCOMFY_USER_ID and RUNCOMFY_API_TOKEN to use RunComfy)"
            ),
        )


def read_log_state(log_path: Path) -> Any:
    """The state of the log at ``log_path`` (from its newest snapshot), None when there is
    no log with records there or it cannot be read (opening the journal then says why)."""
    logged = read_log(log_path)
    return logged.state if logged is not None else None


def read_log(log_path: Path, note: Callable[[str], object] | None = None) -> Any:
    """The log at ``log_path`` folded (from its newest snapshot): an ``eventlog.ReplayResult``
    (its ``state`` and ``last_seq``), None when there is no log with records there or it
    cannot be read (opening the journal then says why); a log with an event this version
    does not know is refused (UsageError: a newer conjure_actors wrote it). ``run --resume``
    reads it once: for the options it keeps, its checks, and the journal's start.

    Snapshots are only read back as the state type that wrote them (their file names carry
    its fingerprint): those of another version of the program (a state type without a field
    this one folds, such as a machine's ``launch_duration``) are not used, and the log is
    folded from the newest one of this version, or from its start. ``note`` is told so, in
    one line, when that fold is long (:data:`SLOW_FOLD` records or more): the journal then
    writes a snapshot at once, so it happens once."""
    import eventlog
    from conjure_actors.domain.events import UPCASTERS, Event
    from conjure_actors.domain.state import State, apply, initial_state

    try:
        status = eventlog.inspect(log_path)
        if not status.has_records:
            return None
        snapshots = eventlog.snapshots_dir(log_path)
        if note is not None and os.path.isdir(snapshots):
            listed = eventlog.list_snapshots(snapshots, State)
            ours = [seq for seq in listed if seq <= status.last_seq]
            behind = status.last_seq - (ours[-1] if ours else 0)
            every = [name for name in os.listdir(snapshots) if name.endswith(".snapshot")]
            others = len(every) - len(listed)  # of another version (past the log's end: ours)
            if behind >= SLOW_FOLD and others:
                where = f"from seq {ours[-1]}" if ours else "from its start"
                note(
                    f"note: the snapshots of {_q(log_path)} are of another version of"
                    f" conjure_actors: its {behind:,} records are folded {where} (the resume"
                    " writes a snapshot of this version once it has opened the log)"
                )
        return eventlog.replay(
            log_path,
            Event,
            apply,
            initial_state(),
            snapshot_dir=snapshots if os.path.isdir(snapshots) else None,
            state_type=State,
            upcasters=UPCASTERS,
        )
    except eventlog.UnknownEventError as exc:  # a newer version's log: said before it starts
        from conjure_actors.commands.replay_impl import newer_log_error

        raise newer_log_error(log_path, exc) from exc
    except (OSError, eventlog.EventLogError):
        return None


def logged_out_dir(log_path: Path) -> str | None:
    """The folder the run recorded in ``log_path`` wrote its outputs to: the ``out_dir`` of
    its last start; in a log written before starts recorded it, the folder of its last
    saved output (``OUT/<job_id>/...``). None when the log says neither (or cannot be read:
    opening the journal then says why). A walk of the whole log: :func:`keep_run_options`
    has the recorded folder from the state, and walks only a log that recorded none."""
    import eventlog

    started: Any = None
    derived: str | None = None
    try:
        for record in eventlog.read(log_path, ev.Event, upcasters=ev.UPCASTERS):
            match record.event:
                case ev.SystemStarted() as event:
                    started = event
                case ev.OutputSaved(job_id=job_id, path=path):
                    derived = out_dir_of(path, job_id) or derived
    except (OSError, eventlog.EventLogError):
        return None
    recorded = started.out_dir if started is not None else None
    return recorded or derived


_KEPT_ON_RESUME: Final = ("server_type", "max_machines", "idle_timeout")
"""The options a resume keeps of its run unless given again (each a SystemStarted field of
the same name, kept in ``state.system``)."""


def keep_run_options(
    args: argparse.Namespace, logged: Any = None, note: Callable[[str], object] | None = None
) -> Any:
    """``run --resume LOG``: the run's out folder, machine type, machine cap and idle
    timeout, as its log recorded them, for each not given on this command line (a resume
    of a run capped at 2 machines of a type must not launch 5 of the default one).

    They are its last ``SystemStarted``'s, which the state keeps (``state.system``): read
    from the log's newest snapshot and the records after it (:func:`read_log`; ``logged``
    if read already), not from a walk of the whole log (1 s more on a 1M-event one). A
    start that recorded no out folder (a log written before they did) has the folder of the
    log's last saved output, which only a walk of the log tells. Returns what
    :func:`read_log` read (None: the log cannot be read; opening the journal says why);
    ``note``: see :func:`read_log`."""
    log_path = Path(args.resume)
    if logged is None:
        logged = read_log(log_path, note)
    if logged is None:
        return None
    system = logged.state.system
    if args.out is None:
        out = system.out_dir
        if not out and any(job.outputs for job in logged.state.jobs.values()):
            out = logged_out_dir(log_path)
        if out:
            args.out = out
    for option in _KEPT_ON_RESUME:
        value = getattr(system, option)
        if getattr(args, option) is None and value is not None:
            setattr(args, option, value)
    return logged


def out_dir_of(path: str, job_id: str) -> str | None:
    """The ``OUT`` of an output saved at ``OUT/<job_id>/...`` (None: not such a path)."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == job_id:
            return str(Path(*parts[:i]))
    return None


def outputs_folder(state: Any, job_ids: list[str], out_dir: Path) -> str:
    """The folder the summary says its outputs are under: the one(s) they really are in
    (a resumed run's earlier outputs are where that run wrote them), ``out_dir`` when there
    is none or they are all there."""
    jobs = [state.jobs[j] for j in job_ids if j in state.jobs] if job_ids else state.jobs.values()
    folders = {os.path.abspath(out_dir): str(out_dir)}
    used: dict[str, str] = {}
    for job in jobs:
        for output in job.outputs:
            folder = out_dir_of(output.path, job.job_id)
            if folder is not None:
                key = os.path.abspath(folder)
                used.setdefault(key, folders.setdefault(key, folder))
    return " and ".join(used.values()) or str(out_dir)


def version_for_log(state: Any, given: str, what: str) -> str | None:
    """The RunComfy workflow version to resume ``state``'s log with (None: the log names
    none). What the log resumes (its launches in flight, its machines not gone, its
    unfinished jobs) was made for the versions it names: a launch in flight is matched
    against the account's servers by its version, and a resumed job's prompts are checked
    against its version's node catalogue, which the run records from its first machine
    under the version it was given (a catalogue of one version kept as another's). So
    ``given`` (--workflow-version or the config's) must be one of those, and none given
    takes the log's (None when nothing is left to resume: see ``newest_log_version``)."""
    from conjure_actors.domain.state import MACHINE_GONE, RESUMABLE_STATUSES

    pending = sorted(
        {r.workflow_version for r in state.launch_requests.values()}
        | {
            m.workflow_version
            for m in state.machines.values()
            if m.kind == "runcomfy" and m.workflow_version and m.status not in MACHINE_GONE
        }
        | {
            j.workflow_version
            for j in state.jobs.values()
            if j.workflow_version and j.status in RESUMABLE_STATUSES
        }
    )
    if given:
        if pending and given not in pending:
            named = " or ".join(pending)
            raise UsageError(
                f"{what}: that run's launches, machines and unfinished jobs are of workflow"
                f" version {named}, not {given}: pass --workflow-version {pending[-1]}"
                f" (or none) to resume it; run {given} once it has ended"
            )
        return given
    if len(pending) > 1:
        raise UsageError(
            f"{what}: that run has work of workflow versions {', '.join(pending)}: pass"
            " --workflow-version with one of them (its jobs keep their own)"
        )
    return pending[0] if pending else None


def newest_log_version(state: Any) -> str | None:
    """The workflow version of the log's newest job (else machine), if any."""
    logged = [m.workflow_version for m in state.machines.values() if m.workflow_version]
    logged += [j.workflow_version for j in state.jobs.values() if j.workflow_version]
    return logged[-1] if logged else None


NO_COMFYUI_URL: Final = (
    "without a ComfyUI URL (no --comfyui-url, comfyui_url in the config or CONJURE_COMFYUI_URL)"
)


def refuse_runcomfy_log_elsewhere(state: Any, mode: str, what: str) -> None:
    """A log is resumed where its run ran (``mode``: the cloud this start runs on; the log's
    last start recorded its own), and refused in one line, exit 2, anywhere else:

    - a RunComfy run's machines and launches are there, maybe billing (the simulated cloud
      would close them as failed, a ComfyUI would not stop them);
    - a run on the user's ComfyUI (``--comfyui-url``) resumed without it would run its jobs
      on the embedded simulated cloud (placeholder images reported as its results) or on
      RunComfy (machines the user never asked for);
    - a simulated run's launches in flight, resumed on RunComfy, would be matched against
      the account's machines by their marker alone, and its jobs, resumed on a ComfyUI, were
      made for the simulator.
    A log no start has recorded a mode in yet (none) may be resumed anywhere."""
    logged = state.system.mode
    if logged is None or logged == mode:
        return
    if logged == "runcomfy":
        versions = sorted(
            {r.workflow_version for r in state.launch_requests.values()}
            | {m.workflow_version for m in state.machines.values() if m.workflow_version}
        )
        version = f" and --workflow-version {versions[-1]}" if len(versions) == 1 else ""
        where = f" {NO_COMFYUI_URL}," if mode == "comfyui" else ""
        raise UsageError(
            f"{what}: that run was on RunComfy: resume it{where} with RUNCOMFY_USER_ID and"
            f" RUNCOMFY_API_TOKEN set (as it had them){version} to run its jobs there and"
            " stop its machines"
        )
    if logged == "comfyui":
        instead = "RunComfy" if mode == "runcomfy" else "the embedded simulated cloud"
        raise UsageError(
            f"{what}: that run used your ComfyUI (--comfyui-url): pass --comfyui-url URL to"
            f" resume it there (without it, its jobs would run on {instead})"
        )
    unset = (
        "without RUNCOMFY_USER_ID and RUNCOMFY_API_TOKEN set"
        if mode == "runcomfy"
        else NO_COMFYUI_URL
    )
    raise UsageError(
        f"{what}: that run was on the embedded simulated cloud: resume it as it ran, {unset}"
    )


def serve_data_dir(log_path: Path) -> Path:
    """Where ``serve --log LOG`` keeps its assets' bytes (``LOG.blobs/``): made when it
    starts, so it tells a serve log from a run's even before a job or an asset is in it."""
    return Path(str(log_path) + ".blobs")


def refuse_log_of_the_other_command(state: Any, command: str, what: str, log_path: Path) -> None:
    """``run --resume`` takes a ``run`` log, ``serve --log`` a ``serve`` log (``command``).
    What tells them apart: every job ``serve`` takes through its API is journaled with its
    ``ApiJobAccepted`` (``state.service.api_jobs``), as are its assets and idempotency keys;
    a ``run`` journals none of these. So a log with a job that is no API job is a ``run``'s
    (``serve`` would run it unseen: GET /api/v2/jobs lists none), and one with service
    records is a ``serve``'s (``run`` would run its API jobs, which no client could poll),
    and so is one beside its ``LOG.blobs/`` (:func:`serve_data_dir`): ``run`` would append a
    run's start to it, whose options a later ``serve`` start would keep. A log with none of
    these (no job yet) is either's."""
    service = state.service
    api = service.api_jobs
    if command == "serve":
        cli_jobs = [
            j for j in state.jobs.values() if j.job_id not in api and j.parent_id not in api
        ]
        from conjure_actors.domain.state import RESUMABLE_STATUSES

        unfinished = [j for j in cli_jobs if j.status in RESUMABLE_STATUSES]
        if unfinished:
            raise UsageError(
                f"{what}: that is the log of a `run` ({len(cli_jobs)} job(s) it submitted, not"
                " through the API): serve would run them unseen; finish it with python -m"
                f" conjure_actors run --resume {_q(log_path)}, and give serve another --log"
            )
        if cli_jobs:
            raise UsageError(
                f"{what}: that is the log of a `run` ({len(cli_jobs)} job(s) it submitted, not"
                " through the API, all ended): give serve a log of its own (another --log)"
            )
    elif api or service.assets or service.idempotency or serve_data_dir(log_path).is_dir():
        why = (
            " (its jobs and assets came through the API)"
            if api or service.assets or service.idempotency
            else ""
        )
        raise UsageError(
            f"{what}: that is the log of `serve`{why}:"
            f" start serve on it again (python -m conjure_actors serve --log {_q(log_path)})"
            " instead of run --resume"
        )


def _quit_now(conjure: Any, log_path: Path) -> str:
    """What a second Ctrl-C says: the machines (and launches in flight) that may still
    bill, and the command that stops them."""
    left = conjure.running_machines()
    launching = len(conjure.state.launch_requests)
    if not left and not launching:
        return "quitting now; no machine is running"
    named = ", ".join(left)
    if launching:
        more = f"{launching} launch{'es' if launching > 1 else ''} in flight"
        named = f"{named} and {more}" if named else more
    return (
        f"quitting now; machines that may still be running: {named}; "
        f"python -m conjure_actors run --resume {shlex.quote(str(log_path))} stops them"
    )


@asynccontextmanager
async def _open_run_journal(
    log_path: Path, clock: Callable[[], float], *, fresh: bool, logged: Any = None
) -> AsyncIterator[Any]:
    """The run's journal over ``log_path`` (``fresh``: a new run's, which ``_prepare`` found
    free). Another run that took the path in the meantime (two started at once on one new
    ``--log``) is the same one line, exit 2, as one found by ``_prepare``. A new run that
    ends before it recorded anything that matters (no job, no machine, no launch, no cost:
    its start-up checks refused, e.g. a ComfyUI that does not answer, credentials RunComfy
    rejects; or a signal during start-up) leaves no log behind: the same command can be run
    again (the log held only its actors' start and stop, nothing to resume).

    ``logged``: a resume's log as :func:`read_log` read it (its state at its last seq): the
    journal starts from it and folds only the records after it, not the log a second time.
    """
    import eventlog
    from conjure_actors.commands.live_copy import holding_the_logs_identity
    from conjure_actors.domain.events import UPCASTERS, Event
    from conjure_actors.domain.state import apply, initial_state

    flag = "--log" if fresh else "--resume"
    journal: Any = None
    taken = False
    try:
        async with eventlog.open_journal(
            log_path,
            Event,
            apply=apply,
            initial=logged.state if logged is not None else initial_state(),
            initial_seq=logged.last_seq if logged is not None else 0,
            clock=clock,
            snapshot_every=SNAPSHOT_EVERY,
            upcasters=UPCASTERS,
        ) as journal:
            taken = fresh and journal.last_seq > 0  # by another run, since _prepare
            if not taken:
                try:
                    # (the lock of the log's identity, which its copies share: held as the
                    # journal's, from its first record; a copy's writer found now refused)
                    with holding_the_logs_identity(
                        journal,
                        log_path,
                        f"{flag} {_q(log_path)}",
                        "start a new run on another --log",
                    ):
                        yield journal
                finally:
                    # However the run ends (an error, a signal during start-up), and while
                    # the journal still holds the log's lock (no other process can have
                    # opened it to write: nothing of another's is removed). The journal's
                    # last records go to the unlinked file.
                    if fresh and _nothing_recorded(journal.state):
                        _remove_log(log_path)
    except eventlog.LogLockedError:
        if journal is not None:
            raise
        # (The words of check_log_path and of _prepare, which find it a moment later.)
        what = (
            "another process is writing this log (it holds its lock): stop it first, or pick"
            " another path"
            if fresh
            else "another run is writing this log (it holds its lock): wait for it to end,"
            " or stop it with Ctrl-C first"
        )
        raise UsageError(f"{flag} {_q(log_path)}: {what}") from None
    except eventlog.LogShorterError as exc:
        # The log lost records since the resume read it (replaced meanwhile): the state read
        # is not this log's. Refused untouched (no snapshot of that state), as a log taken
        # meanwhile is.
        raise UsageError(
            f"--resume {_q(log_path)}: the log changed while this resume read it (it now ends"
            f" at seq {exc.last_seq}, not {exc.state_seq}): run the command again"
        ) from None
    if taken:  # (said once the journal is closed: as it is, not in its nursery's group)
        raise UsageError(
            f"--log {_q(log_path)}: another run wrote this log meanwhile and a new run never"
            f" appends to an old one: pass --resume {_q(log_path)} to finish that run, or"
            " another --log path"
        )


def _nothing_recorded(state: Any) -> bool:
    """Whether a run's log holds nothing that matters: no job, no machine (launched,
    adopted or attached), no launch in flight, no cost."""
    return not (state.jobs or state.machines or state.launch_requests or state.ledger.total_micros)


def _remove_log(log_path: Path) -> None:
    """Remove what the journal made of a new run's log: the file, ``LOG.index`` and
    ``LOG.snapshots/`` (written only every SNAPSHOT_EVERY records: not there, in practice)."""
    import shutil

    import eventlog
    from eventlog.index import index_path

    try:
        for path in (log_path, Path(index_path(log_path))):
            path.unlink(missing_ok=True)
        shutil.rmtree(eventlog.snapshots_dir(log_path), ignore_errors=True)
    except OSError as exc:  # the run's own error is the one to report
        log.warning("could not remove the log of a run that did not start: %s", exc)


async def _run(
    args: argparse.Namespace,
    config: Config,
    mode: str,
    out: Out,
    log_path: Path,
    workflow: Any,
    image: bytes | None,
    prompt: str | None,
    http: Any,
    ws_connect: Any,
    stopping: _Stopping,
    logged: Any = None,
) -> int:
    from conjure_actors.actors.conjure import StartUpStopped, open_conjure
    from conjure_actors.clock import SystemWallClock
    from conjure_actors.commands.cloud_args import version_catalogue
    from conjure_actors.domain.state import RESUMABLE_STATUSES

    wall = SystemWallClock()
    started = time.monotonic()
    out_dir = Path(args.out)
    job_ids: list[str] = []
    state: Any = None
    sink: Any = (
        JsonSink(out.stdout, notices=out.stderr, closed=stopping.stdout_closed)
        if out.json_mode
        else None
    )
    attach: dict[str, str] = {}
    if mode == "runcomfy":
        dev = await _dev_machine(config)
        if dev is not None:
            attach[dev.server_id] = dev.url
            out.say(f"attaching to dev machine {dev.server_id} (machine down stops it)")
        else:
            from conjure_actors.commands.machine import skipped_dev_machine_note

            if (skipped := skipped_dev_machine_note(config)) is not None:
                out.say(f"note: {skipped}", "run.warning")
    # No catalogue recorded for the workflow version: its first machine gives it, and each
    # prompt is checked against it before its POST (a note, once, if it cannot be had).
    check = version_catalogue(config, lambda text: out.say(f"note: {text}", "run.warning"))
    try:
        async with _open_run_journal(
            log_path, wall.now, fresh=workflow is not None, logged=logged
        ) as journal:
            if workflow is None:
                what = f"--resume {_q(log_path)}"
                refuse_log_of_the_other_command(journal.state, "run", what, log_path)
                refuse_runcomfy_log_elsewhere(journal.state, mode, what)
            if workflow is None and journal.state.launch_requests and mode != "comfyui":
                out.say(resume_waits_for(len(journal.state.launch_requests), mode), "run.info")
            if sink is None:
                sink = RichSink(job_ids)
            left: list[str] = []
            # Servers named once start-up is done, and those named later (a launch in
            # flight whose marker several servers echo, none adopted): the summary names these.
            named: set[str] = set()
            late_notes: list[tuple[str, str]] = []
            stopping.nothing_to_stop = lambda: (
                not paid_machines(journal.state) and not journal.state.launch_requests
            )
            try:
                # The nursery holds no task now (the signal loop is _main's): it keeps the
                # errors of open_conjure grouped as they were, for main's one-line report.
                async with (
                    trio.open_nursery(),
                    open_conjure(
                        config,
                        journal=journal,
                        http=http,
                        ws_connect=ws_connect,
                        wall=wall,
                        out_dir=out_dir,
                        monitor=sink,
                        mode=mode,
                        attach=attach,
                        prompt_check=check,
                        # A signal already here when start-up would relaunch resumed jobs: they
                        # stay for --resume instead of launching machines the stop would stop.
                        hold_resumed=stopping.stop_asked,
                        # The embedded simulated cloud began with this process: the launches
                        # in flight a resumed log holds went to one that is gone (closed now).
                        fresh_cloud=mode == "simulated",
                        # A signal during start-up's checks, nothing launched yet: not waited.
                        checks=stopping.start_up,
                    ) as conjure,
                ):
                    stopping.conjure = conjure
                    # What start-up made (the modules, a resumed log's state) lives as long as
                    # the run: out of the cyclic GC's view, each full collection stops walking
                    # it again (as serve does; measured by bench/run.py: 1,000 jobs spent
                    # 75-95 ms in full collections, ~6 ms frozen).
                    gc.freeze()
                    for server_id, line in unknown_machine_notes(conjure):
                        named.add(server_id)
                        out.say(f"note: {line}", "run.warning", server_id=server_id)
                    # A signal during start-up has cancelled this scope already: nothing is
                    # submitted and no job waited for; the stop below is the run's.
                    with stopping.work:
                        if workflow is not None and stopping.signal is None:
                            base = args.seed if args.seed is not None else random.randrange(2**31)
                            for i in range(args.jobs):
                                job_id = await conjure.submit(
                                    workflow,
                                    image=image,
                                    prompt=prompt,
                                    sets=args.sets,
                                    priority=args.priority,
                                    seed=base + i
                                    if (args.jobs > 1 or args.seed is not None)
                                    else None,
                                )
                                job_ids.append(job_id)
                        elif workflow is None:
                            job_ids.extend(
                                j.job_id
                                for j in conjure.state.jobs.values()
                                if j.status in RESUMABLE_STATUSES
                            )
                            if not conjure.state.jobs:
                                out.say(
                                    f"nothing to resume: {_q(log_path)} holds no job (its run"
                                    " stopped before it submitted one): start a new run with"
                                    " another --log, or remove this log first",
                                    "run.info",
                                )
                            elif not job_ids:
                                out.say(
                                    f"nothing to resume: every job in {_q(log_path)} had ended"
                                    " (the summary below is the log's)",
                                    "run.info",
                                )
                        if stopping.signal is None:
                            await conjure.wait_until_idle()
                    interrupted = stopping.signal
                    reason = _REASONS[interrupted] if interrupted is not None else "done"
                    stopping.ended = True
                    left = await conjure.shutdown(reason)
                    late_notes = [n for n in unknown_machine_notes(conjure) if n[0] not in named]
            except BaseException as exc:
                # Start-up stopped by a signal before the run began (nothing to stop).
                if not isinstance(meaningful(exc), StartUpStopped):
                    raise
            state = journal.state
    finally:
        if sink is not None:
            try:
                if state is not None:
                    sink.tick(state)
                sink.close()
            except OSError as exc:  # the terminal went away (SIGHUP)
                log.info("the live view could not close: %s", exc)
    summary = summarize(state, job_ids or None)
    seconds = time.monotonic() - started
    # A new run that recorded nothing left no log (_open_run_journal): none to name.
    kept_log = "" if workflow is not None and _nothing_recorded(state) else str(log_path)
    record = summary_record(
        state,
        job_ids or None,
        seconds=seconds,
        out_dir=str(out_dir),
        log_path=kept_log,
        mode=mode,
    )
    if not kept_log:
        record["log"] = None
    if workflow is None and not state.jobs:
        # A resume of a run stopped before it submitted a job: nothing to resume (said in
        # one line above), nothing failed; its machines and launches in flight, if any, were
        # reconciled. Not a failure ("every job of this run succeeded": there is none),
        # unless a machine may still be running (its stop not confirmed): the one thing such
        # a resume is for.
        record["ok"] = not left
    under = outputs_folder(state, job_ids, out_dir)
    try:
        for line in summary_lines(
            summary, seconds=seconds, out_dir=under, log_path=kept_log, mode=mode
        ):
            out.human(line)
        out.record(record)
        if left:
            out.say("machines that may still be running: " + ", ".join(left), "run.warning")
        for server_id, line in late_notes:
            out.say(f"note: {line}", "run.warning", server_id=server_id)
        if summary.unfinished:
            out.say(
                f"{summary.unfinished} unfinished job(s): python -m conjure_actors run "
                f"--resume {shlex.quote(str(log_path))} runs them to the end",
                "run.info",
            )
    except OSError as exc:  # no terminal to print to any more (SIGHUP): the log has it all
        log.info("summary not printed: %s", exc)
    if stopping.signal is not None:
        return 128 + int(stopping.signal)
    # The exit code is the summary's "ok".
    return 0 if record["ok"] else 1


def _detach_from_terminal() -> None:
    """The terminal hung up: later writes to it would fail (EIO, EPIPE) and an exit that
    cannot flush stdout fails too; point stdout and stderr at /dev/null (the log keeps the
    whole story)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError as exc:
        log.warning("hangup: cannot open %s: %s", os.devnull, exc)
        return
    try:
        for fd in (1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)


def _tell(text: str) -> None:
    """One line on stderr, if there still is one (after SIGHUP the terminal may be gone)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError as exc:
        log.info("%s (not shown: %s)", text, exc)


__all__ = ["ConjureError", "add_arguments", "main"]
