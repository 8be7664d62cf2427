"""``python -m conjure_actors machine up|status|down``: a dev machine for fast iteration.

RunComfy machines take minutes to boot. ``machine up`` launches one, waits until it is Ready
and answers ``/system_stats``, and records it in a state file (mode 0600, default
``~/.conjure/dev_machine.json``, config ``dev_state_file``). While it is alive, ``run``
attaches to it instead of waiting for a new machine (and does not pay for it twice: the dev
machine's cost is its own, shown by ``machine status``). ``machine down`` stops it and
prints its final bill. One found gone (its lease ran out, it vanished, or it was stopped
another way) is billed up to the first look that found it gone (``DevMachine.gone_at``) and
never past its lease's end, "at most": nobody tells when it went. The state file holds the
machine URL, which is a capability: it is never printed.

From just before its ``POST /servers`` until the machine is recorded, ``machine up`` keeps
the launch in ``STATE.launching`` (its marker, then the server's id): interrupted in between
(Ctrl-C while it looks for the machine of a launch whose answer was lost, a kill), it stops
the machine if one look finds it, else says so, and a later ``machine down`` stops it,
``machine status`` reports it, ``machine up`` adopts it.

A record file too damaged to read (truncated, edited, a disk error) does not keep its
machine billing: ``machine down`` stops the machine whose id is left in it, or, none left,
lists the account's machines that are up and says the command that stops one by id
(``machine down --server-id ID``); it never stops a machine by a guess.

A closed stdout (``machine up | head``) changes nothing of that: the lines go to stderr from
then on and the command does its work (a broken pipe between a launch and its record used
to leave the machine billing, recorded nowhere, exit 141 without a word).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import trio

from conjure_actors.commands.streams import to_devnull
from conjure_actors.config import Config, load_config, require_priced_server_type
from conjure_actors.errors import UsageError

HELP = "launch, inspect or stop a dev machine that `run` attaches to (RunComfy)"


def _seconds(text: str) -> float:
    """A duration flag: a finite number of seconds, at least 1 (NaN and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 1, got {text}")
    return value


SERVER_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""What a RunComfy server id can be (a UUID; the characters a record file's id is salvaged
by, :data:`_SERVER_ID_FIELD`)."""


def _server_id(text: str) -> str:
    """``--server-id``: a plausible RunComfy server id, else a usage error: the id goes in
    the URL path of a DELETE (QA11 F4: "" and ``../servers`` reached the account's list, a
    ``/`` another route, a space a "not found" that stopped nothing)."""
    if SERVER_ID.fullmatch(text) is None or ".." in text or text == ".":
        shown = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
        raise argparse.ArgumentTypeError(
            f"not a RunComfy server id: {shown} (an id is letters, digits, '-', '_', '.' and"
            " ':', as `python -m conjure_actors machine down` lists them)"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # One sub-parser per action, so that `machine up --help` is up's own help.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-file", metavar="PATH", help="where the dev machine is recorded")
    common.add_argument("--config", metavar="PATH", help="TOML config (default ./conjure.toml)")
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show full tracebacks on errors",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
        return actions.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog="examples:\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    up = action(
        "up",
        "launch a RunComfy machine, wait until it is Ready, record it for `run` to attach to",
        "  python -m conjure_actors machine up --workflow-version 0123abcd-... \\\n"
        "      --server-type medium --duration 3600\n"
        "(the workflow version id is on RunComfy's dashboard: docs/runcomfy.md)\n",
    )
    up.add_argument("--server-type", help="RunComfy server type (default medium)")
    up.add_argument(
        "--workflow-version",
        help="RunComfy workflow version id (from RunComfy's dashboard, see docs/runcomfy.md)",
    )
    up.add_argument(
        "--duration",
        type=_seconds,
        default=3600.0,
        metavar="S",
        help="lease: RunComfy stops the machine after S seconds (default 3600)",
    )
    up.add_argument(
        "--wait",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="give up waiting for Ready after S seconds (default 600)",
    )
    for name, help_text, example in (
        ("status", "is the dev machine alive, and what has it cost so far", "status"),
        ("down", "stop the dev machine and print its final bill", "down"),
    ):
        sub = action(name, help_text, f"  python -m conjure_actors machine {example}\n")
        sub.set_defaults(server_type=None, workflow_version=None, server_id=None)
        if name == "down":
            sub.add_argument(
                "--server-id",
                type=_server_id,
                metavar="ID",
                help="stop this machine of the account instead (what to do when the state"
                " file is damaged: `machine down` lists the machines that are up)",
            )


@attrs.frozen
class DevMachine:
    """What the state file records."""

    server_id: str
    url: str
    server_type: str
    workflow_version: str
    service_ready_at: float | None
    estimated_stopping_at: float | None
    rate_micros_per_hour: int
    price_table_version: str
    launched_at: float
    # When a look (``machine status``, ``down``) first found it gone (404, or stopping by
    # itself): it went before then, at a moment nobody tells, so its bill ends there at
    # the latest (None: not found gone yet; absent from older files).
    gone_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), indent=2)

    def billed_until(self, now: float) -> float:
        """The latest moment it can have billed to, as of ``now``: when it was first
        found gone, and never past its lease's end (RunComfy stops it then)."""
        until = now if self.gone_at is None else min(now, self.gone_at)
        if self.estimated_stopping_at is not None:
            until = min(until, self.estimated_stopping_at)
        return until

    def __repr__(self) -> str:  # the URL is a capability
        return f"DevMachine(server_id={self.server_id!r}, url=<redacted>)"


def _say(text: str) -> None:
    """One line on stdout; once stdout's reader has left (`machine up | head`), on stderr:
    a closed pipe must neither cut a launch off from its record or its stop (it would bill,
    recorded nowhere) nor hide what became of a machine. The command does its work."""
    if sys.stdout not in _READER_LEFT:
        try:
            print(text, flush=True)
            return
        except OSError:  # its reader left (EPIPE), the terminal went (EIO)
            _READER_LEFT.append(sys.stdout)
    with contextlib.suppress(OSError):  # no stderr either: the state files still say it
        print(text, file=sys.stderr, flush=True)


_READER_LEFT: list[Any] = []
"""The stdouts found closed (by identity: tests replace ``sys.stdout``)."""


def state_path(config: Config, override: str | None = None) -> Path:
    return Path(os.path.expanduser(override or config.dev_state_file))


def _damage(exc: Exception) -> str:
    """What is wrong with a record file, in words (never an exception's class name)."""
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or 'I/O error'}"
    if isinstance(exc, ValueError):  # JSONDecodeError, UnicodeDecodeError
        return "is damaged: not whole JSON"
    return "is damaged: not a record of this version"  # fields missing or unknown


