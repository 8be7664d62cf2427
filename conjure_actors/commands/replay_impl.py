"""What ``python -m conjure_actors replay`` does: timeline, state at a point, JSON, follow,
check and diff (the options are described in :mod:`conjure_actors.commands.replay`).

This module holds the work and its imports (eventlog, the domain, msgspec); the command's
own module, imported to build the parser, stays light so ``replay --help`` starts fast.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import msgspec

import eventlog
from conjure_actors.domain.cost_policy import at_most_bills
from conjure_actors.domain.describe import describe, event_job_id, machine_kind, machine_status
from conjure_actors.domain.events import UPCASTERS, Event, SystemStarted, SystemStopped
from conjure_actors.domain.prices import format_usd
from conjure_actors.domain.service_events import served_status
from conjure_actors.domain.state import (
    SCHEMA_VERSION,
    State,
    apply,
    initial_state,
    machine_cost_at,
    state_to_builtins,
)
from conjure_actors.errors import ConjureError, UsageError
from eventlog.snapshot import read_snapshot_full  # (with the ts a restart checks)

EXIT_OK = 0
EXIT_DIVERGED = 1
_DIGITS = re.compile(r"(\d+)")
EPOCH_DIGITS_THRESHOLD = 1_000_000_000


class ReplayError(ConjureError):
    """The log cannot be replayed (damage in the middle, an undecodable record...)."""


def newer_log_error(path: str | os.PathLike[str] | None, exc: Exception) -> UsageError:
    """What to say of a log holding a record whose event tag this program does not know
    (``eventlog.UnknownEventError``): a newer conjure_actors wrote it (the records are
    intact: only their type is unknown), so this one cannot fold it; said in the words of a
    log in a newer file format (``UnsupportedVersionError``): upgrade to read it. Bad input
    (exit 2); eventlog's own message (a developer's hint: add the type or an upcaster) stays
    on the error's cause, which ``--debug`` shows. ``path``: None when not known here."""
    from conjure_actors import __version__

    tag = getattr(exc, "tag", None)
    seq = getattr(exc, "seq", 0)
    log = "the event log" if path is None else f"event log {os.fspath(path)!r}"
    if tag is None:  # a map without the tag field: no conjure_actors wrote it
        return UsageError(
            f"{log} holds a record (seq {seq}) that is not a conjure_actors event: pass a run's log"
        )
    return UsageError(
        f"{log} was written by a newer conjure_actors (event {tag!r} at record seq {seq}; this"
        f" is conjure_actors {__version__}): upgrade conjure_actors to read it"
    )


# --------------------------------------------------------------------------- reading


def _records(path: str, **kwargs: Any) -> Iterator[eventlog.Record[Any]]:
    """Records of ``path``, with eventlog's errors turned into one-line ConjureErrors."""
    try:
        yield from eventlog.read(path, Event, upcasters=UPCASTERS, **kwargs)
    except eventlog.UnknownEventError as exc:
        raise newer_log_error(path, exc) from exc
    except eventlog.UnsupportedVersionError as exc:  # (nothing replayed: bad input, exit 2)
        raise UsageError(str(exc)) from exc
    except eventlog.LogNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    except eventlog.NotALogError as exc:
        raise UsageError(str(exc)) from exc
    except eventlog.EventLogError as exc:
        raise ReplayError(f"{exc} (replay stopped there)") from exc


def _report_torn_tail(path: str, *, tail_only: bool = False) -> int:
    """Say on stderr if the log ends in a torn tail; returns its last complete seq."""
    return _scan_reporting_a_torn_tail(path, tail_only=tail_only).last_seq


def _scan_reporting_a_torn_tail(path: str, *, tail_only: bool = False) -> eventlog.LogInfo:
    """:func:`eventlog.scan` of ``path`` (its ``torn_bytes``, ``good_bytes``,
    ``last_seq``), a torn tail said on stderr, eventlog's errors as ConjureErrors."""
    try:
        info = eventlog.scan(path, tail_only=tail_only)
    except eventlog.UnsupportedVersionError as exc:
        raise UsageError(str(exc)) from exc
    except eventlog.LogNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    except eventlog.NotALogError as exc:
        raise UsageError(str(exc)) from exc
    except eventlog.EventLogError as exc:
        raise ReplayError(str(exc)) from exc
    if info.torn_bytes:
        print(
            f"warning: {path}: torn tail of {info.torn_bytes} bytes at offset"
            f" {info.good_bytes} (a crash mid-append); replaying the {info.last_seq}"
            " complete records before it",
            file=sys.stderr,
        )
    return info


def _parse_at(text: str) -> tuple[int | None, float | None]:
    """``--at`` as ``(seq, None)`` or ``(None, epoch_seconds)``."""
    text = text.strip()
    # A negative number is no time (no log is from before 1970): a record number, as is 0.
    if re.fullmatch(r"-\s*\d+(\.\d*)?|0+", text):
        raise UsageError(
            f"--at {text}: record numbers start at 1 (1, 2, ...): give one, or a time"
            " (e.g. 2026-11-23T10:15:00Z or epoch seconds)"
        )
    # Digits are a seq, unless they are as large as an epoch time (>= 1e9 s, 2001-09-09):
    # no log has a billion records, and "--at $(date +%s)" should just work.
    if text.isdigit() and int(text) < EPOCH_DIGITS_THRESHOLD:
        return int(text), None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return None, value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--at {text!r}: give a record number (e.g. 120) or a time"
            " (e.g. 2026-11-23T10:15:00Z or epoch seconds)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return None, moment.timestamp()


