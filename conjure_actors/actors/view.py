"""What the MonitorActor shows: JSON lines, the Rich live view, the run summary, stalls.

Everything here reads the folded :class:`~conjure_actors.domain.state.State` or one
published record, never the network: the monitor only watches. Machine URLs and tokens are
not in the state, so nothing here can leak them.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from typing import Any, Final

import attrs
import msgspec

from conjure_actors.domain import state as st
from conjure_actors.domain.cost_policy import at_most_bills
from conjure_actors.domain.prices import format_usd

_json = msgspec.json.Encoder()


def event_json_line(seq: int, ts: float, event: msgspec.Struct) -> str:
    """One JSON line for one published record: ``{"seq", "ts", "type", ...fields}``.

    The event is encoded once, straight from its Struct (the tag first, then its fields:
    what ``to_builtins`` gives, in the same order), and ``seq``/``ts`` are written in front
    of it: no intermediate dict per line."""
    kind = type(event)
    spliced = _SPLICED.get(kind)
    if spliced is None:
        spliced = _SPLICED[kind] = _spliceable(kind)
    if not spliced:
        body: dict[str, Any] = {"seq": seq, "ts": round(ts, 6)}
        body.update(msgspec.to_builtins(event))
        return _json.encode(body).decode()
    head = b'{"seq":%d,"ts":%b,' % (seq, _json.encode(round(ts, 6)))
    return (head + memoryview(_json.encode(event))[1:]).decode()


_SPLICED: dict[type, bool] = {}


def _spliceable(kind: type) -> bool:
    """Whether a record of this Struct type can be written as ``seq, ts`` + its own encoding:
    it is tagged (never ``{}``) and has no field named ``seq`` or ``ts`` (which the dict
    form would overwrite in place)."""
    if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
        return False
    config = kind.__struct_config__
    # The encoded names straight from the class (what msgspec.structs.fields reads them
    # from), not fields(), which also resolves every field's type annotation: ~600 Python
    # bytecodes per event type, once per type and run (issue 16).
    names = set(kind.__struct_encode_fields__)
    return config.tag_field is not None and not names & {"seq", "ts"}


@attrs.define
class StallDetector:
    """Remembers each running job's last sign of life; reports those silent too long.

    A job is reported once per silence: a new sign of life re-arms it.
    """

    stall_seconds: float
    _last: dict[str, float] = attrs.Factory(dict)
    _reported: set[str] = attrs.Factory(set)

    def alive(self, job_id: str, now: float) -> None:
        self._last[job_id] = now
        self._reported.discard(job_id)

    def forget(self, job_id: str) -> None:
        self._last.pop(job_id, None)
        self._reported.discard(job_id)

    def stalled(self, now: float) -> list[tuple[str, float]]:
        out = []
        for job_id, last in self._last.items():
            idle = now - last
            if idle >= self.stall_seconds and job_id not in self._reported:
                self._reported.add(job_id)
                out.append((job_id, idle))
        return out


_class_types: dict[str, dict[str, str]] = {}


def _nodes_of(state: st.State, sha: str) -> dict[str, str]:
    """A workflow's node ids and their ``class_type`` (parsed once per workflow)."""
    nodes = _class_types.get(sha)
    if nodes is None:
        record = state.workflows.get(sha)
        try:
            graph = json.loads(record.graph_json) if record is not None else {}
        except ValueError:
            graph = {}
        nodes = {
            str(node_id): str(node.get("class_type", "")) if isinstance(node, dict) else ""
            for node_id, node in (graph.items() if isinstance(graph, dict) else ())
        }
        _class_types[sha] = nodes
    return nodes


def _graph_size(state: st.State, sha: str) -> int:
    return len(_nodes_of(state, sha))


def node_label(state: st.State, job: st.Job) -> str:
    """The running node as ``"20 KSampler"`` (its id alone if the graph does not say)."""
    node_id = job.current_node
    if not node_id:
        return ""
    class_type = _nodes_of(state, job.workflow_sha256).get(node_id, "")
    return f"{node_id} {class_type}" if class_type else node_id