def read_dev_machine(path: Path) -> DevMachine | None:
    """The recorded dev machine, or None (no file); a damaged file is a UsageError
    (``machine down`` stops the machine of a damaged file: :func:`_down`)."""
    try:
        data = json.loads(path.read_text())
        return DevMachine(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(
            f"dev machine state file {path} {_damage(exc)}: `python -m conjure_actors machine"
            f" down --state-file {path}` stops the machine it recorded (by the id left in it,"
            " or it lists the account's machines)"
        ) from None


def write_dev_machine(path: Path, machine: DevMachine) -> None:
    """Write the state file durably with mode 0600 (created so, never world-readable): a
    temporary file beside it, fsync, rename, directory fsync. A crash leaves the old
    record or the new one, never a torn file that would lose track of a billed machine."""
    from conjure_actors.actors.files import write_atomic  # here: `--help` stays light

    write_atomic(path, machine.to_json().encode(), mode=0o600)


@attrs.frozen
class PendingLaunch:
    """A launch ``machine up`` sent (or is about to send) whose machine is not recorded yet:
    written before ``POST /servers``, given the ``server_id`` once known, removed once the
    machine is recorded (or stopped). If ``machine up`` is interrupted (Ctrl-C, a kill) in
    between, this file is what tells ``machine up|status|down`` later that a machine may be
    starting, billing: by its id, or else by the launch's marker (``estimated_duration``,
    with its type and version) among the servers that were not listed before the launch."""

    server_type: str
    workflow_version: str
    estimated_duration: int
    known_server_ids: list[str]
    requested_at: float
    server_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), indent=2)


LANDED_READY_WITHIN = 1200.0
"""Seconds past its launch's landing grace by which the machine of a launch ``machine up``
recorded is Ready, if it ever is (twice the 10 min a machine is given to boot): a marker
match Ready later (or still starting past then) is another machine of the account."""


def pending_path(path: Path) -> Path:
    """Where the launch in flight of the dev machine recorded at ``path`` is kept."""
    return path.with_name(path.name + ".launching")