def fold_log(
    path: str,
    *,
    stop_seq: int | None = None,
    stop_at: float | None = None,
    use_snapshots: bool = False,
) -> tuple[State, int, float | None]:
    """Fold the log up to ``stop_seq`` / event time ``stop_at``: (state, last seq, its at).

    ``use_snapshots`` (without ``stop_at``) starts from the newest snapshot the run's journal
    wrote (``LOG.snapshots/``) at or before ``stop_seq`` that checks out against the log.
    """
    if use_snapshots and stop_at is None and os.path.isdir(eventlog.snapshots_dir(path)):
        return _fold_from_snapshot(path, stop_seq)
    state = initial_state()
    last_seq = 0
    last_at: float | None = None
    for record in _records(path, stop_seq=stop_seq):
        event = record.event
        if stop_at is not None and event.at > stop_at:
            break
        apply(state, event)
        last_seq = record.seq
        last_at = event.at
        if stop_seq is not None and last_seq >= stop_seq:
            break  # (the next record is not read: damage right after stop_seq is no error)
    return state, last_seq, last_at


def _fold_from_snapshot(path: str, stop_seq: int | None) -> tuple[State, int, float | None]:
    # A long run's state is ~10^6 objects, all made at once by the snapshot's decode: the
    # cyclic GC would walk them all again at its next pass (as long as the decode itself).
    # This command prints the state and exits, so they are frozen out of the GC's view.
    gc.disable()
    try:
        result = eventlog.replay(
            path,
            Event,
            apply,
            initial_state(),
            snapshot_dir=eventlog.snapshots_dir(path),
            state_type=State,
            stop_seq=stop_seq,
            upcasters=UPCASTERS,
        )
    except eventlog.UnknownEventError as exc:
        raise newer_log_error(path, exc) from exc
    except eventlog.UnsupportedVersionError as exc:  # (nothing replayed: bad input, exit 2)
        raise UsageError(str(exc)) from exc
    except (eventlog.LogNotFoundError, eventlog.NotALogError) as exc:
        raise UsageError(str(exc)) from exc
    except eventlog.EventLogError as exc:
        raise ReplayError(f"{exc} (replay stopped there)") from exc
    finally:
        gc.freeze()
        gc.enable()
    state: State = result.state
    return state, result.last_seq, state.last_at if result.last_seq else None


# ------------------------------------------------------------------------- rendering


def format_time(at: float | None) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds (``-`` for None)."""
    if at is None or not math.isfinite(at):
        return "-"
    try:
        moment = datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{at:.3f}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timeline_line(record: eventlog.Record[Any]) -> str:
    subject, summary = describe(record.event)
    return f"{record.seq:>7}  {format_time(record.event.at)}  {subject:<22} {summary}"


def _print_table(title: str, headers: Sequence[str], rows: list[list[str]], rich: bool) -> None:
    if not rows:
        print(f"{title}: none")
        return
    if rich:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"{title}:")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def natural_key(text: str) -> list[Any]:
    """``job2`` before ``job10``: digits compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(text)]


def _job_rows(state: State, job_id: str | None) -> list[list[str]]:
    rows = []
    for jid in sorted(state.jobs, key=natural_key):
        job = state.jobs[jid]
        if job_id is not None and jid != job_id:
            continue
        node = "-"
        if job.current_node is not None:
            progress = job.nodes.get(job.current_node)
            node = job.current_node
            if progress is not None and progress.max:
                node += f" {progress.value:g}/{progress.max:g}"
        done = sum(1 for n in job.nodes.values() if n.status in ("executed", "cached"))
        why = ""
        if job.status == "cancelled" and job.cancel_reason:
            why = f"cancelled: {job.cancel_reason}"
        elif job.error is not None:
            why = f"{job.error.error_type}: {job.error.message}"
        elif job.status == "retrying" and job.retry_reason:
            why = f"retry: {job.retry_reason}"
        elif (unstored := not_stored_reason(state, job)) is not None:
            why = unstored  # (succeeded, but the API reads it failed: its clients were told so)
        rows.append(
            [
                jid,
                job.status,
                str(job.priority),
                str(job.attempt),
                job.server_id or "-",
                node,
                f"{done}/{len(job.nodes)}",
                str(len(job.outputs)),
                why[:60],
            ]
        )
    return rows


def not_stored_reason(state: State, job: Any) -> str | None:
    """Why the API reads ``job`` failed though it ran to its end (its outputs could not all
    be stored as assets: ``ApiJobOutputsNotStored``), in one line, for its operator: how
    many, why, and where their files are; None for any other job."""
    if served_status(state, job) == job.status:
        return None
    fact = state.service.outputs_not_stored[job.job_id]
    reason = " ".join(str(fact.reason).split())
    return (
        f"outputs_not_stored: {len(fact.paths)} of its {len(job.outputs)} outputs could not"
        f" be stored ({reason}); their files are in serve's output folder (--out) under"
        f" {job.job_id}/"
    )


def _short_time(at: float | None) -> str:
    """``HH:MM:SS`` UTC, for narrow table columns (the header line carries the date)."""
    text = format_time(at)
    return text[11:19] if len(text) > 19 else text