ETA_MIN_SECONDS: Final = 5.0
"""An ETA needs this much execution behind it: cached nodes make the first seconds jump."""

ETA_MIN_FRACTION: Final = 0.05
"""... and this much of the work done (a pace from 1% is noise)."""


def job_eta(state: st.State, job: st.Job, now: float) -> float | None:
    """Seconds left for a running prompt, from its pace since it began executing (queueing
    and machine start-up do not count); ``None`` when there is nothing meaningful to go on
    (too early, too little done, or an estimate under a second: never "0 s at 54%")."""
    if job.status != st.RUNNING or job.execution_started_at is None:
        return None
    fraction = job_fraction(state, job)
    elapsed = now - job.execution_started_at
    if not ETA_MIN_FRACTION <= fraction < 1 or elapsed < ETA_MIN_SECONDS:
        return None
    left = elapsed * (1 - fraction) / fraction
    return left if left >= 1.0 else None


def overall_fraction(state: st.State, jobs: list[st.Job]) -> float:
    """How far the whole run is: each job's share done (a failed or cancelled job counts as
    done: nothing more will happen to it)."""
    if not jobs:
        return 0.0
    done = sum(
        1.0 if j.status in (st.FAILED, st.CANCELLED) else job_fraction(state, j) for j in jobs
    )
    return done / len(jobs)


def run_eta(fraction: float, elapsed: float) -> float | None:
    """Seconds left for the whole run at its pace so far; ``None`` while not meaningful."""
    if not ETA_MIN_FRACTION <= fraction < 1 or elapsed < 2 * ETA_MIN_SECONDS:
        return None
    left = elapsed * (1 - fraction) / fraction
    return left if left >= 1.0 else None


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return duration_text(seconds)