def read_pending_launch(path: Path) -> PendingLaunch | None:
    """The launch an interrupted ``machine up`` left (None: none); damaged: a UsageError."""
    pending = pending_path(path)
    try:
        data = json.loads(pending.read_text())
        return PendingLaunch(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(
            f"dev machine launch file {pending} {_damage(exc)}: `python -m conjure_actors"
            f" machine down --state-file {path}` stops the machine that launch may have"
            " started (by the id left in it, or it lists the account's machines)"
        ) from None


def write_pending_launch(path: Path, launch: PendingLaunch | None) -> None:
    """Record ``launch`` durably (mode 0600, as the state file) before it can bill; None:
    no launch in flight any more (refused)."""
    from conjure_actors.actors.files import write_atomic

    if launch is None:
        pending_path(path).unlink(missing_ok=True)
        return
    try:
        write_atomic(pending_path(path), launch.to_json().encode(), mode=0o600)
    except OSError as exc:  # before the POST: nothing launched; after: the look says it
        raise UsageError(
            f"dev machine launch file {pending_path(path)}: cannot write it"
            f" ({exc.strerror or exc}): pick another --state-file"
        ) from None


def _config(args: argparse.Namespace) -> Config:
    config = load_config(
        config_file=args.config,
        flags={
            "runcomfy.server_type": args.server_type,
            "runcomfy.workflow_version": args.workflow_version,
        },
        pool_checked=False,  # no pool runs here (machine down must never be refused for it)
    )
    if not config.runcomfy.configured:
        raise UsageError(
            "a dev machine needs RunComfy: set RUNCOMFY_USER_ID and "
            "RUNCOMFY_API_TOKEN (and RUNCOMFY_API_BASE_URL for a simulator)"
        )
    return config


def main(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.action == "up":
        require_priced_server_type(config)
    path = state_path(config, args.state_file)
    try:
        return trio.run(_main, args, config, path)
    finally:
        if sys.stdout in _READER_LEFT:  # its lines went to stderr: the exit's flush must not
            to_devnull(sys.stdout)  # fail on what is left in stdout's buffer


async def _main(args: argparse.Namespace, config: Config, path: Path) -> int:
    from conjure_actors.clients.runcomfy import RunComfyClient

    async with httpx.AsyncClient(timeout=60.0) as http:
        rc = RunComfyClient(
            config.runcomfy.base_url,
            config.runcomfy.user_id,
            config.runcomfy.api_token.reveal(),
            http=http,
            wall=time.time,  # RunComfy's times in the clock this command compares them with
        )
        return await machine_action(args, config, path, rc)


async def machine_action(args: argparse.Namespace, config: Config, path: Path, rc: Any) -> int:
    """``machine up|status|down`` (``args.action``) on the account of ``rc``; ``up`` and
    ``down`` one at a time per state file (another one running: a UsageError)."""
    if args.action == "status":  # a look: no lock (what it saves: _save_look)
        return await _machine_action(args, config, path, rc)
    with _one_at_a_time(path, args.action):
        return await _machine_action(args, config, path, rc)


@contextlib.contextmanager
def _one_at_a_time(path: Path, action: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``STATE.lock`` (released with the process): two ``machine
    up`` at once would each launch, overwrite each other's launch record and state file,
    and leave one machine billing, recorded nowhere."""
    import fcntl

    lock = path.with_name(path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise UsageError(
            f"dev machine state file {path}: cannot lock it ({exc.strerror or exc}):"
            " pick another --state-file"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another `machine up` or `machine down` is running on {path}: let it end,"
                f" then run `machine {action}` again"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _locked_by_another(path: Path) -> bool:
    """Whether a ``machine up`` or ``down`` holds the state file's lock now (``status``,
    a look, takes none: it asks for a shared lock for an instant, and lets it go)."""
    import fcntl

    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file: nothing ever held it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (releases the shared lock, if taken)
    return False


def _save_look(path: Path, looked: DevMachine) -> None:
    """Save what a ``machine status`` look found (the lease's end as RunComfy has it now,
    the moment it was first found gone) into the state file, if it still records that
    machine and no ``machine up|down`` holds it now (what that one writes or removes
    stands: a look must not bring back the record of a machine just stopped). Unwritable:
    not saved (the look's line is still right)."""
    import fcntl

    lock = path.with_name(path.name + ".lock")
    with contextlib.suppress(OSError):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: held
            current = read_dev_machine(path)
            if current is not None and current.server_id == looked.server_id:
                write_dev_machine(path, looked)
        finally:
            os.close(fd)


async def _machine_action(args: argparse.Namespace, config: Config, path: Path, rc: Any) -> int:
    from conjure_actors.clients.errors import UnknownWorkflowVersionError
    from conjure_actors.domain.prices import format_usd, machine_cost_micros

    if args.action == "down":
        return await _down(args, config, path, rc)
    recorded = read_dev_machine(path)
    pending = read_pending_launch(path)
    if args.action == "up":
        if pending is not None:
            adopted = await _settle_pending(rc, config, path, pending, "up")
            if adopted is not None:
                return await _wait_and_record(
                    rc, config, path, args, adopted, "found the interrupted launch's"
                )
        if recorded is not None:
            alive = await _alive(rc, recorded.server_id)
            wanted = config.runcomfy.workflow_version
            if alive and wanted and wanted != recorded.workflow_version:
                # "already up" would be untrue of what was asked: `run` of `wanted` does
                # not attach to it. A state file records one dev machine.
                raise UsageError(
                    f"dev machine {recorded.server_id} is already up ({alive}) with workflow"
                    f" version {recorded.workflow_version}, not {wanted}: stop it first"
                    f" (`python -m conjure_actors machine down{_state_option(args)}`), or"
                    " pass another --state-file for a second dev machine"
                )
            if alive:
                _say(f"dev machine {recorded.server_id} is already up ({alive}); state file {path}")
                return 0
        version = config.runcomfy.workflow_version
        if not version:
            raise UsageError("pass --workflow-version (the RunComfy workflow to boot)")
        server_type = config.runcomfy.server_type
        try:
            server, how = await launch_or_find(
                rc,
                version,
                server_type,
                int(args.duration),
                say=_say,
                record=lambda launch: write_pending_launch(path, launch),
            )
        except UnknownWorkflowVersionError as exc:  # refused: nothing launched, bad input
            await _interrupted_launch(rc, path)
            raise UsageError(str(exc)) from None
        except BaseException:
            await _interrupted_launch(rc, path)
            raise
        return await _wait_and_record(rc, config, path, args, server, how)
    if pending is not None:  # status: the interrupted launch's machine first
        found = await _settle_pending(rc, config, path, pending, args.action)
        if recorded is None:
            return 0 if found is not None else 1
    if recorded is None:
        _say(f"no dev machine recorded in {path}")
        return 0
    server = await _look(rc, recorded.server_id)
    alive = _up(server)
    if alive is not None:
        # Up: billing runs on to now (its lease's end as RunComfy has it now, which
        # `run` or the dashboard may have moved since it was recorded).
        # Its lease's end is saved too: a later `down` answered 404 bills it up to
        # there at the latest (the launch's end would bill a renewed lease short).
        looked = attrs.evolve(recorded, gone_at=None)
        if server.estimated_stopping_at is not None:
            looked = attrs.evolve(looked, estimated_stopping_at=server.estimated_stopping_at)
        if looked != recorded:
            _save_look(path, looked)
        recorded = attrs.evolve(looked, estimated_stopping_at=server.estimated_stopping_at)
    elif recorded.gone_at is None:
        # The first look that finds it gone: its bill ends here at the latest (a
        # later look must not bill it on), so this moment is recorded.
        recorded = attrs.evolve(recorded, gone_at=time.time())
        _save_look(path, recorded)
    cost = machine_cost_micros(
        recorded.rate_micros_per_hour,
        recorded.service_ready_at,
        recorded.billed_until(time.time()),
    )
    if alive is not None:
        _say(
            f"dev machine {recorded.server_id}: {alive}; "
            f"{recorded.server_type}; cost so far {format_usd(cost)}"
        )
        return 0
    why, upto = _why_gone(recorded, server, time.time())
    state = "gone" if server is None else f"stopping ({server.status})"
    _say(
        f"dev machine {recorded.server_id}: {state} ({why}); {recorded.server_type};"
        f" billed at most {format_usd(cost)} ({upto}); `machine down` forgets it"
    )
    return 1


def _why_gone(recorded: DevMachine, server: Any, now: float) -> tuple[str, str]:
    """Why a recorded machine found gone (``server`` None: 404) or stopping went, and up to
    when its bill can have run (``recorded.billed_until``'s bound), in words: its lease's
    end if that had passed when it was first found so (it went then, at the latest), else
    the moment it was found (it vanished, or was stopped another way: when, nobody tells)."""
    found = now if recorded.gone_at is None else min(now, recorded.gone_at)
    lease_end = recorded.estimated_stopping_at
    if lease_end is not None and lease_end <= found:
        return (
            f"its lease ran out at {_clock(lease_end)}, if it did not go sooner",
            "up to its lease's end",
        )
    if server is None:  # (not listed at all)
        return (
            "it vanished, or it was stopped another way",
            "up to when it was first found gone: when it went nobody tells",
        )
    return (
        "it was stopped another way",
        "up to when it was first found stopping: when it stopped nobody tells",
    )


async def _down(args: argparse.Namespace, config: Config, path: Path, rc: Any) -> int:
    """``machine down``: the interrupted launch's machine, then the recorded one, stopped.
    A record file too damaged to read must not keep its machine billing: the server id is
    read from what is left of it (it comes first in the state file) and that machine
    stopped; if none can be read, the account's machines that are up are listed with the
    command that stops one by id (``--server-id``), nothing is guessed."""
    by_id = getattr(args, "server_id", None)
    if by_id is not None:
        return await _down_by_id(args, config, path, rc, by_id)
    damaged: list[Path] = []
    try:
        recorded = read_dev_machine(path)
    except UsageError:
        recorded, damaged = None, [path]
    try:
        pending = read_pending_launch(path)
    except UsageError:
        pending = None
        damaged.append(pending_path(path))
    unresolved = [file for file in damaged if not await _stop_salvaged(rc, config, file)]
    if pending is not None:
        await _settle_pending(rc, config, path, pending, "down")
    if recorded is not None:
        await _stop_recorded(rc, path, recorded)
    if unresolved:
        return await _unresolved(args, rc, unresolved)
    if recorded is None and pending is None and not damaged:
        _say(
            f"no dev machine recorded in {path}: nothing stopped (`python -m conjure_actors"
            f" machine down --server-id ID{_state_option(args)}` stops one by its id)"
        )
        return 1
    return 0


async def _stop_recorded(rc: Any, path: Path, recorded: DevMachine) -> None:
    """Stop the recorded dev machine, forget it, say its bill."""
    from conjure_actors.domain.prices import format_usd, machine_cost_micros

    how, server, until = await _stop(rc, recorded.server_id)
    if how == "gone":  # to its lease's end as recorded at the latest (the DELETE tells none)
        until = recorded.billed_until(until)
    elif recorded.gone_at is not None:  # an earlier `machine status` found it stopped
        how, until = "found", min(until, recorded.gone_at)
    ready_at = recorded.service_ready_at
    if server is not None and server.service_ready_at is not None:
        ready_at = server.service_ready_at
    cost = machine_cost_micros(recorded.rate_micros_per_hour, ready_at, until)
    _remove(path)
    what = f"dev machine {recorded.server_id}"
    if how == "gone":
        why, upto = _why_gone(recorded, None, until)
        _say(f"{what} was already gone ({why}); billed at most {format_usd(cost)} ({upto})")
    else:
        _say(_stop_words(what, how, server, format_usd(cost)))


_STOPPED_BY: Final = "its lease ran out, or it was stopped another way"
_AT_MOST: Final = (
    "up to when it was found stopped, never past its lease's end: when it stopped nobody tells"
)


_UNSEEN: Final = object()
"""``_stop``'s ``looked`` when the caller has no fresh look at the machine."""


async def _stop(rc: Any, server_id: str, looked: Any = _UNSEEN) -> tuple[str, Any, float]:
    """Stop a machine of the account: ``(how, server, until)``.

    A look first (``GET``, unless the caller just had one: ``looked``): a DELETE's answer
    says ``Deleting`` whether this DELETE stopped the machine or another stop had (the
    dashboard, another ``machine down``), so only a look tells "already stopped" from
    "stopped" (a fresh process has the two requests' tokens: no rate-limit wait, one round
    trip more before the DELETE of a machine still up). A machine the look finds stopping
    gets no DELETE.

    ``how``: ``gone`` (404: nobody tells when it went; ``server`` None, ``until`` now);
    ``already`` (its lease's end, ``estimated_stopping_at``, had passed when this command
    asked: RunComfy had stopped it there, ``until``); ``elsewhere`` (found stopping before
    its lease's end: stopped another way, nobody tells when; ``until`` is the look, the
    latest it can have billed to); ``ran_out`` (its lease ended while the DELETE was on its
    way, retries and rate-limit waits included: whichever came first ended its bill, by the
    lease's end, ``until``); ``stopped`` (by this DELETE: ``until`` is when it returned, as
    RunComfy bills it)."""
    asked = time.time()
    if looked is _UNSEEN:
        looked = await _look(rc, server_id)
    if looked is None:
        return "gone", None, time.time()
    if _up(looked) is None:
        lease_end = looked.estimated_stopping_at
        if lease_end is not None and lease_end <= asked:
            return "already", looked, lease_end
        return "elsewhere", looked, _lease_capped(time.time(), looked)
    stopped = await rc.stop(server_id, missing_ok=True)
    now = time.time()
    if stopped is None:
        return "gone", None, now
    lease_end = stopped.estimated_stopping_at
    if lease_end is not None and lease_end <= asked:
        return "already", stopped, lease_end
    if lease_end is not None and lease_end <= now:
        return "ran_out", stopped, lease_end
    return "stopped", stopped, now


def _stop_words(what: str, how: str, server: Any, bill: str) -> str:
    """What became of a machine :func:`_stop` was given (not ``gone``: its callers say it
    each in their words), with ``bill`` (formatted; "" if unpriced)."""
    if how == "stopped":
        return f"{what} stopped{f'; cost {bill}' if bill else ''}"
    if how == "found":  # (an earlier look found it stopped: when, nobody tells)
        at_most = f"; billed at most {bill} ({_AT_MOST})" if bill else ""
        return f"{what} was already stopped ({_STOPPED_BY}){at_most}"
    if how == "elsewhere":  # (found stopping before its lease's end: when, nobody tells)
        at_most = f"; billed at most {bill} ({_AT_MOST})" if bill else ""
        return f"{what} was already stopped (it was stopped another way){at_most}"
    at_most = f"; billed at most {bill} (up to its lease's end)" if bill else ""
    at = _clock(server.estimated_stopping_at)
    if how == "already":
        return f"{what} was already stopped: its lease ran out at {at}{at_most}"
    first = "by the DELETE or by its lease's end, whichever came first"
    return f"{what} stopped as its lease ran out at {at} ({first}){at_most}"


def _lease_capped(now: float, server: Any) -> float:
    """``now``, never past the lease's end RunComfy gives (if its lease ran out between a
    look and the DELETE, RunComfy stopped it, and billed it, there)."""
    lease_end = server.estimated_stopping_at
    return now if lease_end is None else min(now, lease_end)


_SERVER_ID_FIELD: Final = re.compile(rb'"server_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')


def _salvaged_server_id(file: Path) -> str | None:
    """The server id a damaged record file still holds whole (a closing quote after it),
    or None."""
    try:
        found = _SERVER_ID_FIELD.search(file.read_bytes())
    except OSError:
        return None
    return found.group(1).decode() if found else None


def _bill(config: Config, server: Any, until: float) -> str:
    """``$x`` billed by a machine (as RunComfy last described it) up to ``until``, or "" if
    unpriced."""
    from conjure_actors.domain.errors import PriceTableError
    from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros

    try:
        rate = default_price_table(config.runcomfy.plan).rate(server.server_type or "")
    except PriceTableError:
        return ""
    return format_usd(machine_cost_micros(rate, server.service_ready_at, until))


def _stopped_line(config: Config, what: str, how: str, server: Any, until: float) -> str:
    """What became of a machine :func:`_stop` was given (not ``gone``), with its bill if
    priced."""
    return _stop_words(what, how, server, _bill(config, server, until))


async def _stop_salvaged(rc: Any, config: Config, file: Path) -> bool:
    """Stop the machine whose id is left in damaged ``file``, then remove the file; False
    if no id is left in it (the file stays)."""
    server_id = _salvaged_server_id(file)
    if server_id is None:
        return False
    how, server, until = await _stop(rc, server_id)
    _remove(file)
    what = f"dev machine {server_id} (read from the damaged {file}, now removed)"
    if how == "gone":
        _say(f"{what} was already gone")
    else:
        _say(_stopped_line(config, what, how, server, until))
    return True


async def _unresolved(args: argparse.Namespace, rc: Any, files: list[Path]) -> int:
    """Damaged record files that name no machine: the account's machines that are up are
    listed, one line each, with the command that stops one by id (a UsageError). None up:
    nothing bills, the files go, once a launch one of them may record (written within the
    landing grace) has had the time to be listed (RunComfy lists a new machine late)."""
    from conjure_actors.domain import machines_policy as policy

    names = " and ".join(str(f) for f in files)
    up = await _machines_up(rc)
    left = policy.LAUNCH_LAND_GRACE - min(_age(f) for f in files)
    if not up and left > 0:
        _say(
            f"{names}: damaged, naming no machine; a launch it may record could be too"
            f" recent to be listed: looking up to {left:.0f} s more..."
        )
        with trio.move_on_after(left):
            while not up:
                await trio.sleep(5.0)
                up = await _machines_up(rc)
    if not up:
        for file in files:
            _remove(file)
        _say(f"{names}: damaged, naming no machine; none is up on the account: removed")
        return 0
    _say_machines(up)
    raise UsageError(
        f"{names} is damaged and names no machine; the account's {len(up)} machine(s) up are"
        " listed above (a `run`'s may be among them): stop the dev machine with"
        f" `python -m conjure_actors machine down --server-id ID{_state_option(args)}`"
    )


async def _machines_up(rc: Any) -> list[Any]:
    """The account's machines that are up (listed, not going away), by server id."""
    from conjure_actors.domain import machines_policy as policy

    listed = await rc.list_servers()
    return sorted(
        (s for s in listed if s.status not in policy.GONE_STATUSES), key=lambda s: s.server_id
    )


def _say_machines(up: list[Any]) -> None:
    """One line per machine: its id, status, type, workflow version and Ready time."""
    for s in up:
        ready = "" if s.service_ready_at is None else f", Ready since {_clock(s.service_ready_at)}"
        _say(
            f"machine {s.server_id}: {s.status}, {s.server_type or 'type unknown'}, workflow"
            f" version {s.workflow_version_id or 'unknown'}{ready}"
        )


def _state_option(args: argparse.Namespace) -> str:
    given = getattr(args, "state_file", None)
    return f" --state-file {given}" if given else ""


def _remove(file: Path) -> None:
    """Remove a record file (gone already: fine). In the event loop, not a worker thread: a
    local unlink is quick, and a thread would let a test's MockClock jump meanwhile."""
    file.unlink(missing_ok=True)


def _age(file: Path) -> float:
    """Seconds since ``file`` was last written (gone: infinitely old)."""
    try:
        return time.time() - file.stat().st_mtime
    except OSError:
        return float("inf")


def _clock(at: float) -> str:
    """A wall time as UTC, to the second."""
    import datetime as dt

    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def _down_by_id(
    args: argparse.Namespace, config: Config, path: Path, rc: Any, server_id: str
) -> int:
    """``machine down --server-id ID``: stop that machine of the account. The record files
    that name it, or are damaged (what ``--server-id`` is for), go; one that records
    another machine stays (said)."""
    recorded: DevMachine | None = None
    forget: list[Path] = []
    try:
        recorded = read_dev_machine(path)
    except UsageError:
        forget.append(path)
    try:
        pending = read_pending_launch(path)
    except UsageError:
        pending = None
        forget.append(pending_path(path))
    if recorded is not None and recorded.server_id == server_id:
        await _stop_recorded(rc, path, recorded)
        recorded = None
    else:
        how, server, until = await _stop(rc, server_id)
        if how == "gone":
            await _not_found(args, rc, server_id)
        else:
            _say(_stopped_line(config, f"machine {server_id}", how, server, until))
    if pending is not None and pending.server_id == server_id:
        forget.append(pending_path(path))
    for file in forget:
        _remove(file)
        _say(f"removed {file}")
    if recorded is not None:
        _say(
            f"dev machine {recorded.server_id} is still recorded in {path}: `python -m"
            " conjure_actors machine down` stops it"
        )
    return 0


async def _not_found(args: argparse.Namespace, rc: Any, server_id: str) -> None:
    """``--server-id`` names no machine of the account: gone already, or a mistyped id (the
    machine meant to be stopped billing on). The machines up are listed and the command
    refused (nothing is removed: a damaged record file may be the only one naming it);
    none up, nothing bills: said, and the command goes on."""
    up = await _machines_up(rc)
    said = f"machine {server_id} was not found on the account (gone already, or a mistyped id)"
    if not up:
        _say(f"{said}; none of its machines is up: nothing bills")
        return
    _say_machines(up)
    raise UsageError(
        f"{said}; the account's {len(up)} machine(s) up are listed above (a `run`'s may be"
        " among them): stop yours with"
        f" `python -m conjure_actors machine down --server-id ID{_state_option(args)}`"
    )


async def _wait_and_record(
    rc: Any, config: Config, path: Path, args: argparse.Namespace, server: Any, how: str
) -> int:
    """Wait until ``server`` is Ready and record it (its launch record then goes); stopped
    if it never gets there or the wait is interrupted."""
    from conjure_actors.domain.prices import default_price_table

    table = default_price_table(config.runcomfy.plan)
    server_type = server.server_type or config.runcomfy.server_type
    version = server.workflow_version_id or config.runcomfy.workflow_version
    try:  # from here on, anything that ends the wait stops the machine
        _say(f"{how} dev machine {server.server_id} ({server_type}); waiting until it is Ready...")
        server = await rc.wait_until_ready(server.server_id, give_up_after=args.wait, interval=2.0)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await rc.stop(server.server_id, missing_ok=True)
            pending_path(path).unlink(missing_ok=True)
            _say(f"stopped dev machine {server.server_id}")
        raise
    machine = DevMachine(
        server_id=server.server_id,
        url=server.url.reveal() if server.url is not None else "",
        server_type=server_type,
        workflow_version=version,
        service_ready_at=server.service_ready_at,
        estimated_stopping_at=server.estimated_stopping_at,
        rate_micros_per_hour=table.rate(server_type),
        price_table_version=table.version,
        launched_at=time.time(),
    )
    write_dev_machine(path, machine)
    pending_path(path).unlink(missing_ok=True)
    _say(f"dev machine {machine.server_id} is Ready; recorded in {path} (mode 0600)")
    if getattr(args, "state_file", None) and path != state_path(config):
        # `run` reads the config's dev_state_file, not this command's --state-file.
        _say(
            f"`run` attaches to it while it is alive if its dev_state_file is {path}"
            f" (CONJURE_DEV_STATE_FILE={shlex.quote(str(path))}); `python -m conjure_actors machine"
            f" down{_state_option(args)}` stops it"
        )
    else:
        _say("`run` attaches to it while it is alive; `machine down` stops it")
    return 0


async def _find_pending(rc: Any, pending: PendingLaunch) -> Any:
    """The server of ``pending`` if it is up (by its id, else by the launch's marker)."""
    from conjure_actors.clients.errors import ServerNotFoundError
    from conjure_actors.domain import machines_policy as policy

    if pending.server_id is not None:
        try:
            server = await rc.status(pending.server_id)
        except ServerNotFoundError:
            return None
        return None if server.status in policy.GONE_STATUSES else server
    return _marked(pending, await rc.list_servers())


async def _find_landing(rc: Any, pending: PendingLaunch, interval: float = 5.0) -> Any:
    """As :func:`_find_pending`, looking again until ``LAUNCH_LAND_GRACE`` has passed since
    the launch was sent: RunComfy answers 404 for a machine just launched and lists it late
    (a new process has no memory of the launch to excuse that), so "not found" that soon
    does not mean "nothing launched"; dropping the record then would leave the machine
    billing, recorded nowhere. A failed look raises (the record stays)."""
    from conjure_actors.domain import machines_policy as policy

    server = await _find_pending(rc, pending)
    # At most the grace (a clock set back since the record was written would make it more).
    grace = policy.LAUNCH_LAND_GRACE
    left = min(grace, pending.requested_at + grace - time.time())
    if server is not None or left <= 0:
        return server
    _say(
        "an interrupted `machine up` left a launch sent moments ago whose machine RunComfy"
        f" does not show yet: looking for it up to {left:.0f} s more...",
    )
    with trio.move_on_after(left):
        while server is None:
            await trio.sleep(interval)
            server = await _find_pending(rc, pending)
    return server


def _marked(pending: PendingLaunch, listed: list[Any]) -> Any:
    """The listed server ``pending``'s launch started: not listed before it, not going
    away, with its marker (lease, type, version); None if none (or several) match."""
    from conjure_actors.domain import machines_policy as policy
    from conjure_actors.domain.state import LaunchRequest

    intent = LaunchRequest(
        request_key="machine-up",
        server_type=pending.server_type,
        workflow_version=pending.workflow_version,
        estimated_duration=pending.estimated_duration,
        max_jobs=1,
        at=0.0,
    )
    known = set(pending.known_server_ids)
    # Its machine was Ready (or not, and then it does not bill) within this of the launch:
    # a later one with the same marker is another's (1 in 59 for the pool's own launches
    # of the same lease), never to be stopped or adopted for a record hours old.
    latest = pending.requested_at + policy.LAUNCH_LAND_GRACE + LANDED_READY_WITHIN
    matches = [
        s
        for s in sorted(listed, key=lambda s: s.server_id)
        if s.server_id not in known
        and s.status not in policy.GONE_STATUSES
        and (
            s.service_ready_at <= latest
            if s.service_ready_at is not None
            else time.time() <= latest
        )
        and policy.matches_intent(
            intent,
            server_type=s.server_type,
            workflow_version_id=s.workflow_version_id,
            estimated_duration=s.estimated_duration,
        )
    ]
    return matches[0] if len(matches) == 1 else None


async def _settle_pending(
    rc: Any, config: Config, path: Path, pending: PendingLaunch, action: str
) -> Any:
    """What became of the launch an interrupted ``machine up`` left: ``up`` adopts its
    machine (returned), ``down`` stops it, ``status`` reports it. None found: the record
    goes (``status`` keeps it: a look, not a decision)."""
    from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros

    # `status` takes no lock: the launch record may be that of a `machine up` running now
    # (it holds the lock until the machine is recorded), not of an interrupted one.
    live = action == "status" and _locked_by_another(path)
    if action == "status":  # a look, not a wait
        server = await _find_pending(rc, pending)
    else:
        server = await _find_landing(rc, pending)
    if server is None:
        if live:
            _say("a `machine up` running now is launching a machine (not listed yet)")
            return None
        _say("an interrupted `machine up` left a launch: no machine of it is up")
        if action != "status":
            pending_path(path).unlink(missing_ok=True)
        return None
    if action == "up":
        return server
    rate = default_price_table(config.runcomfy.plan).rate(pending.server_type)
    if action == "status":
        cost = machine_cost_micros(rate, server.service_ready_at, time.time())
        if live:
            _say(
                f"machine {server.server_id} ({server.status}), being launched by a `machine"
                f" up` running now (it records it once Ready); cost so far {format_usd(cost)}"
            )
            return server
        _say(
            f"machine {server.server_id} ({server.status}), launched by an interrupted"
            f" `machine up`; cost so far {format_usd(cost)}: `machine down` stops it"
        )
        return server
    how, stopped, until = await _stop(rc, server.server_id, looked=server)
    if how == "gone":  # gone before the DELETE, nobody tells when: to now at the latest,
        until = _lease_capped(until, server)  # never past its lease's end as listed
    pending_path(path).unlink(missing_ok=True)
    # The DELETE's answer is the machine as it stopped (as the pool bills it): it may have
    # got Ready since the look, which would bill it $0.
    ready_at = server.service_ready_at
    if stopped is not None and stopped.service_ready_at is not None:
        ready_at = stopped.service_ready_at
    bill = format_usd(machine_cost_micros(rate, ready_at, until))
    what = f"machine {server.server_id} (launched by an interrupted `machine up`)"
    if how == "gone":
        _say(f"{what} was already gone; billed at most {bill}")
    else:
        _say(_stop_words(what, how, stopped, bill))
    return server


async def _interrupted_launch(rc: Any, path: Path) -> None:
    """``machine up`` interrupted (or failed) between its launch and the machine's record:
    one shielded look for the machine, stopped if found; else the line says what finds it."""
    from conjure_actors.clients.errors import ClientError

    pending = read_pending_launch(path)
    if pending is None:
        return
    server = None
    with trio.CancelScope(shield=True), trio.move_on_after(30):
        try:
            server = await _find_pending(rc, pending)
            if server is not None:
                await rc.stop(server.server_id, missing_ok=True)
                pending_path(path).unlink(missing_ok=True)
                _say(f"stopped dev machine {server.server_id} (the interrupted launch's)")
                return
        except ClientError as exc:  # the record keeps it: said below
            _say(f"could not look for the launched machine now ({exc})")
    _say(
        "the launch may have started a machine that is not found yet (it may bill): recorded"
        f" in {pending_path(path)}; `python -m conjure_actors machine down` stops it",
    )


# A launch whose answer was lost (a 5xx from RunComfy's gateway after it launched, a
# timeout, a dropped connection: OutcomeUnknownError) may have started a machine that bills
# until its lease ends, recorded nowhere (`machine down` would find nothing). As the pool
# does after such a launch (actors/pool.py), the machine is told from the account's others
# by a marker: its estimated_duration, the lease a few seconds shorter
# (policy.launch_duration), one no listed machine uses, with its workflow version and server
# type (policy.matches_intent). A listing taken before the launch rules out every machine
# that already existed; listings for LAUNCH_LAND_GRACE after the lost answer look for the
# new one, which is then adopted (waited for, recorded, stopped if it never gets Ready).
async def launch_or_find(
    rc: Any,
    version: str,
    server_type: str,
    lease: int,
    *,
    say: Callable[[str], None],
    grace: float | None = None,
    interval: float = 5.0,
    draw: Callable[[], float] = random.random,
    record: Callable[[PendingLaunch | None], None] | None = None,
) -> tuple[Any, str]:
    """``POST /servers`` for a ``lease``-second machine: (the server, "launched"); if its
    answer was lost, (the server it started, "found the launched") once a listing shows it,
    or :class:`LaunchError` if none did within ``grace`` seconds (default
    ``LAUNCH_LAND_GRACE``). ``record``: given the launch (with its marker) before the POST,
    again with the server's id once known, None once refused (nothing launched): ``machine
    up`` keeps it on disk, so that an interruption in between leaves it findable."""
    from conjure_actors.clients.errors import ClientError, LaunchError, OutcomeUnknownError
    from conjure_actors.domain import machines_policy as policy
    from conjure_actors.domain.state import LaunchRequest

    if grace is None:
        grace = policy.LAUNCH_LAND_GRACE

    before = await rc.list_servers()
    known = {s.server_id for s in before}
    duration = policy.launch_duration(
        lease, taken=[s.estimated_duration for s in before if s.estimated_duration], draw=draw()
    )
    launch = PendingLaunch(
        server_type=server_type,
        workflow_version=version,
        estimated_duration=duration,
        known_server_ids=sorted(known),
        requested_at=time.time(),
    )
    if record is not None:
        record(launch)
    try:
        server = await rc.launch(version, server_type, duration)
        if record is not None:
            record(attrs.evolve(launch, server_id=server.server_id))
        return server, "launched"
    except OutcomeUnknownError as exc:
        say(
            f"{exc}; looking for the machine it may have started"
            f" (up to {grace:g} s, so that it does not bill unrecorded)..."
        )
    except ClientError:  # refused: nothing was launched
        if record is not None:
            record(None)
        raise
    intent = LaunchRequest(
        request_key="machine-up",
        server_type=server_type,
        workflow_version=version,
        estimated_duration=duration,
        max_jobs=1,
        at=0.0,
    )
    with trio.move_on_after(grace):
        while True:
            try:
                listed = await rc.list_servers()
            except ClientError as exc:  # the API is having a bad moment: list again
                say(f"listing machines failed ({exc}); trying again")
                listed = []
            for s in sorted(listed, key=lambda s: s.server_id):
                if (
                    s.server_id not in known
                    and s.status not in policy.GONE_STATUSES
                    and policy.matches_intent(
                        intent,
                        server_type=s.server_type,
                        workflow_version_id=s.workflow_version_id,
                        estimated_duration=s.estimated_duration,
                    )
                ):
                    if record is not None:
                        record(attrs.evolve(launch, server_id=s.server_id))
                    return s, "found the launched"
            await trio.sleep(interval)
    raise LaunchError(
        f"the launch's answer was lost and no new {server_type} machine of workflow {version}"
        f" appeared within {grace:g} s: most likely nothing was launched; check RunComfy's"
        " dashboard for a machine you do not know, then run `machine up` again"
    )


async def _look(rc: Any, server_id: str) -> Any:
    """The machine's record (``GET /servers/{id}``), or None once it is gone (404)."""
    from conjure_actors.clients.errors import ServerNotFoundError

    try:
        return await rc.status(server_id)
    except ServerNotFoundError:
        return None


def _up(server: Any) -> str | None:
    """The status of a machine's record if it is still there and not going away."""
    if server is None or server.status in ("Deleting", "Stopping"):
        return None
    return str(server.status)


async def _alive(rc: Any, server_id: str) -> str | None:
    """The machine's status if it is still there and not going away."""
    return _up(await _look(rc, server_id))


async def attachable_dev_machine(config: Config, rc: Any) -> DevMachine | None:
    """For ``run``: the recorded dev machine if it is Ready now and runs the run's workflow
    version, else None. An attached machine carries no version in the pool (it takes a job
    of any): one booted with another workflow would run this run's jobs on the wrong
    workflow, billed, and give the run's version the catalogue of its own."""
    try:
        recorded = read_dev_machine(state_path(config))
    except UsageError:
        return None
    if recorded is None or not recorded.url:
        return None
    version = config.runcomfy.workflow_version
    if version and recorded.workflow_version and recorded.workflow_version != version:
        return None
    return recorded if await _alive(rc, recorded.server_id) == "Ready" else None


def skipped_dev_machine_note(config: Config) -> str | None:
    """Why the recorded dev machine is not attached when its workflow version is not the
    run's (``attachable_dev_machine``): said once, so that a user who booted it for this
    run knows it bills on unused (None: nothing to say)."""
    try:
        recorded = read_dev_machine(state_path(config))
    except UsageError:
        return None
    version = config.runcomfy.workflow_version
    if recorded is None or not version or not recorded.workflow_version:
        return None
    if recorded.workflow_version == version:
        return None
    return (
        f"dev machine {recorded.server_id} runs workflow version {recorded.workflow_version},"
        f" not this run's {version}: not attached (it bills until `machine down`)"
    )
