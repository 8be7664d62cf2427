"""``python -m conjure_actors serve``: the job service (Comfy API v2) over one actor system.

The first line on stdout is the URL it listens on (``--port 0`` picks a free port and prints
the real one); the cloud banner and notices go to stderr. The cloud is chosen as ``run``
chooses it (the embedded simulated cloud without credentials, ``--comfyui-url``, or
RunComfy), through the same config layers. The log (``--log``, default
``runs/serve.log``) holds every job, asset record and claimed key: started again on the same
log, ``serve`` replays it and carries on (running jobs reconciled as ``run --resume`` does,
queued ones run, finished ones readable), from the newest snapshot of its state
(``<log>.snapshots/``, the last two kept) plus the records after it. Asset bytes live beside
the log (``<log>.blobs/``). A ``run``'s log is refused (one line, exit 2): its jobs are
``run --resume``'s, and served they would run unseen by the API.

A full disk under the log does not stop ``serve`` at once: the journal holds its appends and
writes them again (``eventlog``'s hold) for up to ``--disk-full-patience`` seconds; requests
that must log something (a job, an upload, a cancel, a budget) get 507
``insufficient_storage`` meanwhile (reads go on; the health probe says ``degraded``), and
once the disk takes the log again everything goes on, nothing lost. Only a disk that stays
full that long stops ``serve`` (one line; machines stopped), and so does one full during
start-up, at once (nothing is served yet; machines adopted by the reconcile would bill while
it waits, deaf to a signal). ``run`` does not hold: it has no clients to keep, a machine
bills while it would wait, and ``run --resume`` goes on from its log.

SIGTERM/SIGINT: stop accepting new jobs (503; the health probe says ``stopping``), let
running jobs finish for ``--drain-timeout`` seconds, then interrupt the rest, stop every
machine, close HTTP and exit 0. The stop of the machines never waits for a full disk: the
journal stops holding when it begins (a machine would bill meanwhile), so they are stopped
without logging it if the disk is still full. Requests are answered during the drain, so an
open event stream ends with its job's terminal status if the job ends then (else with the status the
job is left in, ``queued`` for the next start: no terminal status, as the contract lets a
client tell).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import gc
import logging
import math
import os
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import trio

from conjure_actors.commands.cloud_args import add_cloud_arguments, cloud_flags, load_cloud_config
from conjure_actors.errors import UsageError

if TYPE_CHECKING:
    from eventlog import SyncPolicy

HELP = "serve the Comfy API v2 job service over HTTP (default http://127.0.0.1:8189)"

DEFAULT_LOG = Path("runs") / "serve.log"

SNAPSHOT_EVERY = 20_000
"""The journal writes the state to ``<log>.snapshots/`` every this many events: a restart
reads the newest snapshot and folds at most this many records after it, not the whole log."""
KEEP_SNAPSHOTS = 2
"""Snapshots kept (the newest; older ones are deleted as each new one is written)."""
DISK_FULL_PATIENCE = 120.0
"""``--disk-full-patience``: seconds the journal holds its appends on a full disk (new work
507) before ``serve`` stops as it would have at once without the hold. Meanwhile the
machines' own decisions wait too (an idle stop or a lease renewal is logged before it is
sent): the default keeps that under the default idle timeout (120 s) and well under the
lease renewal margin (180 s), so a hold adds at most its patience to an idle machine's bill
and never lets a busy machine's lease run out."""
SYNC_CHOICES = ("batch", "always", "none")
"""``--journal-sync``: the journal's sync policies (``eventlog.SyncPolicy``)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8189, help="port (0: pick a free one)")
    parser.add_argument(
        "--token",
        default=os.environ.get("CONJURE_TOKEN") or None,
        help="bearer token clients must send (default: $CONJURE_TOKEN; required off loopback)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call the service (repeatable; '*' is refused)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name answered besides loopback ones, e.g. a local reverse proxy's"
        " (repeatable). Without a token any other Host is refused (403), against DNS"
        " rebinding; with one, Host is free unless this is given",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        action="append",
        default=[],
        metavar="IPS",
        help="reverse proxies (comma-separated addresses or networks, e.g. 127.0.0.1,::1)"
        " whose X-Forwarded-Proto/-Host (or Forwarded) set the scheme and host of the URLs"
        " in responses; ignored from other peers. The forwarded host must pass the Host"
        " check too (--allowed-host)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=8.0, help="largest JSON request body, in MB"
    )
    parser.add_argument(
        "--log", metavar="PATH", help=f"event log of serve (default {DEFAULT_LOG}; not a run's)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="out",
        help="job outputs go to DIR/<job>/, removed when the job expires (--retention)",
    )
    add_cloud_arguments(parser)
    parser.add_argument(
        "--max-queue", type=int, default=1000, help="jobs queued or running at most (then 429)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=100.0, help="largest asset upload, in MB"
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=7 * 86400.0,
        metavar="S",
        help="seconds a job and its outputs stay readable after it ends, and an uploaded"
        " asset after its upload (or after the last job using it ends; default 7 days)",
    )
    parser.add_argument(
        "--journal-sync",
        choices=SYNC_CHOICES,
        default="batch",
        help="when a submission is durable before its 201: 'batch' (default) fsyncs it"
        " (shared by concurrent ones), 'always' fsyncs every append alone, 'none' hands it"
        " to the OS unsynced (survives a crash of serve, not a power loss)",
    )
    parser.add_argument(
        "--disk-full-patience",
        type=float,
        default=DISK_FULL_PATIENCE,
        metavar="S",
        help="when the disk of the log is full, seconds to wait for space (new jobs get 507"
        f" meanwhile) before serve stops (default {DISK_FULL_PATIENCE:g}; 0: stop at once)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds running jobs may take to finish before they are interrupted",
    )


def _config(args: argparse.Namespace) -> Any:
    from conjure_actors.commands.validate import check_comfyui_url

    config = load_cloud_config(args.config, cloud_flags(args))
    if config.comfyui_url:  # as run: a bad URL (or a token in its query) said in one line
        check_comfyui_url(config.comfyui_url)
    return config


def _settings(args: argparse.Namespace) -> Any:
    from conjure_actors.actors.assets import Retention
    from conjure_actors.service.app import Settings

    if args.max_queue < 1:
        raise UsageError("--max-queue must be at least 1")
    if args.max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    if args.retention < 60:
        raise UsageError("--retention must be at least 60 seconds")
    return Settings(
        max_queue=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        retention=Retention(jobs=args.retention, assets=args.retention),
    )


def build_app(service: Any, args: argparse.Namespace) -> Any:
    """The ASGI app ``serve`` runs (routes and middleware beyond the v2 ones go here)."""
    from conjure_actors.service.app import create_app
    from conjure_actors.service.extras import extras_for, metrics_lifespan

    extras = extras_for(service, _security(args, service.settings.max_upload_bytes))
    app = create_app(service, routes=extras.routes, middleware=extras.middleware, debug=False)
    app.router.lifespan_context = metrics_lifespan(extras.metrics, service)
    app.state.metrics = extras.metrics
    return app


def _security(args: argparse.Namespace, max_upload_bytes: int) -> Any:
    """Token, CORS origins, body limits, Host names and proxies (``--token``,
    ``--cors-origin``, ``--max-body-mb``, ``--allowed-host``, ``--forwarded-allow-ips``)."""
    from conjure_actors.service.security import SecuritySettings

    if args.max_body_mb <= 0:
        raise UsageError("--max-body-mb must be positive")
    return SecuritySettings(
        token=args.token,
        cors_origins=tuple(args.cors_origin),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_upload_bytes=max_upload_bytes,
        allowed_hosts=tuple(args.allowed_host),
        forwarded_allow_ips=tuple(args.forwarded_allow_ips),
    )


def _check_port(host: str, port: int) -> None:
    """``--host`` and ``--port`` said wrong in one clear line before anything starts (no
    cloud, no log): a host name that does not resolve, an address that is not this
    machine's, a port that is taken (port 0 is probed too: a wrong host is found as well)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:  # socket.gaierror; a name IDNA cannot encode
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(
            f"--host {host}: cannot resolve it ({why}): give an address or a host name of"
            " this machine (default 127.0.0.1)"
        ) from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise UsageError(
                    f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another"
                    " --port (0: any free one)"
                ) from None
            raise UsageError(
                f"--host {host}: cannot listen there ({exc.strerror or exc}): give an address"
                " of this machine (default 127.0.0.1)"
            ) from None