def _cost_at(m: Any, moment: float | None) -> int:
    """A machine's bill as of ``moment`` by the billing rule (the ledger's accruals lag:
    a machine still running at that moment has cost more than its last accrual)."""
    return m.cost_micros if moment is None else machine_cost_at(m, moment)


def billed_by(state: State, moment: float | None) -> dict[str, int]:
    """Each machine's bill as of ``moment`` by the billing rule, by server id: the text
    view's "cost so far" column, summed in its "billed by" figure, and ``--json``'s
    ``billed``."""
    return {sid: _cost_at(m, moment) for sid, m in sorted(state.machines.items())}


def _machine_rows(state: State, rich: bool, moment: float | None) -> list[list[str]]:
    when = _short_time if rich else format_time
    return [
        [
            sid,
            machine_kind(m, state.system.mode),
            m.server_type or "-",
            machine_status(m) + (" (adopted)" if m.adopted else ""),
            ",".join(m.leases) or "-",
            when(m.service_ready_at),
            when(m.stopped_at),
            format_usd(_cost_at(m, moment)),
        ]
        for sid, m in sorted(state.machines.items(), key=lambda item: natural_key(item[0]))
    ]


def print_state(
    state: State,
    seq: int,
    at: float | None,
    *,
    job_id: str | None,
    moment: float | None = None,
) -> None:
    """The state after ``seq`` (logged at ``at``); costs as of ``moment`` (default ``at``)."""
    moment = at if moment is None else moment
    rich = sys.stdout.isatty()
    system = state.system
    print(
        f"state after seq {seq} ({format_time(at)}): run {system.run_id or '-'}"
        f" ({system.mode or '-'}, {'running' if system.running else 'not running'}),"
        f" {state.events_applied} events, {state.anomaly_count} anomalies"
    )
    _print_table(
        "jobs",
        ["job", "status", "prio", "try", "machine", "node", "nodes", "outputs", "error"],
        _job_rows(state, job_id),
        rich,
    )
    if job_id is not None and job_id in state.jobs:
        job = state.jobs[job_id]
        _print_table(
            f"nodes of job {job_id}",
            ["node", "status", "progress"],
            [
                [nid, n.status, f"{n.value:g}/{n.max:g}" if n.max else "-"]
                for nid, n in job.nodes.items()
            ],
            rich,
        )
        _print_table(
            f"outputs of job {job_id}",
            ["node", "kind", "file", "size", "sha256", "path"],
            [
                [o.node_id, o.kind, o.filename, str(o.size), o.sha256[:16], o.path]
                for o in job.outputs
            ],
            rich,
        )
    if job_id is None:
        _print_table(
            "machines",
            [
                "machine",
                "kind",
                "type",
                "status",
                "leases",
                "ready at",
                "stopped at",
                "cost so far",
            ],
            _machine_rows(state, rich, moment),
            rich,
        )
        budget = state.budget
        limit = "none" if budget.limit_micros is None else format_usd(budget.limit_micros)
        flags = [
            name for name, on in (("warned", budget.warned), ("exceeded", budget.exceeded)) if on
        ]
        so_far = sum(billed_by(state, moment).values())
        billing = (
            f" (accrued; {format_usd(so_far)} billed by {format_time(moment)})"
            if so_far != state.ledger.total_micros
            else ""
        )
        # A bill to a lease's end whose stop went unanswered at a crash, or of a machine a
        # resume found gone with no stop in the log: the most it can have cost
        # (cost_policy.at_most_bills), as status LOG and the summary say.
        at_most = "at most " if at_most_bills(state) else ""
        print(
            f"ledger: total {at_most}{format_usd(state.ledger.total_micros)}{billing}"
            f" over {len(state.machines)} machines; budget {limit}"
            + (f" ({', '.join(flags)})" if flags else "")
            + (f"; {budget.launches_refused} launches refused" if budget.launches_refused else "")
            + (
                f"; price tables {', '.join(state.ledger.price_table_versions)}"
                if state.ledger.price_table_versions
                else ""
            )
        )
        intents = [
            [f"launch {key}", f"{r.server_type} {r.workflow_version}", format_time(r.at)]
            for key, r in sorted(state.launch_requests.items())
        ] + [
            [
                f"prompt {pid}",
                f"job {p.job_id} attempt {p.attempt} on {p.server_id}",
                format_time(p.at),
            ]
            for pid, p in sorted(state.submitting.items())
        ]
        _print_table(
            "pending intents (no outcome logged)", ["intent", "what", "since"], intents, rich
        )
        _print_table(
            "actors",
            ["actor", "status", "incarnation", "crashes", "restarts", "last error"],
            [
                [
                    name,
                    h.status,
                    str(h.incarnation),
                    str(h.crashes),
                    str(h.restarts),
                    h.last_error or "-",
                ]
                for name, h in sorted(state.actors.items())
            ],
            rich,
        )
    if state.anomalies:
        print(f"anomalies (first {min(10, len(state.anomalies))} of {state.anomaly_count}):")
        for message in state.anomalies[:10]:
            print(f"  - {message}")


