"""What the MonitorActor shows: JSON lines, the Rich live view, the run summary, stalls.

Everything here reads the folded :class:`~conjure_actors.domain.state.State` or one
published record, never the network: the monitor only watches. Machine URLs and tokens are
not in the state, so nothing here can leak them.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from typing import Any

import attrs
import msgspec

from conjure_actors.domain import state as st
from conjure_actors.domain.prices import format_usd

_json = msgspec.json.Encoder()


def event_json_line(seq: int, ts: float, event: msgspec.Struct) -> str:
    """One JSON line for one published record: ``{"seq", "ts", "type", ...fields}``."""
    body: dict[str, Any] = {"seq": seq, "ts": round(ts, 6)}
    body.update(msgspec.to_builtins(event))
    return _json.encode(body).decode()


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


def job_eta(state: st.State, job: st.Job, now: float) -> float | None:
    """Seconds left for a running prompt, from its pace since it began executing (queueing
    and machine start-up do not count); ``None`` when there is nothing to go on."""
    if job.status != st.RUNNING or job.execution_started_at is None:
        return None
    fraction = job_fraction(state, job)
    if not 0 < fraction < 1:
        return None
    return max(0.0, now - job.execution_started_at) * (1 - fraction) / fraction


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 100:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def shown_jobs(state: st.State, job_ids: Iterable[str] | None, limit: int) -> list[st.Job]:
    """The jobs the live view lists: running, then waiting, then the latest finished."""
    jobs = [state.jobs[j] for j in (job_ids or state.jobs) if j in state.jobs]
    running = [j for j in jobs if j.status == st.RUNNING]
    waiting = [j for j in jobs if j.status in st.ACTIVE_STATUSES and j.status != st.RUNNING]
    ended = sorted(
        (j for j in jobs if j.status not in st.ACTIVE_STATUSES),
        key=lambda j: j.finished_at or j.updated_at,
        reverse=True,
    )
    return (running + waiting + ended)[:limit]


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


def summarize(state: st.State, job_ids: Iterable[str] | None = None) -> Summary:
    """Count jobs by outcome and machines used, with the bill from the ledger."""
    jobs = (
        [state.jobs[j] for j in job_ids if j in state.jobs]
        if job_ids
        else list(state.jobs.values())
    )
    count = {s: 0 for s in st.JOB_STATUSES}
    for job in jobs:
        count[job.status] += 1
    return Summary(
        jobs=len(jobs),
        succeeded=count[st.SUCCEEDED],
        failed=count[st.FAILED],
        cancelled=count[st.CANCELLED],
        unfinished=sum(count[s] for s in st.RESUMABLE_STATUSES),
        machines=len(state.machines),
        cost_micros=state.ledger.total_micros,
        price_table_versions=tuple(state.ledger.price_table_versions),
        outputs=sum(len(j.outputs) for j in jobs),
    )


def summary_lines(
    summary: Summary, *, seconds: float, out_dir: str, log_path: str, mode: str
) -> list[str]:
    """The human summary printed at the end of ``run``."""
    tables = ", ".join(summary.price_table_versions) or "no machine billed"
    lines = [
        f"jobs: {summary.jobs} ({summary.succeeded} succeeded, {summary.failed} failed,"
        f" {summary.cancelled} cancelled"
        + (f", {summary.unfinished} unfinished" if summary.unfinished else "")
        + ")",
        f"time: {seconds:.1f} s",
        f"cost: {format_usd(summary.cost_micros)} ({tables})",
        f"machines: {summary.machines} used ({mode})",
        f"outputs: {summary.outputs} files under {out_dir}",
        f"log: {log_path}  (python -m conjure_actors replay {shlex.quote(log_path)})",
    ]
    return lines


def render_view(
    state: st.State, now: float, job_ids: Iterable[str] | None = None, *, limit: int = 20
) -> Any:
    """The Rich live view: a line per job (status, bar, share done, running node, ETA), the
    machines (state, jobs served, cost so far) and the total cost (and budget)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    ids = list(job_ids) if job_ids is not None else list(state.jobs)
    jobs = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("job", "status", "progress", "done", "node", "eta"):
        jobs.add_column(col, justify="right" if col in ("done", "eta") else "left")
    shown = shown_jobs(state, ids, limit)
    for job in shown:
        fraction = job_fraction(state, job)
        jobs.add_row(
            job.job_id[:16],
            job.status,
            ProgressBar(total=1.0, completed=fraction, width=24),
            f"{fraction:.0%}",
            node_label(state, job),
            _eta_text(job_eta(state, job, now)),
        )
    hidden = sum(1 for j in ids if j in state.jobs) - len(shown)
    if hidden > 0:
        jobs.add_row(f"... {hidden} more", "", "", "", "", "")
    machines = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("machine", "state", "jobs", "cost"):
        machines.add_column(col, justify="right" if col in ("jobs", "cost") else "left")
    total_micros = 0
    for m in state.machines.values():
        cost = live_cost(m, now)
        total_micros += cost
        status = "busy" if m.status == st.M_READY and m.leases else m.status
        machines.add_row(m.server_id[:16], status, str(m.jobs_served), format_usd(cost))
    total = f"total cost: {format_usd(total_micros)}"
    if state.budget.limit_micros is not None:
        total += f" of {format_usd(state.budget.limit_micros)} budget"
    return Group(jobs, machines, total)