def _check_flags(args: argparse.Namespace) -> None:
    """The numbers and the token ``serve`` takes, refused in one line before it starts."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: use a port from 0 to 65535 (0: any free one)")
    for flag in ("max_body_mb", "max_upload_mb", "retention"):  # their own checks follow
        value = getattr(args, flag)
        if not math.isfinite(value):
            raise UsageError(f"--{flag.replace('_', '-')} {value:g}: give a finite number")
    if not math.isfinite(args.drain_timeout) or args.drain_timeout < 0:
        raise UsageError(
            f"--drain-timeout {args.drain_timeout:g}: use a number of seconds >= 0 (default 30)"
        )
    patience = args.disk_full_patience
    if not math.isfinite(patience) or patience < 0:
        raise UsageError(
            f"--disk-full-patience {patience:g}: use a number of seconds >= 0"
            f" (default {DISK_FULL_PATIENCE:g}; 0: stop at once)"
        )
    if args.token is not None and not (args.token and all("!" <= c <= "~" for c in args.token)):
        raise UsageError(  # never the value: it is the token
            "--token (or CONJURE_TOKEN) is blank or holds whitespace or a character that is not"
            " printable ASCII: every client would be refused; give the token alone"
        )


def main(args: argparse.Namespace) -> int:
    from conjure_actors.commands.live_copy import (
        refuse_a_copy_being_written,
        refuse_a_live_writers_copy,
    )
    from conjure_actors.commands.run import (
        _check_budget,
        check_log_path,
        check_out_dir,
        one_line_error,
        stopped_error,
    )
    from conjure_actors.config import require_priced_server_type
    from conjure_actors.service.security import check_bind

    _check_flags(args)
    check_bind(args.host, args.token)
    if getattr(args, "debug", False):  # an unexpected error's traceback (service/errors.py)
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("conjure_actors.service").setLevel(logging.DEBUG)
    _security(args, 0)  # a bad --cors-origin or --max-body-mb fails before the log opens
    _check_port(args.host, args.port)
    config = _config(args)
    settings = _settings(args)
    if config.mode != "comfyui":
        require_priced_server_type(config)
    _check_budget(config)
    log_path = Path(args.log) if args.log else DEFAULT_LOG
    # A copy of a log another serve of this host still writes (its machines are that
    # serve's): refused before anything is made or asked of the cloud. The log is read
    # here once (snapshot + tail), for that check, the cloud's and the journal's start.
    what = f"--log {shlex.quote(str(log_path))}"
    instead = "start serve on an empty --log"
    refuse_a_copy_being_written(log_path, what, instead)
    logged = _read_log(log_path)
    if logged is not None:
        refuse_a_live_writers_copy(logged.state, what, instead)
    check_out_dir(Path(args.out))  # as run: before the log, not after a paid job
    # Not a log, or not writable: one line, exit 2 (an existing one: how to fix it, not
    # "pick another path": it holds the service's jobs, assets and machines).
    check_log_path(log_path, "--log", again="serve --log")
    try:
        return trio.run(_main, args, config, settings, log_path, logged)
    except BaseException as exc:  # one line, as run says it (a traceback only with --debug)
        if getattr(args, "debug", False):
            raise
        raise stopped_error(exc, log_path, "serve") or one_line_error(exc) from None


def _read_log(log_path: Path) -> Any:
    """The log at ``log_path`` folded (``run.read_log``: from its newest snapshot), or None:
    none there, it cannot be read, or another process writes it (the checks and the
    journal that follow say why, in one line)."""
    import eventlog
    from conjure_actors.commands.run import read_log

    try:
        if not log_path.is_file() or eventlog.being_written(log_path):
            return None
    except OSError:
        return None
    return read_log(log_path, _note)


@attrs.frozen
class Served:
    """A running service: its URL, the service object and the cloud banner."""

    url: str
    service: Any
    banner: str
    stop_http: trio.Event


@asynccontextmanager
async def open_serve(
    config: Any,
    *,
    log_path: Path,
    out_dir: Path,
    settings: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    app_factory: Callable[[Any], Any] | None = None,
    wall: Any = None,
    cloud: Callable[[Any], Any] | None = None,
    sync: SyncPolicy = "batch",
    hold_resumed: Callable[[], bool] | None = None,
    disk_full_patience: float = DISK_FULL_PATIENCE,
    logged: Any = None,
) -> AsyncIterator[Served]:
    """The whole of ``serve`` but the signals: the cloud (as ``run`` chooses it), the
    journal, the runtime and the AssetActor, and the HTTP server. Leaving the block stops
    the HTTP server and shuts the runtime down in order (jobs interrupted, machines
    stopped). ``wall``: the runtime's wall clock (tests move it to pass a retention).
    ``cloud``: ``config -> async context of (config, mode, http, ws_connect, banner)``, the
    cloud to run on (default: as ``run`` chooses it; tests pass a faster simulated one).
    ``sync``: the journal's sync policy (``--journal-sync``). ``hold_resumed``: True once
    serving is to stop before it began (a signal during start-up): the unfinished jobs of
    the log are then not started again (``open_conjure``'s), so launch no machine.
    ``disk_full_patience``: seconds the journal holds its appends on a full disk, once
    start-up is done (``--disk-full-patience``; 0: none). Leaving the block ends a hold at
    once: the shutdown that follows stops the machines without waiting for the disk.
    ``logged``: the log as ``run.read_log`` read it (its state at its last seq; None: read
    here): the cloud's checks and the journal start from it, not from a second read."""
    import eventlog
    from conjure_actors.clock import SystemWallClock
    from conjure_actors.commands.cloud_args import version_catalogue
    from conjure_actors.commands.live_copy import holding_the_logs_identity
    from conjure_actors.commands.run import (
        _cloud,
        _dev_machine,
        refuse_log_of_the_other_command,
        refuse_runcomfy_log_elsewhere,
        serve_data_dir,
    )
    from conjure_actors.domain.events import UPCASTERS, Event
    from conjure_actors.domain.state import apply, initial_state
    from conjure_actors.service.app import create_app, open_service, serve_app

    wall = wall or SystemWallClock()
    log: Any = (log_path, f"--log {log_path}")
    if logged is not None:
        log = (*log, logged.state)
    opened = cloud(config) if cloud is not None else _cloud(config, log)
    async with opened as (config, mode, http, ws_connect, banner):
        attach: dict[str, str] = {}
        catalog = None
        if mode == "runcomfy":
            dev = await _dev_machine(config)
            if dev is not None:
                attach[dev.server_id] = dev.url
            else:
                from conjure_actors.commands.machine import skipped_dev_machine_note

                if (skipped := skipped_dev_machine_note(config)) is not None:
                    _note(skipped)
            catalog = await trio.to_thread.run_sync(_runcomfy_catalog, config)
        async with eventlog.open_journal(
            log_path,
            Event,
            sync=sync,
            apply=apply,
            initial=logged.state if logged is not None else initial_state(),
            initial_seq=logged.last_seq if logged is not None else 0,
            clock=wall.now,
            snapshot_every=SNAPSHOT_EVERY,
            keep_snapshots=KEEP_SNAPSHOTS,
            upcasters=UPCASTERS,
        ) as journal:
            what = f"--log {shlex.quote(str(log_path))}"
            refuse_log_of_the_other_command(journal.state, "serve", what, log_path)
            refuse_runcomfy_log_elsewhere(journal.state, mode, what)
            # (the lock of the log's identity, which its copies share: held as the
            # journal's, from its first record; a copy's writer found now refused)
            instead = "start serve on an empty --log"
            with holding_the_logs_identity(journal, log_path, what, instead):
                async with (
                    open_service(
                        config,
                        journal=journal,
                        data_dir=serve_data_dir(log_path),
                        settings=settings,
                        catalog=catalog,
                        history=functools.partial(eventlog.read, log_path, Event),
                        http=http,
                        ws_connect=ws_connect,
                        wall=wall,
                        out_dir=out_dir,
                        mode=mode,
                        attach=attach,
                        prompt_check=version_catalogue(config, _note),
                        hold_resumed=hold_resumed,
                        # the embedded simulated cloud began with this process: a resumed log's
                        # launches in flight went to one that ended with the run that made them
                        fresh_cloud=mode == "simulated" and cloud is None,
                    ) as service,
                    trio.open_nursery() as nursery,
                ):
                    # Held only from here, once start-up is done: a full disk during start-up
                    # (its reconcile may adopt paid machines; a signal then waits for it to end)
                    # stops serve at once, as before.
                    if disk_full_patience:
                        journal.start_holding(disk_full_patience)
                    stop_http = trio.Event()
                    app = (app_factory or create_app)(service)
                    url = await nursery.start(
                        functools.partial(
                            serve_app,
                            app,
                            host=host,
                            port=port,
                            shutdown=stop_http,
                            # the drain began: every answer says Connection: close (QA10 F9)
                            closing=lambda: not service.accepting,
                        )
                    )
                    try:
                        yield Served(url, service, banner, stop_http)
                    finally:
                        service.accepting = False
                        service.stopping.set()
                        stop_http.set()
                        journal.stop_holding()  # the shutdown (open_service's) must not wait


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def budget_lines(stream: TextIO) -> Callable[[list[Any]], None]:
    """A journal listener that writes to ``stream`` the line ``run`` shows for each budget
    event logged (the warning, the excess, a launch's or a renewal's refusal: that one
    once until one of its kind is granted or the budget is set again, not per job)."""
    from conjure_actors.commands.run import budget_notice

    def on_records(records: list[Any]) -> None:
        for record in records:
            if (line := budget_notice(record.event)) is not None:
                # A terminal gone: the log has the line; serving goes on.
                with contextlib.suppress(OSError):
                    print(line, file=stream, flush=True)

    return on_records


def _runcomfy_catalog(config: Any) -> Any:
    """The node catalogue of the RunComfy workflow version, when one was recorded (``machine
    up`` of that version records it) or a dev machine of it answers: submissions are then
    checked strictly against it. None: structure only (the machine's ComfyUI validates)."""
    from conjure_actors.commands.validate import runcomfy_target

    target = runcomfy_target(config)
    return target.catalog if target.strict else None


async def _main(
    args: argparse.Namespace, config: Any, settings: Any, log_path: Path, logged: Any = None
) -> int:
    from conjure_actors.commands.run import unknown_machine_notes

    # Held from start to exit, over open_serve's closing too (as ``run`` holds its own): a
    # second SIGTERM/SIGINT during the drain or the stop of every machine must not kill
    # the process at its default action with machines left billing. One during start-up
    # is taken at once: the log's unfinished jobs are then not started again (no machine
    # launched only to be stopped), and serving stops as soon as start-up is done (after
    # its reconcile, whose adopted machines are stopped too).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as closing:
            early: list[int] = []
            start_up = trio.CancelScope()
            watched = trio.Event()
            closing.start_soon(_first_signal_during_start_up, signals, early, start_up, watched)
            async with open_serve(
                config,
                log_path=log_path,
                out_dir=Path(args.out),
                settings=settings,
                host=args.host,
                port=args.port,
                app_factory=lambda service: build_app(service, args),
                sync=args.journal_sync,
                hold_resumed=lambda: bool(early),
                disk_full_patience=args.disk_full_patience,
                logged=logged,
            ) as served:
                start_up.cancel()
                await watched.wait()  # one task at a time iterates the signals
                service = served.service
                # The replayed state (every retained job) lives as long as the process: out
                # of the cyclic GC's view, each full collection stops walking it again. On a
                # log of 10,000 jobs, 1,000 more jobs spent 176-298 ms in full collections,
                # 23-44 ms frozen (~0.2 ms of CPU per job).
                gc.freeze()
                print(f"serving the Comfy API v2 on {served.url}", flush=True)
                print(served.banner, file=sys.stderr, flush=True)
                for _, line in unknown_machine_notes(service.conjure):
                    _note(line)
                with service.conjure.journal.listen(budget_lines(sys.stderr)):
                    left = await _stop_on_signals(
                        signals,
                        first=early[0] if early else None,
                        drain_timeout=args.drain_timeout,
                        stop_accepting=functools.partial(_stop_accepting, service),
                        drain=functools.partial(_drain, service),
                        shutdown=functools.partial(shut_down, service),
                        held=lambda: service.held_since is not None,
                    )
                closing.start_soon(_while_closing, signals)
            closing.cancel_scope.cancel()
    if left:
        print("machines that may still be running: " + ", ".join(left), file=sys.stderr)
    _say(closing_line(service.state, log_path))
    return 0


def closing_line(state: Any, log_path: Path) -> str:
    """serve's last line: what its log holds now (the jobs by outcome, those left for the
    next start) and what was spent, with the command that says more (``run`` ends with its
    summary; serve ended without a word on either)."""
    import shlex

    from conjure_actors.actors.view import of_budget
    from conjure_actors.commands.status import served_summary
    from conjure_actors.domain import service_events as se
    from conjure_actors.domain import state as st
    from conjure_actors.domain.prices import format_usd

    s = served_summary(state)  # (a job whose outputs were not stored: failed, as the API says)
    jobs = f"{s.jobs} jobs ({s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled"
    if s.unfinished:
        # Those whose extra_data was in memory only and whose prompt was not sent: the next
        # start fails them (service_events.not_resumable); the operator hears it now.
        lost = sum(
            1
            for job in state.jobs.values()
            if job.status in st.RESUMABLE_STATUSES and se.not_resumable(state, job) is not None
        )
        if not lost:
            jobs += f", {s.unfinished} unfinished: the next serve --log on this log runs them"
        else:
            runs = f"runs {s.unfinished - lost} and " if s.unfinished > lost else ""
            jobs += (
                f", {s.unfinished} unfinished: the next serve --log on this log {runs}fails"
                f" {lost} not_resumable (their extra_data was in this server's memory only:"
                " their clients must submit them again)"
            )
    jobs += ")"
    cost = format_usd(s.cost_micros) + of_budget(s.budget_micros, exceeded=s.budget_exceeded)
    log = shlex.quote(str(log_path))
    return f"serve stopped: {jobs}; cost {cost}; python -m conjure_actors status {log} says more"


async def _first_signal_during_start_up(
    signals: AsyncIterator[int],
    early: list[int],
    start_up: trio.CancelScope,
    watched: trio.Event,
) -> None:
    """Take a signal that comes during start-up (until ``start_up`` is cancelled) into
    ``early``: start-up then starts no unfinished job of the log again, and serving stops
    once it is up (:func:`_stop_on_signals` is given it as its first signal). ``watched``
    is set once this no longer reads ``signals``."""
    try:
        with start_up:
            async for signum in signals:
                early.append(signum)
                _say(
                    f"{signal.Signals(signum).name}: stopping once start-up is done;"
                    " unfinished jobs are left in the log for the next start"
                )
                return
    finally:
        watched.set()


async def _while_closing(signals: AsyncIterator[int]) -> None:
    """Signals once the machines' stop is over, while the log and the server close."""
    async for signum in signals:
        _say(f"{signal.Signals(signum).name}: machines stopped; closing the log")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _stop_on_signals(
    signals: AsyncIterator[int],
    *,
    first: int | None = None,
    drain_timeout: float,
    stop_accepting: Callable[[], None],
    drain: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[list[str]]],
    held: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Wait for a first signal (``first``: one came already, during start-up); then no new
    jobs, the running ones get ``drain_timeout`` s, and every machine is stopped
    (``shutdown``'s answer: those that may still run). Signals keep coming here meanwhile:
    a second one cuts the drain short; later ones are answered with a line, never by
    skipping the machines' stop. ``held()``: the journal holds its appends (a full disk):
    no job can go on, so the drain ends at once (``drain`` sees it), and the line says so."""
    if first is None:
        async for _ in signals:
            break
    if held():
        _say(
            "stopping: the disk of the log is full: no drain (no job can go on); every"
            " machine stops now"
        )
    else:
        _say(
            "stopping: no new jobs; running jobs get "
            f"{drain_timeout:g} s to finish, then machines stop (a second signal cuts the"
            " drain short)"
        )
    stop_accepting()
    draining = trio.CancelScope(deadline=trio.current_time() + drain_timeout)

    async def watch() -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not draining.cancel_called:
                _say(f"{name} again: drain cut short; stopping every machine now")
                draining.cancel()
            else:
                _say(
                    f"{name}: still stopping every machine; waiting for it (a machine left"
                    " running bills until its lease ends)"
                )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        with draining:
            await drain()
        draining.cancel()  # from here on, a signal is answered with the line above
        left = await shutdown()
        nursery.cancel_scope.cancel()
    return left


async def shut_down(service: Any) -> list[str]:
    """After the drain: every machine stopped (``Conjure.shutdown``'s answer: those that may
    still run). The journal holds no more first: on a full disk, the events of the stop
    (jobs interrupted, ``MachineStopping``) would wait for the disk up to the patience while
    the machines bill; they fail at once instead, and the shutdown stops the machines without
    logging it (and says so), as it does on a disk that stays full."""
    service.journal.stop_holding()
    left: list[str] = await service.conjure.shutdown("interrupted")
    return left


def _stop_accepting(service: Any) -> None:
    """The drain begins: no new jobs (503, the health probe says ``stopping``). HTTP stays
    up until the machines are stopped (open_serve's exit closes it): an open event stream
    ends with its job's terminal status when the job ends during the drain (it was closed
    at once, the job's end unsent), else with its status when serving stops."""
    service.accepting = False


async def _drain(service: Any) -> None:
    """Return once no job runs on a machine (queued ones stay queued for the next start).
    The unfinished jobs a start-up stopped by a signal left as the log has them (``held``)
    have no actor: running in the log, they run nowhere, so they are not waited for."""
    from conjure_actors.domain import state as st

    held = service.conjure.held

    def running() -> bool:
        return any(
            j.status in (st.RUNNING, st.RETRYING) and j.job_id not in held
            for j in service.state.jobs.values()
        )

    async with service.journal.subscribe(max_buffer=math.inf) as records:
        while running() and service.held_since is None:
            # A full disk holding the journal (no job can log its progress): the machines
            # are stopped now, not after the drain, as they would bill meanwhile.
            with trio.move_on_after(1.0):
                await records.receive()