def duration_text(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    if seconds < 100:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def shown_jobs(state: st.State, job_ids: Iterable[str] | None, limit: int) -> list[st.Job]:
    """The jobs the live view lists: running, then the latest failed or cancelled (so their
    reason is seen), then waiting, then the latest finished otherwise."""
    jobs = [state.jobs[j] for j in (job_ids or state.jobs) if j in state.jobs]
    running = [j for j in jobs if j.status == st.RUNNING]
    waiting = [j for j in jobs if j.status in st.ACTIVE_STATUSES and j.status != st.RUNNING]
    ended = sorted(
        (j for j in jobs if j.status not in st.ACTIVE_STATUSES),
        key=lambda j: j.finished_at or j.updated_at,
        reverse=True,
    )
    failed = [j for j in ended if j.status in (st.FAILED, st.CANCELLED)]
    others = [j for j in ended if j.status not in (st.FAILED, st.CANCELLED)]
    return (running + failed + waiting + others)[:limit]


def job_fraction(state: st.State, job: st.Job) -> float:
    """How far a job is: finished nodes (and the running node's progress) over all nodes."""
    if job.status == st.SUCCEEDED:
        return 1.0
    total = _graph_size(state, job.workflow_sha256) or max(1, len(job.nodes))
    done = 0.0
    for node in job.nodes.values():
        if node.status in ("cached", "executed"):
            done += 1
        elif node.status == "running" and node.max:
            done += min(1.0, node.value / node.max)
    return min(1.0, done / total)


live_cost = st.machine_cost_at  # a machine's cost so far (the live view's cost column)


def _flat(text: str) -> str:
    """A message from a server or a log, fit for one line: whitespace runs become one space,
    other control characters are escaped."""
    flat = " ".join(str(text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


_CLIENT_PREFIX: Final = re.compile(r"^.{0,80}? rejected prompt [0-9A-Za-z-]+: ")
"""The client's preamble of a rejection (which server, which prompt id): not the reason."""


def _names_node(message: str, node_id: str) -> bool:
    """Whether ``message`` already names node ``node_id`` ("node 16 (LoadImage)...",
    "node 1: unknown class...")."""
    return f"node {node_id} " in message or f"node {node_id}:" in message


_IN_WORDS: Final[dict[str, str]] = {
    # conjure_actors' own error types, said in words on a job's failure line (the log and
    # ``--json`` keep ``error_type``); "": the message says it alone ("no machine:
    # ...", "its actor did not start: ..."). Other types (ComfyUI's exception classes,
    # "torch.OutOfMemoryError") are ComfyUI's own words for what went wrong: kept.
    "NoMachine": "",
    "ActorStartFailed": "",
    "BudgetRefused": "refused by the budget",
    "RetriesExhausted": "out of retries",
    "Timeout": "timed out",
    "InternalError": "internal error",
    "AttemptFailed": "attempt failed",
}


def _error_words(error_type: str, message: str) -> str:
    """``error_type: message`` for a failure line, with conjure_actors' own types in words."""
    words = _IN_WORDS.get(error_type, _flat(error_type))
    return f"{words}: {message}" if words else message


def job_reason(job: st.Job) -> str | None:
    """Why a failed or cancelled job ended, in one line (None for any other job): the node,
    its class, the error (conjure_actors' own error types in words, ComfyUI's as it named
    them) and message (ComfyUI's details included), as logged."""
    if job.status == st.CANCELLED:
        return _flat(job.cancel_reason or "cancelled")
    if job.status != st.FAILED:
        return None
    error = job.error
    if error is None:
        return "no reason recorded"
    where = ""
    message = _CLIENT_PREFIX.sub("", _flat(error.message))
    if error.node_id is not None and not _names_node(message, error.node_id):
        cls = f" ({_flat(error.node_type)})" if error.node_type else ""
        where = f"node {_flat(error.node_id)}{cls}: "
    return f"{where}{_error_words(error.error_type, message)}"


def short_reason(job: st.Job) -> str | None:
    """:func:`job_reason` for a narrow column: the message first (the node and ComfyUI's
    words), without the error type or the client's "... rejected prompt <id>:" preamble."""
    if job.status != st.FAILED or job.error is None:
        return job_reason(job)
    message = _CLIENT_PREFIX.sub("", _flat(job.error.message))
    if job.error.node_id is not None and not _names_node(message, job.error.node_id):
        message = f"node {job.error.node_id}: {message}"
    return message


_FIRST_NODE: Final = re.compile(r"\bnode (\S+) \(([^()]+)\)")


def error_record(job: st.Job) -> dict[str, Any]:
    """The ``run.error`` JSON record of a failed or cancelled job (see docs/run-json.md).
    The node is the one the log recorded (``PromptRejected``'s first node since its
    ``node_id``/``class_type`` fields exist); an older log's rejection named it only in
    its message, so the first node the message names stands in."""
    error = job.error if job.status == st.FAILED else None
    node_id = error.node_id if error is not None else None
    node_type = error.node_type if error is not None else None
    if error is not None and node_id is None:
        found = _FIRST_NODE.search(error.message)
        if found is not None:
            node_id, node_type = found.group(1), found.group(2)
    return {
        "type": "run.error",
        "job_id": job.job_id,
        "status": job.status,
        "error_type": error.error_type if error is not None else "Cancelled",
        "message": short_reason(job) or "",
        "node_id": node_id,
        "node_type": node_type,
        "retryable": error.retryable if error is not None else False,
        "attempt": job.attempt,
    }


@attrs.frozen
class Summary:
    """The end-of-run figures."""

    jobs: int
    succeeded: int
    failed: int
    cancelled: int
    unfinished: int
    machines: int
    cost_micros: int
    price_table_versions: tuple[str, ...]
    outputs: int
    failures: tuple[tuple[str, str, str], ...] = ()
    """(job id, status, why) of every failed or cancelled job, in submission order."""
    budget_micros: int | None = None
    budget_exceeded: bool = False
    machines_idle: int = 0
    """Of :attr:`machines`, those that ran no job (a hedge spare, a launch stopped while
    Starting, a machine lost before its first job)."""
    cost_at_most: bool = False
    """:attr:`cost_micros` is the most the run can have cost: a machine in it is billed to
    its lease's end, its stop unanswered when a run went down, or to when a resume found it
    gone with no stop of it in the log (``cost_policy.at_most_bills``), though it most
    likely cost less."""


def machines_line(summary: Summary, mode: str) -> str:
    """The summary's ``machines:`` figure: ``2 used`` when every one ran a job, else ``3
    (2 ran jobs)`` (a launched machine that ran none was not "used")."""
    n, idle = summary.machines, summary.machines_idle
    if idle and n:
        return f"machines: {n} ({n - idle} ran jobs; {mode})"
    return f"machines: {n} used ({mode})"


def of_budget(limit_micros: int | None, *, exceeded: bool = False) -> str:
    """What follows a cost where a budget is set (the live view, the run's summary,
    ``status LOG``): `` of the $2.0000 budget``, `` (exceeded)`` once it was; "" without."""
    if limit_micros is None:
        return ""
    return f" of the {format_usd(limit_micros)} budget" + (" (exceeded)" if exceeded else "")


def _jobs_of(state: st.State, job_ids: Iterable[str] | None) -> list[st.Job]:
    if job_ids:
        return [state.jobs[j] for j in job_ids if j in state.jobs]
    return list(state.jobs.values())


def summarize(state: st.State, job_ids: Iterable[str] | None = None) -> Summary:
    """Count jobs by outcome and machines used, with the bill from the ledger."""
    jobs = _jobs_of(state, job_ids)
    count = {s: 0 for s in st.JOB_STATUSES}
    for job in jobs:
        count[job.status] += 1
    expired = 0
    if not job_ids:  # the whole log: its expired jobs left the state, their tally stays
        for status, n in state.service.expired_tally.items():
            count[status] = count.get(status, 0) + n
            expired += n
    failures = []
    for job in jobs:
        why = job_reason(job)
        if why is not None:
            failures.append((job.job_id, job.status, why))
    return Summary(
        jobs=len(jobs) + expired,
        succeeded=count[st.SUCCEEDED],
        failed=count[st.FAILED],
        cancelled=count[st.CANCELLED],
        unfinished=sum(count[s] for s in st.RESUMABLE_STATUSES),
        machines=len(state.machines),
        machines_idle=sum(1 for m in state.machines.values() if not m.jobs_served),
        cost_micros=state.ledger.total_micros,
        price_table_versions=tuple(state.ledger.price_table_versions),
        outputs=sum(len(j.outputs) for j in jobs),
        failures=tuple(failures),
        budget_micros=state.budget.limit_micros,
        budget_exceeded=state.budget.exceeded,
        cost_at_most=bool(at_most_bills(state)),
    )


SUMMARY_FAILURES: Final = 10
"""Failed or cancelled jobs the human summary names one by one (``status LOG`` has all)."""


def summary_lines(
    summary: Summary, *, seconds: float, out_dir: str, log_path: str, mode: str
) -> list[str]:
    """The human summary printed at the end of ``run``: the figures, and why each failed or
    cancelled job ended (one line each)."""
    tables = ", ".join(summary.price_table_versions) or "no machine billed"
    lines = [
        f"jobs: {summary.jobs} ({summary.succeeded} succeeded, {summary.failed} failed,"
        f" {summary.cancelled} cancelled"
        + (f", {summary.unfinished} unfinished" if summary.unfinished else "")
        + ")",
    ]
    for job_id, status, why in summary.failures[:SUMMARY_FAILURES]:
        lines.append(f"  {job_id} {status}: {why}")
    more = len(summary.failures) - SUMMARY_FAILURES
    if more > 0:
        lines.append(f"  ... {more} more: python -m conjure_actors status {shlex.quote(log_path)}")
    lines += [
        f"time: {seconds:.1f} s",
        f"cost: {'at most ' if summary.cost_at_most else ''}{format_usd(summary.cost_micros)}"
        f"{of_budget(summary.budget_micros, exceeded=summary.budget_exceeded)} ({tables})",
        machines_line(summary, mode),
        f"outputs: {summary.outputs} files under {out_dir}",
        f"log: {log_path}  (python -m conjure_actors replay {shlex.quote(log_path)})"
        if log_path
        else "log: none (the run recorded nothing to replay or resume: no job, no machine)",
    ]
    return lines


def summary_record(
    state: st.State,
    job_ids: Iterable[str] | None,
    *,
    seconds: float,
    out_dir: str,
    log_path: str,
    mode: str,
) -> dict[str, Any]:
    """The final ``run.summary`` JSON record (see docs/run-json.md): jobs by status, every
    output with its path and hash, the cost, the machines, the log."""
    jobs = _jobs_of(state, job_ids)
    summary = summarize(state, job_ids)
    by_status = {status: 0 for status in st.JOB_STATUSES}
    for job in jobs:
        by_status[job.status] += 1
    return {
        "type": "run.summary",
        "ok": summary.jobs > 0 and summary.succeeded == summary.jobs,
        "mode": mode,
        "seconds": round(seconds, 3),
        "jobs": {"total": summary.jobs, **by_status},
        "job_ids": [j.job_id for j in jobs],
        "errors": [error_record(j) for j in jobs if job_reason(j) is not None],
        "outputs": [
            {
                "job_id": j.job_id,
                "node_id": o.node_id,
                "path": o.path,
                "sha256": o.sha256,
                "size": o.size,
                "kind": o.kind,
            }
            for j in jobs
            for o in j.outputs
        ],
        "out_dir": out_dir,
        "cost": {
            "micros": summary.cost_micros,
            "usd": format_usd(summary.cost_micros),
            "price_tables": list(summary.price_table_versions),
            "budget_micros": state.budget.limit_micros,
            "at_most": summary.cost_at_most,
        },
        "machines": [
            {
                "server_id": m.server_id,
                "kind": m.kind,
                "server_type": m.server_type,
                "status": m.status,
                "jobs_served": m.jobs_served,
                "cost_micros": m.cost_micros,
            }
            for m in state.machines.values()
        ],
        "log": log_path,
    }


_STATUS_WORDS: Final = (
    (st.RUNNING, "running"),
    (None, "waiting"),
    (st.SUCCEEDED, "succeeded"),
    (st.FAILED, "failed"),
    (st.CANCELLED, "cancelled"),
    (st.INTERRUPTED, "interrupted"),
)


def _counts_text(jobs: list[st.Job]) -> str:
    counts = {word: 0 for _, word in _STATUS_WORDS}
    for job in jobs:
        if job.status == st.RUNNING:
            counts["running"] += 1
        elif job.status in st.ACTIVE_STATUSES:
            counts["waiting"] += 1
        elif job.status in counts:
            counts[job.status] += 1
    return ", ".join(f"{n} {word}" for word, n in counts.items() if n)


MACHINE_ROWS: Final = 4
"""Machines the live view lists one by one at most (the rest as a count), so the job list
keeps room on a short terminal."""


def render_view(
    state: st.State,
    now: float,
    job_ids: Iterable[str] | None = None,
    *,
    limit: int = 20,
    height: int | None = None,
    width: int | None = None,
    started_at: float | None = None,
) -> Any:
    """The Rich live view, made to fit ``height`` lines (a terminal's): first the run (jobs
    by status, overall progress, elapsed, an ETA when meaningful), the total cost and the
    machines (always visible), then as many jobs as fit (running first), each with its full
    id, status, bar, share done, running node or why it ended, and ETA; the rest counted."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    ids = list(job_ids) if job_ids is not None else list(state.jobs)
    all_jobs = [state.jobs[j] for j in ids if j in state.jobs]
    start = started_at if started_at is not None else state.system.started_at
    elapsed = max(0.0, now - start) if start is not None else None
    fraction = overall_fraction(state, all_jobs)
    head = f"{len(all_jobs)} jobs: {_counts_text(all_jobs) or 'none yet'}"
    progress = f"{fraction:.0%} done"
    if elapsed is not None:
        progress += f" · elapsed {duration_text(elapsed)}"
        eta = run_eta(fraction, elapsed)
        if eta is not None and any(j.status in st.ACTIVE_STATUSES for j in all_jobs):
            progress += f" · ETA ~{duration_text(eta)}"

    machines = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    machines.add_column(
        "machine",
        no_wrap=True,
        min_width=max(7, *(len(m) for m in state.machines)) if state.machines else 7,
    )
    machines.add_column("state", no_wrap=True)
    machines.add_column("jobs", justify="right", no_wrap=True)
    machines.add_column("cost", justify="right", no_wrap=True)
    total_micros = 0
    listed = sorted(
        state.machines.values(), key=lambda m: (m.status in st.MACHINE_GONE, m.server_id)
    )
    # A quarter of the terminal for machines (at least MACHINE_ROWS); the rest counted.
    machine_rows = max(MACHINE_ROWS, (height or 0) // 4)
    if len(listed) == machine_rows + 1:
        machine_rows += 1  # the "... more" row would take the line anyway
    hidden_machines: dict[str, int] = {}
    for i, m in enumerate(listed):
        cost = live_cost(m, now)
        total_micros += cost
        status = "busy" if m.status == st.M_READY and m.leases else m.status
        if m.draining is not None and m.status in (st.M_READY, st.M_STARTING):
            status = "draining"  # no new job; stopped once its jobs end
        if i < machine_rows:
            machines.add_row(m.server_id, status, str(m.jobs_served), format_usd(cost))
        else:
            hidden_machines[status] = hidden_machines.get(status, 0) + 1
    if hidden_machines:
        n = sum(hidden_machines.values())
        what = ", ".join(f"{count} {status}" for status, count in sorted(hidden_machines.items()))
        machines.add_row(f"... {n} more machine{'s' if n != 1 else ''} ({what})", "", "", "")
    total = f"{progress} · total cost: {format_usd(total_micros)}"
    total += of_budget(state.budget.limit_micros, exceeded=state.budget.exceeded)
    total += f" · {len(listed)} machine{'s' if len(listed) != 1 else ''}"

    # What fits: the head, the total, the machine table (header + rows), the job table's
    # header, the "... more" row; the jobs get the rest.
    ended = [j for j in all_jobs if j.status in (st.FAILED, st.CANCELLED)]
    last = max(ended, key=lambda j: j.finished_at or j.updated_at) if ended else None
    shown_machines = min(len(listed), machine_rows) + bool(hidden_machines)
    fixed = 2 + (1 + shown_machines if listed else 0) + 2 + (last is not None)
    rows = limit if height is None else max(1, min(limit, height - fixed))
    shown = shown_jobs(state, ids, rows)
    narrow = width is not None and width < 100
    bar = 10 if narrow else 24
    id_width = max((len(j.job_id) for j in shown), default=3)
    # Ids are never cut (users paste them); the node or the reason takes what is left.
    node_width = max(12, (width or 120) - id_width - 9 - bar - 4 - 4 - 10)
    jobs = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    jobs.add_column("job", no_wrap=True, min_width=id_width)
    jobs.add_column("status", no_wrap=True, min_width=9)
    jobs.add_column("progress", no_wrap=True, min_width=bar)
    jobs.add_column("done", justify="right", no_wrap=True, min_width=4)
    jobs.add_column("node / why", no_wrap=True, overflow="ellipsis", max_width=node_width)
    jobs.add_column("eta", justify="right", no_wrap=True, min_width=4)
    for job in shown:
        done = job_fraction(state, job)
        what = short_reason(job) or node_label(state, job)
        if len(what) > node_width:
            what = what[: node_width - 1] + "…"
        jobs.add_row(
            job.job_id,
            job.status,
            ProgressBar(total=1.0, completed=done, width=bar),
            f"{done:.0%}",
            what,
            _eta_text(job_eta(state, job, now)),
        )
    hidden = len(all_jobs) - len(shown)
    if hidden > 0:
        listed_ids = {j.job_id for j in shown}
        rest = _counts_text([j for j in all_jobs if j.job_id not in listed_ids])
        jobs.add_row(f"... {hidden} more", "", "", "", rest, "")
    parts: list[Any] = [
        Text(head, no_wrap=True, overflow="ellipsis"),
        Text(total, no_wrap=True, overflow="ellipsis"),
    ]
    if listed:
        parts.append(machines)
    parts.append(jobs)
    if last is not None:
        why = f"last {last.status}: {last.job_id}: {short_reason(last)}"
        parts.append(Text(why, no_wrap=True, overflow="ellipsis"))
    return Group(*parts)
