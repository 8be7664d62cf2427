"""``python -m conjure_actors status``: what is running, and what it costs.

- ``--comfyui-url URL``: that ComfyUI's system stats and queue;
- with RunComfy credentials and no LOG (or ``--account``): the account's machines, each
  with its status and cost so far (from the server's ``service_ready_at`` and the price
  table);
- ``LOG`` (or, with no cloud to ask, the newest ``./runs/*.log``): the run recorded there,
  replayed, and nothing else (no request to RunComfy: a check of a healthy log does not fail
  when the account is rate limited, nor spend the rate limit a serve needs): jobs by status
  (a job whose outputs could not be stored counts failed, as the API reads it), machines
  and the bill (as ``replay`` bills it: a machine still running at the log's last record
  costs what it had cost by then); and whether a process is writing the log now (its pid:
  the process that holds the log's lock), or its run did not stop and nothing writes it (a
  crash or a kill: what finishes it is said). A log that cannot be read is said, then the
  account's machines are listed if credentials are set (which bill is what matters then).

Machine URLs are never printed (they are capabilities): machines are named by server id.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

from conjure_actors.config import Config, load_config, require_both_credentials
from conjure_actors.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from conjure_actors.actors.view import Summary

HELP = "summarize a run log; or a ComfyUI's queue, the RunComfy account's machines and cost"

BILLING_OVER = frozenset({"Deleting", "Stopping"})
"""RunComfy statuses of a machine whose billing is over (a ``DELETE`` answered 200 ends it;
``Stopping``: one its lease or RunComfy stopped) though it is still listed."""


SHOWN_UNIT = 100
"""Micro-dollars in the last place a cost is shown in (``format_usd``'s 4 decimals)."""


def shown_shares(costs: list[int]) -> list[int]:
    """The machines' costs (micro-dollars) as shown beside their total: whole
    :data:`SHOWN_UNIT` s that add up to the total shown (their exact sum rounded half up, as
    ``format_usd`` rounds it, and as ``run``'s summary and ``replay`` show it).

    Each cost rounded on its own would not add up (three machines of $0.000275 show $0.0003
    each, under a total of $0.0008): each is rounded down, and the units the total has more
    than their sum go one each to the largest remainders (the first of equal ones, in the
    order listed). So each share is within one unit of its cost."""
    total_units = (sum(costs) + SHOWN_UNIT // 2) // SHOWN_UNIT
    shares = [cost // SHOWN_UNIT for cost in costs]
    left = total_units - sum(shares)
    by_remainder = sorted(range(len(costs)), key=lambda i: -(costs[i] % SHOWN_UNIT))
    for i in by_remainder[:left]:
        shares[i] += 1
    return [units * SHOWN_UNIT for units in shares]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "log",
        nargs="?",
        metavar="LOG",
        help="a run log to summarize: the log alone, no request to RunComfy (--account adds"
        " the account's machines)",
    )
    parser.add_argument("--comfyui-url", metavar="URL", help="a ComfyUI to ask")
    parser.add_argument(
        "--account",
        action="store_true",
        help="list the RunComfy account's machines and their cost (without LOG, the default"
        " when credentials are set): up to 5 requests on the account's rate limit, which a"
        " running serve shares",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config (default ./conjure.toml)")


def main(args: argparse.Namespace) -> int:
    flags = {"comfyui_url": args.comfyui_url}
    sources: dict[str, str] = {}
    try:
        config = load_config(
            config_file=args.config, flags=flags, sources=sources, pool_checked=False
        )
    except ConfigError as exc:  # a bad --comfyui-url said by its flag, as run says it
        from conjure_actors.commands.cloud_args import _named_by_flag

        raise _named_by_flag(exc, flags) from None
    if args.account or not args.log:  # (a log alone asks no account: half a set is no matter)
        require_both_credentials(config.runcomfy, sources)  # half a set: said in one line
    if args.account and not config.runcomfy.configured:
        raise UsageError(
            "--account: no RunComfy credentials: set RUNCOMFY_USER_ID and RUNCOMFY_API_TOKEN"
            " (or [runcomfy] user_id and api_token in the config file)"
        )
    # ``status LOG`` summarizes the log alone: a check (``status LOG || alert``) or a
    # ``watch`` of it must not fail when the account is rate limited, nor spend the account's
    # 1 request/s that a serve on it needs for its polls, renewals and stops (QA11 F3). The
    # account and a ComfyUI are asked for with LOG only when named: --account, --comfyui-url.
    comfyui = (args.comfyui_url and config.comfyui_url) if args.log else config.comfyui_url
    account = args.account or (not args.log and config.runcomfy.configured)
    if comfyui:  # as run: a bad URL (or a token in its query) said in one line
        from conjure_actors.commands.validate import check_comfyui_url

        check_comfyui_url(comfyui)
    shown = False
    cloud = bool(comfyui or account)
    code = 0
    if args.log or not cloud:
        from conjure_actors.commands.replay_impl import ReplayError

        log = Path(args.log) if args.log else _newest_log()
        if log is not None:
            try:
                _show_log(log)
            except (UsageError, ReplayError) as exc:
                if not (cloud or config.runcomfy.configured):
                    raise
                # A damaged (or missing) log: the account's machines are what its user
                # needs most now (which bill?), so they are listed all the same; the log's
                # problem is said first, and the exit is still its own (QA H3b).
                code = 2 if isinstance(exc, UsageError) else 1
                print(f"error: {exc}", file=sys.stderr)
                account = config.runcomfy.configured
                cloud = True
            shown = True
    if cloud:
        trio.run(functools.partial(_show_cloud, config, comfyui=comfyui or None, account=account))
        shown = True
    if code:
        return code
    if not shown:
        print(
            "nothing to show: no run log under ./runs/, no --comfyui-url and no RunComfy "
            "credentials (RUNCOMFY_USER_ID, RUNCOMFY_API_TOKEN)"
        )
    return 0


def _newest_log() -> Path | None:
    logs = sorted(Path("runs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


def _show_log(path: Path) -> None:
    import eventlog
    from conjure_actors.actors.view import of_budget
    from conjure_actors.commands.replay_impl import (
        ReplayError,
        a_directory_error,
        billed_by,
        newer_log_error,
    )
    from conjure_actors.domain.cost_policy import unanswered_stops, unknown_ends
    from conjure_actors.domain.describe import machine_kind, machine_status
    from conjure_actors.domain.events import UPCASTERS, Event
    from conjure_actors.domain.prices import format_usd
    from conjure_actors.domain.service_events import served_status
    from conjure_actors.domain.state import apply, initial_state

    if path.is_dir():  # (in replay's words, as a missing file is)
        raise a_directory_error(str(path))
    try:
        found = eventlog.inspect(path)
    except OSError as exc:
        raise UsageError(f"cannot read run log {path}: {exc.strerror or exc}") from None
    if found.state in ("missing", "newer-version", "corrupt"):  # as replay says them (its
        # message names the log and what to do: no "cannot read run log" before it)
        if found.state == "corrupt":  # a damaged log exits 1, as replay's (documented)
            raise ReplayError(found.message)
        raise UsageError(found.message)
    if not path.is_file():
        raise UsageError(f"no run log at {path} (not a regular file): pass a log file's path")
    if found.state in ("empty", "header-only"):  # as replay says it: not a run of 0 jobs
        raise UsageError(f"{found.message}: no run to show")
    if found.state == "torn":  # as replay warns of it: its last record was lost in a crash
        print(
            f"warning: {path}: torn tail at offset {found.offset} (a crash mid-append);"
            f" showing the run as of the {found.last_seq} complete records before it",
            file=sys.stderr,
        )
    # Asked before the log is read: a run that ends while it is read was not a crash.
    live = eventlog.being_written(path)
    try:
        state = eventlog.fold(
            eventlog.read(path, Event, upcasters=UPCASTERS), apply, initial_state()
        )
    except eventlog.UnknownEventError as exc:  # as replay says it
        raise newer_log_error(path, exc) from exc
    except eventlog.NotALogError as exc:  # a foreign file, or one this user may not read
        raise UsageError(str(exc)) from None
    except eventlog.EventLogError as exc:
        raise UsageError(f"cannot read log {path}: {exc}") from None
    s = served_summary(state)
    print(f"{_log_kind(state)} {path}: {_run_status(path, state, live=live)}")
    print(
        f"  jobs: {s.jobs} ({s.succeeded} succeeded, {s.failed} failed, {s.cancelled} "
        f"cancelled, {s.unfinished} unfinished)"
    )
    for job in state.jobs.values():
        why = job_failure(job, state)
        if why is not None:
            print(f"  job {job.job_id}: {served_status(state, job)}: {why}")
    # The bill as replay shows it (its ``billed``, as of the last record): a machine still
    # running there (a crashed run) has cost more than its last accrual, maybe nothing yet.
    billed = billed_by(state, state.last_at)
    machines = list(state.machines.values())
    shares = shown_shares([billed[m.server_id] for m in machines])  # add up to the total
    unanswered = {u.server_id: u for u in unanswered_stops(state)}
    unknown = {u.server_id: u for u in unknown_ends(state)}
    for m, share in zip(machines, shares, strict=True):
        status = machine_status(m)  # with "draining (why)", as replay shows it
        kind = machine_kind(m, state.system.mode)  # "simulated" as the run's summary says
        u = unanswered.get(m.server_id)
        cost = format_usd(share) if u is None else _unanswered_cost(format_usd(share), u)
        if m.server_id in unknown:
            cost = _unknown_end_cost(format_usd(share), unknown[m.server_id])
        print(f"  machine {m.server_id} ({kind}): {status}, {cost}")
    total = sum(billed.values())
    accrued = f" (the ledger accrued {format_usd(s.cost_micros)})" if total != s.cost_micros else ""
    budget = of_budget(s.budget_micros, exceeded=s.budget_exceeded)  # as run's summary says it
    at_most = "at most " if s.cost_at_most else ""  # (as the run's summary says it)
    print(f"  cost: {at_most}{format_usd(total)}{budget}{accrued}")


def _unknown_end_cost(cost: str, u: Any) -> str:
    """A machine's cost as ``status LOG`` shows it when a resume found it gone with no stop
    of it in the log (``cost_policy.UnknownEnd``): the most it can have cost."""
    to = "its lease's end" if u.upto == "lease_end" else "when the resume found it gone"
    return (
        f"at most {cost} (gone while the run was down, no stop of it in the log: billed to"
        f" {to}; stopped without logging it, as on a full disk, it cost less; RunComfy's"
        " bill is exact)"
    )


def _unanswered_cost(cost: str, u: Any) -> str:
    """A machine's cost as ``status LOG`` shows it when its stop was not answered before
    the run went down and the resume found it gone (``cost_policy.UnansweredStop``): what
    its figure is, in the words of the resume's line; RunComfy's bill is the exact one."""
    from conjure_actors.domain.machines_policy import STOP_SETTLE
    from conjure_actors.domain.prices import format_usd

    head = "its stop not answered before the run went down"
    if u.upto == "lease_end":
        likely = (
            ""
            if u.at_decision_micros is None
            else f"; if its DELETE left in time, about {format_usd(u.at_decision_micros)}"
        )
        return (
            f"at most {cost} ({head}: billed to its lease's end{likely}; RunComfy's bill is exact)"
        )
    if u.upto == "settle":
        return (
            f"{cost} ({head}, gone before its lease's end: billed {STOP_SETTLE:g} s past"
            " that stop; RunComfy's bill is exact)"
        )
    return f"{cost} ({head}: billed to when the resume found it gone; RunComfy's bill is exact)"


def _is_serves(state: Any) -> bool:
    """A log ``serve`` wrote: its jobs, assets or keys came through the API (as
    ``refuse_log_of_the_other_command`` tells the two apart)."""
    service = state.service
    return bool(service.api_jobs or service.assets or service.idempotency)


def _log_kind(state: Any) -> str:
    return "serve log" if _is_serves(state) else "run log"


def _stopped_by_a_signal(path: Path, state: Any) -> str:
    """A log whose last start stopped on SIGTERM/SIGINT: what is left, and what takes it
    up (a serve drained and left its queued jobs for its next start, ``serve --log``)."""
    import shlex

    from conjure_actors.domain import state as st

    left = sum(1 for j in state.jobs.values() if j.status in st.RESUMABLE_STATUSES)
    log = shlex.quote(str(path))
    if not _is_serves(state):
        if not left:
            return "interrupted (every job had ended)"
        return f"interrupted ({left} unfinished job(s): `run --resume {log}` finishes them)"
    if not left:
        return "stopped by SIGTERM or Ctrl-C (every job had ended)"
    return (
        f"stopped by SIGTERM or Ctrl-C ({left} job(s) left unfinished:"
        f" `serve --log {log}` resumes them)"
    )


def _run_status(path: Path, state: Any, *, live: bool) -> str:
    """Whether a process is writing the log (its writer holds the log's lock: the test
    ``replay --follow`` uses), and which: a log whose last run has not stopped, and that no
    process writes, was left by a crash or a kill, which a resume finishes. ``live``: the
    lock was held before the log was read (else it is asked again: a run may have started
    on the log meanwhile)."""
    import eventlog

    if live or (state.system.running and eventlog.being_written(path)):
        pid = eventlog.writer_pid(path)
        return f"running (pid {pid})" if pid else "running (a process holds the log's lock)"
    from conjure_actors.commands.live_copy import copy_writer_of, live_writer_of

    if (other := copy_writer_of(path)) is not None:  # its identity's lock: a copy's writer
        who = f"pid {other}" if other else "another process"
        return (
            f"a copy of a log that {who} on this host is still writing, or the original of"
            " one (take it up only once that process has stopped)"
        )
    if (writer := live_writer_of(state)) is not None:  # no lock: a copy of the log it writes
        return (
            f"a copy of a log that pid {writer} on this host is still writing (take it up"
            " only once that process has stopped)"
        )
    if not state.system.running:
        if state.system.stop_reason == "interrupted":
            return _stopped_by_a_signal(path, state)
        return str(state.system.stop_reason or "-")
    return f"not running (crashed or killed: {what_finishes(path, state)} finishes it)"


def what_finishes(path: Path, state: Any) -> str:
    """The command that finishes the log at ``path`` (its ``state``) whose run did not stop
    and that no process writes (a crash, a kill): ```serve --log LOG``` for serve's,
    ```run --resume LOG``` for run's (``replay --follow`` says it too)."""
    import shlex

    log = shlex.quote(str(path))
    run, serve = f"`run --resume {log}`", f"`serve --log {log}`"
    if _is_serves(state):
        return serve  # (the log's jobs came through serve's API: run does not take it)
    if state.jobs:
        return run
    return f"{run} / {serve}"


def job_failure(job: Any, state: Any = None) -> str | None:
    """Why a failed or cancelled job ended, in one line (None for any other job): the node
    and its class (the fields the log recorded: a rejection's first node too), the error's
    type and message, said as the live view and the summary say it. With the ``state`` it
    is in, a job that succeeded but whose outputs could not all be stored (the API reads it
    failed, ``outputs_not_stored``) gets its reason too: its operator hears what its client
    was told."""
    from conjure_actors.actors.view import job_reason
    from conjure_actors.commands.replay_impl import not_stored_reason

    if state is not None and (unstored := not_stored_reason(state, job)) is not None:
        return unstored
    return job_reason(job)


def served_summary(state: Any) -> Summary:
    """``summarize(state)`` with each job counted as its clients were told: one that
    succeeded but whose outputs could not all be stored is failed (the API reads it so,
    ``outputs_not_stored``), its reason among the failures (``status LOG`` and serve's
    closing line count as the API answers; the log's fold keeps its own status)."""
    import attrs

    from conjure_actors.actors.view import summarize
    from conjure_actors.commands.replay_impl import not_stored_reason
    from conjure_actors.domain.service_events import served_status

    s = summarize(state)
    unstored = sum(1 for job in state.jobs.values() if not_stored_reason(state, job) is not None)
    if not unstored:
        return s
    failures = tuple(  # (summarize's, with theirs among them, in the jobs' order)
        (job.job_id, served_status(state, job), why)
        for job in state.jobs.values()
        if (why := job_failure(job, state)) is not None
    )
    return attrs.evolve(
        s,
        succeeded=s.succeeded - unstored,
        failed=s.failed + unstored,
        failures=failures,
    )


async def _show_cloud(config: Config, *, comfyui: str | None, account: bool) -> None:
    """``comfyui``'s stats and queue, and with ``account`` the RunComfy account's machines."""
    from conjure_actors.clients.cookieless import CookielessClient

    async with CookielessClient(timeout=30.0) as http:
        if comfyui:
            await _show_comfyui(http, comfyui)
        if account:
            await _show_runcomfy(http, config)


async def _show_comfyui(http: httpx.AsyncClient, url: str) -> None:
    """The user's ComfyUI, asked as ``run`` asks it at start-up (the same client, health
    check and words when it fails), then its queue."""
    from conjure_actors.actors.conjure import ATTACH_PROBE_SECONDS, probe_comfyui, probe_refusal
    from conjure_actors.clients.comfyui import ComfyUIClient, probe_problem
    from conjure_actors.clients.errors import ClientError

    client = ComfyUIClient(url, http=http, redact="server comfyui")
    stats = await probe_comfyui(client, "comfyui", url)
    queue = None
    with trio.move_on_after(ATTACH_PROBE_SECONDS):  # (bounded as the health check is)
        try:
            queue = await client.queue()
        except ClientError as exc:
            raise probe_refusal("comfyui", url, probe_problem(exc), "/queue") from None
    if queue is None:
        problem = f"no answer within {ATTACH_PROBE_SECONDS:g} s"
        raise probe_refusal("comfyui", url, problem, "/queue")
    system = _mapping(stats.get("system"))
    python = str(system.get("python_version", "?")).split() or ["?"]
    print(f"ComfyUI {system.get('comfyui_version', '?')} (python {python[0]})")
    devices = stats.get("devices")
    for dev in map(_mapping, devices if isinstance(devices, list) else []):
        free = _number(dev.get("vram_free")) / 2**30
        total = _number(dev.get("vram_total")) / 2**30
        print(f"  device {dev.get('name')}: {free:.1f} of {total:.1f} GiB free")
    print(f"  queue: {len(queue.running)} running, {len(queue.pending)} pending")
    for item in queue.running + queue.pending:  # (pending in run order)
        print(f"    {item.prompt_id}")


def _mapping(value: object) -> dict[str, Any]:
    """``value`` if a JSON object, else empty (a field of another shape shows as ``?``)."""
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float:
    """``value`` if a JSON number, else 0 (a count of bytes a ComfyUI left out)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else 0.0  # type: ignore[arg-type]


async def _show_runcomfy(http: httpx.AsyncClient, config: Config) -> None:
    from conjure_actors.clients.runcomfy import RunComfyClient
    from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros

    rc = RunComfyClient(
        config.runcomfy.base_url,
        config.runcomfy.user_id,
        config.runcomfy.api_token.reveal(),
        http=http,
        wall=time.time,  # RunComfy's times in the clock this look compares them with
    )
    table = default_price_table(config.runcomfy.plan)
    servers: list[Any] = await rc.list_servers()
    now = time.time()
    bounded = False
    unpriced: list[str] = []  # Ready machines of a type the price table has no price for
    print(f"RunComfy: {len(servers)} machine(s)")
    costs: list[int] = []
    for s in servers:
        cost = 0
        if s.service_ready_at is not None and s.server_type in table.hourly_micros:
            until = now if s.estimated_stopping_at is None else min(now, s.estimated_stopping_at)
            cost = machine_cost_micros(table.rate(s.server_type), s.service_ready_at, until)
        costs.append(cost)
    total = sum(costs)
    shares = shown_shares(costs)  # add up to the total
    for s, cost, share in zip(servers, costs, shares, strict=True):
        priced = s.server_type in table.hourly_micros
        if s.service_ready_at is not None and not priced:
            # (One launched elsewhere, of a type the table does not name: "$0" would be
            # untrue, and so would a total without it.)
            unpriced.append(s.server_id)
            spent = f"cost unknown (no {table.version} price for type {s.server_type or '?'})"
        elif s.status in BILLING_OVER:
            # Its bill ended when its DELETE was answered (or its lease ran out): RunComfy's
            # answer does not say when, so up to now is a bound, not a bill still growing.
            bounded = bounded or cost > 0
            spent = f"billing over, cost at most {format_usd(share)}"
        else:
            spent = f"cost so far {format_usd(share)}"
        print(f"  {s.server_id}: {s.status}, {s.server_type or '?'}, {spent}")
    prices = f"{table.version}, {table.plan}"
    if unpriced:
        print(
            f"  total so far: {format_usd(total)} and the cost of {len(unpriced)} machine(s)"
            f" of a type without a price ({prices})"
            + ("; a machine stopping is counted up to now" if bounded else "")
        )
    elif bounded:
        print(
            f"  total so far: at most {format_usd(total)} ({prices}; a machine stopping was"
            " billed up to its stop, counted here up to now)"
        )
    else:
        print(f"  total so far: {format_usd(total)} ({prices})")