def state_document(
    state: State,
    *,
    log: str,
    seq: int,
    at: float | None,
    job_id: str | None,
    moment: float | None = None,
) -> dict[str, Any]:
    """The ``--json`` document (schema in docs/replay-json.md); bills as of ``moment``
    (default ``at``), as :func:`print_state` shows them.

    The state stays a :class:`State` (msgspec encodes it to the very bytes its builtins
    would give, without making a million builtins first); ``job_id`` keeps one job.
    """
    moment = at if moment is None else moment
    body = state
    if job_id is not None:
        body = attrs.evolve(state, jobs={k: v for k, v in state.jobs.items() if k == job_id})
    machines = billed_by(state, moment)
    # The bills that are the most a machine can have cost (cost_policy.at_most_bills), as
    # the text view's "at most" says them (QA7 F6: a tool read the worst case as exact).
    at_most = sorted(at_most_bills(state))
    billed = {
        "by": moment,
        "total_micros": sum(machines.values()),
        "machines": machines,
        "at_most": at_most,
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "log": log,
        "seq": seq,
        "at": at,
        "billed": billed,
        "state": body,
    }


def _write_bytes(data: bytes) -> None:
    """``data`` (UTF-8) to stdout, straight to its byte buffer when it has one (a large
    JSON document is not decoded to text only to be encoded back)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode())
        return
    sys.stdout.flush()
    buffer.write(data)
    buffer.flush()


# -------------------------------------------------------------------------- commands


def _timeline(path: str, job_id: str | None) -> int:
    """Print the timeline as the records are read (``replay LOG | head`` shows its first
    lines at once, whatever the log's size).

    A record a newer conjure_actors wrote stops it where it is met (exit 2, upgrade), as
    damage does (exit 1), after the records before it: each line printed is true of its
    record, unlike a state or a verdict folded without it (the other modes refuse). Refusing
    first would cost a read of the whole log before the first line (a tag pre-scan of a
    1M-record log, 120 MB: 0.8-1.0 s, more than the 0.7 s of all of ``replay LOG | head``)
    on every timeline, for a log this version cannot fully read anyway. The error line says
    that the timeline above stops before that record."""
    count = 0
    read = 0
    try:
        for record in _records(path):
            read += 1
            if job_id is not None and event_job_id(record.event) != job_id:
                continue
            print(timeline_line(record))
            count += 1
    except UsageError as exc:
        if read and isinstance(exc.__cause__, eventlog.UnknownEventError):
            raise UsageError(f"{exc} (the timeline above stops before it)") from exc.__cause__
        raise
    if job_id is not None and count == 0:
        raise UsageError(f"no event in {path} is about job {job_id}: check the job id")
    return EXIT_OK


def _follow(path: str, job_id: str | None, poll: float, *, as_json: bool = False) -> int:
    """Print the records as they are appended, until the run's log is finished.

    A run's log does not end at ``SystemStopped``: the actors' ``stopped`` records (the
    root's last) come after it, until the run closes the log. So follow ends once the run
    has stopped (the last ``SystemStarted`` has its ``SystemStopped``) and the log's writer
    has closed it (released its lock), after printing the last record written. A log whose
    run has not stopped is followed while its writer holds it (a live run): once no process
    does (QA11 7: a crash, a kill, an OOM kill left the follow waiting forever, silent),
    the records it wrote last are printed and one line says which process was writing it,
    that it is gone and what finishes the log (exit 1; :func:`_writer_gone`). A writer that
    took the log up again meanwhile (a restart) is followed on. Nothing is asked before a
    run's first record (a log a run has yet to write is waited for).

    ``as_json``: each record is one JSON object on its line, as ``run --json`` writes the
    events it journals (``seq``, ``ts``, ``type``, the event's fields: docs/run-json.md).
    ``job_id``: only that job's records; none by the time the run has ended is said as the
    timeline says it (exit 2: a mistyped id), not an empty output.
    """
    import trio

    from conjure_actors.actors.view import event_json_line

    last_seq = 0
    shown = 0
    stopped = False
    started: SystemStarted | None = None  # the last run's start, once one is read

    def show(record: eventlog.Record[Any]) -> None:
        nonlocal last_seq, shown, stopped, started
        last_seq = record.seq
        if isinstance(record.event, SystemStopped | SystemStarted):
            stopped = isinstance(record.event, SystemStopped)
            started = record.event if isinstance(record.event, SystemStarted) else started
        if job_id is None or event_job_id(record.event) == job_id:
            shown += 1
            line = (
                event_json_line(record.seq, record.ts, record.event)
                if as_json
                else timeline_line(record)
            )
            print(line, flush=True)

    async def tail() -> str | None:
        records = eventlog.follow(path, Event, poll_interval=poll, upcasters=UPCASTERS)
        unknown_said = False
        while True:
            record = None
            # Once a record was read, a quiet poll interval is when to ask whether the log's
            # writer is gone (the follower loses nothing to a cancel: its records wait in a
            # deque): it closed the log after its run stopped (the end), or it died under
            # a run that did not stop.
            with trio.move_on_after(poll if last_seq else math.inf):
                record = await anext(records)
            if record is not None:
                if record.seq > last_seq:  # (not one read below when the lock was free)
                    show(record)
                continue
            if eventlog.being_written(path):
                continue
            if stopped:
                return None
            # No process writes the log, and its last run has not stopped: what it wrote
            # last first (the follower may not have read it yet), then whether it stopped.
            for rest in _records(path, start_seq=last_seq + 1):
                show(rest)
            if stopped:
                return None
            gone = _writer_gone(path, started)
            if gone is None and not unknown_said:
                unknown_said = True
                host = started.writer_host if started else None
                print(
                    f"note: {path} is written from host {host}: whether its"
                    " writer still runs cannot be told from here; following on (Ctrl-C"
                    " stops)",
                    file=sys.stderr,
                    flush=True,
                )
            elif gone:
                return gone

    # A record a newer conjure_actors wrote ends it as it ends the timeline: after every
    # record before it (the follower yields them first), said so that the part printed is
    # not taken for the whole.
    stops = " (the timeline above stops before it)"
    try:
        gone = trio.run(tail)
    except eventlog.UnknownEventError as exc:
        raise UsageError(f"{newer_log_error(path, exc)}{stops if last_seq else ''}") from exc
    except eventlog.UnsupportedVersionError as exc:  # (nothing replayed: bad input, exit 2)
        raise UsageError(str(exc)) from exc
    except eventlog.NotALogError as exc:  # a foreign file, or one this user may not read
        raise UsageError(str(exc)) from exc
    except eventlog.EventLogError as exc:
        raise ReplayError(f"{exc} (follow stopped there)") from exc
    if gone:
        raise ReplayError(gone)
    # The writer has closed the log: what it appended since the last poll is all there.
    try:
        for record in _records(path, start_seq=last_seq + 1):
            show(record)
    except UsageError as exc:
        if last_seq and isinstance(exc.__cause__, eventlog.UnknownEventError):
            raise UsageError(f"{exc}{stops}") from exc.__cause__
        raise
    if job_id is not None and shown == 0:  # the run has ended: the job will not come now
        raise UsageError(f"no event in {path} is about job {job_id}: check the job id")
    return EXIT_OK


def _writer_gone(path: str, started: SystemStarted | None) -> str | None:
    """What ``replay --follow`` says of a log that no process writes (its lock is free)
    although its last run (``started``) has not stopped, as ``status LOG`` tells it: its
    writer crashed or was killed, naming that process and what finishes the log; or the
    log is a copy of one a live process writes. ``""`` when a process holds the log again
    (a restart took it up: followed on); None when it cannot be told (the run was started
    on another host, whose processes and locks are not seen from here). ``started``: None
    when the writer died before it logged its run's start."""
    import platform

    from conjure_actors.commands.live_copy import copy_writer_of, live_writer_of
    from conjure_actors.commands.status import what_finishes
    from conjure_actors.domain.machines_policy import paid_machines

    host = started.writer_host if started else None
    if host is not None and host != platform.node():
        return None
    state, _, _ = fold_log(path, use_snapshots=True)
    if eventlog.being_written(path):
        return ""
    copied = copy_writer_of(Path(path))
    if copied is None:
        copied = live_writer_of(state)
    if copied is not None:
        who = f"process {copied}" if copied else "another process"
        return (
            f"{path} is a copy of a log that {who} on this host is still writing (or the"
            " log it was copied from): nothing writes this one; follow that process's log"
        )
    details = []
    if started is not None and started.writer_pid is not None:
        details.append(f"pid {started.writer_pid}")
    if started is not None:
        details.append(f"started {format_time(started.at)}")
    who = f" ({', '.join(details)})" if details else ""
    billing = ""
    paid = len(paid_machines(state)) if state.system.mode == "runcomfy" else 0
    if paid:  # (the simulated cloud's machines bill nobody)
        billing = f"; its {paid} machine(s) may bill until then (or their lease's end)"
    return (
        f"the process that was writing {path}{who} is gone: crashed or killed, its run not"
        f" stopped; {what_finishes(Path(path), state)} finishes it{billing}"
    )


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first path (``jobs.j1.status``) where two JSON-like values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return (f"{path}.{key}".lstrip("."), a.get(key, "<absent>"), b.get(key, "<absent>"))
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        if len(a) != len(b):
            return (f"{path}.length".lstrip("."), len(a), len(b))
        return None
    if a != b or type(a) is not type(b):
        return (path.lstrip(".") or "<root>", a, b)
    return None


def _describe_difference(left: State, right: State) -> str:
    found = first_difference(state_to_builtins(left), state_to_builtins(right))
    if found is None:
        return "states equal"
    where, x, y = found
    return f"{where}: {x!r} != {y!r}"


def _check(path: str, snapshot: str | None, *, as_json: bool = False) -> int:
    """Print the verdict of :func:`check_verdict`: its line, or (``as_json``) the whole
    verdict as one JSON object; exit 0 if the log checks out, else 1.

    With ``as_json`` the verdict is written whatever stops the check: a log that cannot be
    read (corrupt in the middle: exit 1; missing, foreign, newer, without a record: exit 2)
    is ``ok: false`` with the error's line as its ``failure``, and the error is still said
    on stderr with its exit code. A torn tail is the verdict's ``torn_tail``."""
    torn: dict[str, int] | None = None
    try:
        if Path(path).is_dir():
            raise a_directory_error(path)
        _refuse_a_log_without_records(path, "check")
        info = _scan_reporting_a_torn_tail(path)
        if info.torn_bytes:
            torn = {"offset": info.good_bytes, "bytes": info.torn_bytes}
        verdict = check_verdict(path, snapshot)
    except ConjureError as exc:
        if as_json:
            failed = {"ok": False, "log": path, "failure": str(exc), "torn_tail": torn}
            _write_bytes(msgspec.json.encode(failed) + b"\n")
        raise
    verdict["torn_tail"] = torn
    if as_json:
        _write_bytes(msgspec.json.encode(verdict) + b"\n")
    elif verdict["ok"]:
        print(f"ok: {path}: {verdict['summary']}")
    else:
        print(f"check failed: {verdict['failure']}")
    return EXIT_OK if verdict["ok"] else EXIT_DIVERGED


def check_verdict(path: str, snapshot: str | None) -> dict[str, Any]:
    """``replay --check``: the log's seqs, the fold's determinism and its snapshots, checked.

    The verdict (``--check --json`` prints it; docs/replay-json.md): ``ok``, ``log``, and
    either ``failure`` (the first thing found wrong, in one line) or ``summary`` (that line
    of a good log), ``records``, ``last_seq``, ``lost_seqs`` (a salvage's), ``snapshot_seq``
    (the newest snapshot checked; null: none), ``snapshots_checked`` (how many agree),
    ``being_written`` (a run or serve held the log's lock: the records checked are those
    it had written when the check read it) and ``anomalies``.

    The snapshots checked are those a restart starts from (``LOG.snapshots/``, of this
    version's state type: :func:`eventlog.list_snapshots`), and ``LOG.snapshot`` if there
    is one; ``snapshot`` (``--snapshot PATH``) checks that file only. Each must fold to the
    state of the records up to its seq; it is compared when the fold reaches that seq (one
    fold of the log, however many snapshots)."""

    def failed(why: str) -> dict[str, Any]:
        return {"ok": False, "log": path, "failure": why}

    # Asked before the log is read: a run or serve appending to it meanwhile is why the
    # second fold stops at the first one's last seq, and why a snapshot past it is not due.
    writing = eventlog.being_written(path)
    try:
        due = _snapshots_to_check(path, snapshot)
    except _SnapshotFailure as exc:
        return failed(str(exc))
    checked: list[int] = []

    def compare(seq: int, ts: float | None, state: State) -> str | None:
        for where in due.pop(seq, []):
            why = _check_snapshot(where, seq, ts, state, path)
            if why is None:
                checked.append(seq)
            elif why:  # ("": gone since it was listed, deleted by a live serve)
                return why
        return None

    # 1. Seq order: eventlog checks frames, we check the numbering we are handed. Its only
    # gaps are the seqs a salvage lost (their place holders, which eventlog skips): named.
    first = initial_state()
    last = 0
    count = 0
    lost: list[int] = []
    why = compare(0, None, first)
    if why is not None:
        return failed(why)
    for record in _records(path):
        if record.seq <= last:
            return failed(f"{path}: expected seq {last + 1}, found seq {record.seq}")
        if record.seq != last + 1:
            lost.extend(range(last + 1, record.seq))
            for gone in sorted(seq for seq in due if last < seq < record.seq):
                return failed(
                    f"snapshot {due[gone][0]} covers seq {gone}, a record {path} lost (it was"
                    " salvaged): a restart does not use it (delete it)"
                )
        apply(first, record.event)
        last = record.seq
        count += 1
        if last in due:
            why = compare(last, record.ts, first)
            if why is not None:
                return failed(why)
    writing = writing or eventlog.being_written(path)
    # 2. The fold is deterministic: a second, independent fold of the same records (up to
    # the first one's last: a live log has more by now) gives an equal state.
    second, last_seq, _ = fold_log(path, stop_seq=last)
    if second != first or last_seq != last:
        return failed(
            f"{path}: folding twice gave different states: {_describe_difference(first, second)}"
        )
    # 3. A snapshot past the records read: written since (a live log), or of a longer log.
    if due and not writing:
        seq = min(due)
        return failed(f"snapshot {due[seq][0]} covers seq {seq} but the log ends at seq {last}")
    snap_note = "no snapshot"
    if len(checked) == 1:
        snap_note = f"snapshot at seq {checked[0]} agrees"
    elif checked:
        snap_note = f"{len(checked)} snapshots agree (seqs {_seq_list(checked)})"
    anomalies = f", {first.anomaly_count} anomalies" if first.anomaly_count else ""
    seqs = f"seqs 1..{last} contiguous"
    if lost:
        seqs = f"seqs 1..{last} but {_seq_ranges(lost)} (lost: it was salvaged)"
    live = ""
    if writing:
        live = f"; checked records 1..{last}: the log is being written (it has more by now)"
    return {
        "ok": True,
        "log": path,
        "summary": f"{count} records, {seqs}, fold deterministic, {snap_note}{anomalies}{live}",
        "records": count,
        "last_seq": last,
        "lost_seqs": lost,
        "snapshot_seq": max(checked) if checked else None,
        "snapshots_checked": len(checked),
        "being_written": writing,
        "anomalies": first.anomaly_count,
    }


def _snapshots_to_check(path: str, snapshot: str | None) -> dict[int, list[str]]:
    """The snapshot files ``--check`` compares with the records, by the seq they cover:
    ``snapshot`` (``--snapshot PATH``) alone, else ``LOG.snapshot`` if it exists and every
    one in ``LOG.snapshots/`` a restart may start from (named for this version's state
    type; those of another version are not read by this one)."""
    due: dict[int, list[str]] = {}
    single = snapshot or (f"{path}.snapshot" if os.path.exists(f"{path}.snapshot") else None)
    if single is not None:
        try:
            got = read_snapshot_full(single, State)
        except eventlog.EventLogError as exc:
            raise _SnapshotFailure(f"snapshot {single}: {exc}") from exc
        if got is None:
            if snapshot is not None:
                raise UsageError(f"--snapshot {snapshot}: file not found")
        else:
            due.setdefault(got[0], []).append(single)
    if snapshot is None:
        directory = eventlog.snapshots_dir(path)
        for seq in eventlog.list_snapshots(directory, State):
            due.setdefault(seq, []).append(eventlog.snapshot_file(directory, seq, State))
    return due


class _SnapshotFailure(ReplayError):
    """A snapshot to check cannot be read (damaged): the check fails (exit 1)."""


def _check_snapshot(where: str, seq: int, ts: float | None, state: State, path: str) -> str | None:
    """Why the snapshot file ``where`` (named or found to cover ``seq``) does not agree
    with ``state``, the fold of the records up to ``seq`` (record ``seq`` appended at
    ``ts``): what a restart checks of it (:func:`eventlog.replay`), and its state. None if
    it agrees; ``""`` if it is gone (a live serve deletes older ones as it writes new ones)."""
    try:
        got = read_snapshot_full(where, State)
    except eventlog.EventLogError as exc:
        return f"snapshot {where}: {exc} (a restart skips it: delete it)"
    if got is None:
        return ""
    snap_seq, snap_ts, snap_state = got
    if snap_seq != seq:
        return f"snapshot {where} is named for seq {seq} but covers seq {snap_seq} (delete it)"
    if snap_ts is not None and ts is not None and snap_ts != ts:
        return (
            f"snapshot {where} at seq {seq} does not belong to {path} (record {seq} has"
            " another time): a restart does not use it (delete it)"
        )
    if snap_state != state:
        return (
            f"snapshot {where} at seq {seq} disagrees with"
            f" the records: {_describe_difference(snap_state, state)}"
            " (snapshot != records)"
        )
    return None


def _seq_list(seqs: list[int]) -> str:
    """``[20000, 40000, 60000]`` -> ``"20000, 40000, 60000"``; more than 4 are elided."""
    shown = sorted(seqs)
    if len(shown) <= 4:
        return ", ".join(map(str, shown))
    return f"{shown[0]}, {shown[1]}, ..., {shown[-1]}"


def _seq_ranges(seqs: list[int]) -> str:
    """``[5, 6, 7, 9]`` (ascending) -> ``"5-7, 9"``."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _diff(path: str, other: str) -> int:
    # Records are paired by seq: a salvaged log's seqs have gaps where records were lost.
    left, right = initial_state(), initial_state()
    mine, theirs = _records(path), _records(other)
    count = 0
    a, b = next(mine, None), next(theirs, None)
    while True:
        if a is None and b is None:
            print(
                f"identical: {path} and {other} give equal states at every one of {count} records"
            )
            return EXIT_OK
        if a is None or b is None or a.seq != b.seq:
            only_mine = b is None or (a is not None and a.seq < b.seq)
            longer, record = (path, a) if only_mine else (other, b)
            assert record is not None
            line = timeline_line(record).strip()
            print(f"first difference at seq {record.seq}: only {longer} has it: {line}")
            return EXIT_DIVERGED
        count += 1
        apply(left, a.event)
        apply(right, b.event)
        # A deterministic fold of equal events gives equal states: compare the (cheap) events
        # first, and the states only where the events differ.
        if a.event != b.event and left != right:
            print(f"first difference at seq {a.seq}:")
            print(f"  {path}: {timeline_line(a).strip()}")
            print(f"  {other}: {timeline_line(b).strip()}")
            print(f"  state: {_describe_difference(left, right)}")
            return EXIT_DIVERGED
        a, b = next(mine, None), next(theirs, None)


def main(args: argparse.Namespace) -> int:
    return _main(args)  # (`replay LOG | head`: the CLI exits quietly, as for every command)


def a_directory_error(path: str) -> UsageError:
    """A directory given for a log, in the words every command says it with (``run
    --resume DIR`` too): a directory, not a log file, naming a log in it if there is one."""
    import shlex

    from conjure_actors.commands.run import _a_directory  # (only on this error: run is big)

    return UsageError(f"{shlex.quote(path)}: {_a_directory(Path(path))}")


def _refuse_a_log_without_records(path: str, to_do: str = "replay") -> None:
    """A log with no record (0 bytes, or a header only: a run that stopped before its
    first record) has nothing to show: said in one line, exit 2, not an empty timeline (nor
    an empty check, nor a diff against nothing)."""
    try:
        status = eventlog.inspect(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if status.state in ("missing", "newer-version"):
        raise UsageError(status.message)
    if status.state in ("empty", "header-only"):
        raise UsageError(f"{status.message}: no record to {to_do}")


def _refuse_a_time_before_the_log(path: str, text: str, stop_at: float) -> None:
    """``--at TIME`` before the first record (``5.5``: read as epoch seconds); the first
    record read, whatever its seq (a salvaged log's record 1 may be lost)."""
    first = next(_records(path), None)  # (the rest is not read)
    if first is None:
        return
    raise UsageError(
        f"--at {text}: {format_time(stop_at)} is before the log starts"
        f" ({format_time(first.event.at)}, record {first.seq}): give a later time, or a record"
        " number (1, 2, ...)"
    )


# What each mode does not use (said in one line, not ignored): the option -> what it is for.
_IGNORED_BY: dict[str | None, tuple[str, ...]] = {
    None: ("snapshot",),
    "follow": ("at", "snapshot"),
    "check": ("at", "job"),
    "diff": ("at", "job", "json", "snapshot"),
}
_USED_BY = {
    "at": "the state at a point (replay LOG --at SEQ|TIME)",
    "job": "the timeline, the state and --follow",
    "json": "the state, --follow and --check",
    "snapshot": "--check",
}


def _refuse_what_a_mode_ignores(args: argparse.Namespace, mode: str | None) -> None:
    """An option the chosen mode would not use is refused in one line (exit 2), rather
    than silently ignored (``--diff --json`` printing text)."""
    for name in _IGNORED_BY[mode]:
        if getattr(args, name, None) not in (None, False):
            with_mode = f" with --{mode}" if mode else " without --check"
            raise UsageError(
                f"--{name} does nothing{with_mode}: it is for {_USED_BY[name]}; leave it out"
            )


def _main(args: argparse.Namespace) -> int:
    path = str(args.log)
    modes = [name for name in ("follow", "check", "diff") if getattr(args, name)]
    if len(modes) > 1:
        raise UsageError(f"--{modes[0]} and --{modes[1]} cannot be combined")
    _refuse_what_a_mode_ignores(args, modes[0] if modes else None)
    if args.check:
        return _check(path, args.snapshot, as_json=args.json)
    if Path(path).is_dir():
        raise a_directory_error(path)
    if args.diff:
        _refuse_a_log_without_records(path, "compare")
        _refuse_a_log_without_records(args.diff, "compare")
        _report_torn_tail(path)
        _report_torn_tail(args.diff)
        return _diff(path, args.diff)
    if args.follow:
        if not args.poll > 0:
            raise UsageError(f"--poll {args.poll}: give a positive number of seconds")
        if not Path(path).exists():  # (waited for, as a run may create it: said, so that a
            # mistyped path is not a silent wait)
            print(
                f"note: {path} does not exist yet: waiting for a run to write it (Ctrl-C stops)",
                file=sys.stderr,
                flush=True,
            )
        return _follow(path, args.job, args.poll, as_json=args.json)
    _refuse_a_log_without_records(path)
    if args.at is None and not args.json:
        # The timeline prints every good record first, so a damaged log still shows what
        # happened up to the damage (then the error); a torn tail is reported at the end.
        code = _timeline(path, args.job)
        _report_torn_tail(path)
        return code
    stop_seq, stop_at = _parse_at(args.at) if args.at is not None else (None, None)
    # By seq, only the records after the nearest snapshot are read: check only the tail.
    damage: eventlog.CorruptLogError | None = None
    try:
        last_seq = _report_torn_tail(path, tail_only=stop_at is None)
    except ReplayError as exc:
        # Damage after the point asked for (garbage appended, a bad record later on): the
        # intact records before it answer, read from the start (a snapshot's replay would
        # read on into the damage); a time past them: the fold meets the damage and says it.
        damage = exc.__cause__ if isinstance(exc.__cause__, eventlog.CorruptLogError) else None
        if damage is None or damage.seq <= 1 or (stop_seq is not None and stop_seq >= damage.seq):
            raise
        last_seq = damage.seq - 1
    state, seq, at = fold_log(
        path, stop_seq=stop_seq, stop_at=stop_at, use_snapshots=damage is None
    )
    if stop_seq is not None and stop_seq > last_seq:  # not shown as if it were record SEQ
        print(
            f"note: --at {args.at}: {path} ends at seq {last_seq}: this is its last state",
            file=sys.stderr,
        )
    elif stop_seq is not None and seq < stop_seq:  # (a salvaged log's lost record)
        print(
            f"note: --at {args.at}: record {stop_seq} of {path} was lost (the log was"
            f" salvaged): this is the state after seq {seq}",
            file=sys.stderr,
        )
    if stop_at is not None and seq == 0:
        _refuse_a_time_before_the_log(path, args.at, stop_at)
    if args.job is not None and args.job not in state.jobs:
        # A job of serve that expired left the state (its records stay in the log).
        why = "check the job id"
        if state.service.expired_tally:  # (a tombstone goes an hour after the expiry)
            gone = args.job in state.service.expired_jobs
            why = "it expired" if gone else "check the job id; or it expired"
            why += (
                " (past serve's --retention) and left the state: give --at a record before"
                " its expiry (`replay LOG --job ID` lists its records)"
            )
        raise UsageError(f"no job {args.job} in {path} at seq {seq}: {why}")
    if damage is not None:  # (answered: said on stderr, as a torn tail is)
        print(
            f"warning: {path}: corrupt at byte offset {damage.offset} (record seq"
            f" {damage.seq}: {damage.reason}): this is the state after seq {seq}, from the"
            f" intact records before it; {eventlog.errors.salvage_command(path)} copies"
            " them to a new log",
            file=sys.stderr,
        )
    if args.json:
        document = state_document(state, log=path, seq=seq, at=at, job_id=args.job, moment=stop_at)
        _write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        return EXIT_OK
    print_state(state, seq, at, job_id=args.job, moment=stop_at)
    return EXIT_OK
