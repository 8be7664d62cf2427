"""One-line, human descriptions of events (the ``replay`` timeline, the monitor's log view).

:func:`describe` returns ``(subject, summary)``: the subject is what the event is about
(``job j1``, ``machine s-1``, ``actor cost``, ``budget``, ``system``), the summary a short
phrase. Nothing here can leak a secret: events carry none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from conjure_actors import lifecycle as rt
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.prices import format_usd
from conjure_actors.domain.state import M_STOPPING, MACHINE_GONE, Machine

__all__ = [
    "RAISE_BUDGET",
    "budget_left",
    "describe",
    "event_job_id",
    "event_subject",
    "machine_kind",
    "machine_status",
]


def _one_line(text: str) -> str:
    """Messages from servers may hold newlines; a timeline entry must not."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def _rate(micros_per_hour: int) -> str:
    return f"{format_usd(micros_per_hour, 2)}/h"


def _rejected_node(e: ev.PromptRejected) -> str:
    """``node 16 (LoadImage): `` when the rejection names a node its message does not."""
    if e.node_id is None or any(f"node {e.node_id}{c}" in e.message for c in " :"):
        return ""
    cls = f" ({e.class_type})" if e.class_type else ""
    return f"node {e.node_id}{cls}: "


def _num(value: float) -> str:
    return f"{value:g}"


RAISE_BUDGET: Final = "raise --budget (serve: PUT /api/conjure/budget)"
"""What to do about a refusal of the budget, in every line that tells one."""


def budget_left(*, needed: int | None, spent: int, committed: int, limit: int) -> str:
    """The figures a launch or a renewal was refused on, in the words every line about a
    refusal uses: ``needs $N, $L of the $B budget left after $S spent and $C committed``
    (``needed`` None: from a log written before it was recorded)."""
    left = limit - spent - committed
    needs = "" if needed is None else f"needs {format_usd(needed)}, "
    after = f"after {format_usd(spent)} spent and {format_usd(committed)} committed"
    if left < 0:  # (the budget lowered below what is spent and committed)
        return f"{needs}the {format_usd(limit)} budget is {format_usd(-left)} over {after}"
    return f"{needs}{format_usd(left)} of the {format_usd(limit)} budget left {after}"


def _limit_reached(e: ev.BudgetLimitReached) -> str:
    """What the budget refused, on what figures, and what follows: the pool asks again,
    so nothing here says that no launch or renewal will come (one that fits later is
    granted)."""
    figures = budget_left(
        needed=e.needed_micros,
        spent=e.spent_micros,
        committed=e.committed_micros,
        limit=e.limit_micros,
    )
    if e.what == "renewal":
        machine = "" if e.server_id is None else f" of machine {e.server_id}"
        return (
            f"lease renewal{machine} refused: {figures}; the machine takes no new job"
            " and stops once idle, or at its lease's end (a job still on it then loses it)"
            f" unless a renewal asked again fits by then; {RAISE_BUDGET}"
        )
    return (
        f"launch refused: {figures}; jobs waiting for a machine wait for one running"
        " or starting (with none, they fail), and a launch is asked again while they wait;"
        f" {RAISE_BUDGET}"
    )


_SUMMARIES: Final[dict[type[Any], Callable[[Any], str]]] = {
    # The subject of a line already names what it is about (``workflow``, ``budget``,
    # ``launch K``: event_subject): a summary does not say it again.
    ev.WorkflowRegistered: lambda e: f"{e.name} registered ({e.sha256[:12]})",
    ev.JobSubmitted: lambda e: (
        f"submitted (workflow {e.workflow_sha256[:12]}, priority {e.priority}"
        + (f", seed {e.seed}" if e.seed is not None else "")
        + (f", {len(e.bindings)} bindings" if e.bindings else "")
        + (f", parent {e.parent_id}" if e.parent_id else "")
        + ")"
    ),
    ev.JobQueued: lambda e: "queued" + (f" ({e.reason})" if e.reason else ""),
    ev.JobStarted: lambda e: f"attempt {e.attempt} started on {e.server_id}",
    ev.JobRetrying: lambda e: f"attempt {e.attempt} failed ({e.reason}); retry in {_num(e.delay)}s",
    ev.JobSucceeded: lambda e: "succeeded",
    ev.JobFailed: lambda e: (
        f"failed: {e.error_type}: {e.message}" + (" (retryable)" if e.retryable else "")
    ),
    ev.JobCancelled: lambda e: f"cancelled ({e.reason})",
    ev.JobInterrupted: lambda e: "interrupted" + (f" ({e.reason})" if e.reason else ""),
    ev.JobResumed: lambda e: "resumed",
    ev.JobStalled: lambda e: f"stalled: no progress for {_num(e.idle_seconds)}s",
    ev.MachineLaunchRequested: lambda e: (
        f"requested: {e.server_type}, version {e.workflow_version}, lease {e.estimated_duration}s"
    ),
    ev.MachineLaunched: lambda e: f"launched (key {e.request_key}), starting",
    ev.MachineLaunchFailed: lambda e: f"failed: {e.reason}",
    ev.MachineStatusObserved: lambda e: f"status {e.status}",
    ev.MachineUnknownListed: lambda e: (
        f"listed {e.status}, {e.server_type or 'type unknown'}, unknown to this log"
        + ("" if e.cost_micros is None else f", {format_usd(e.cost_micros)} so far")
        + ": left running (another client's, or launched after the log's end)"
    ),
    ev.MachineReady: lambda e: (
        f"ready; billing at {_rate(e.rate_micros_per_hour)} ({e.price_table_version})"
    ),
    ev.MachineHealthy: lambda e: "healthy (ComfyUI answered)",
    ev.MachineUnhealthy: lambda e: f"unhealthy ({e.reason}): jobs wait for it",
    ev.MachineLeased: lambda e: f"leased to job {e.job_id}",
    ev.MachineReleased: lambda e: f"released by job {e.job_id}",
    ev.LeaseRenewed: lambda e: "lease renewed",
    ev.MachineStopping: lambda e: f"stopping ({e.reason})",
    ev.MachineDraining: lambda e: f"draining ({e.reason}): no new job, stopped once its jobs end",
    ev.MachineStopped: lambda e: (
        f"stopped: billed {e.billed_seconds}s, {format_usd(e.cost_micros)}"
    ),
    ev.MachineStoppedAgain: lambda e: (
        f"still up after its stop, {'stopped' if e.found else 'found gone'} by a DELETE"
        f" sent again: billed {e.billed_seconds}s, {format_usd(e.cost_micros)}"
    ),
    ev.MachineLost: lambda e: f"lost ({e.reason})",
    ev.MachineAdopted: lambda e: f"adopted after restart ({e.server_type}, {e.status})",
    # (A ComfyUI's server_id is "comfyui": "machine comfyui  attached (comfyui, ...)" said
    # it twice and not what it is.)
    ev.MachineAttached: lambda e: (
        f"attached ({'a ComfyUI you run' if e.kind == 'comfyui' else 'the dev machine'},"
        f" {e.max_jobs} job(s) at a time)"
    ),
    ev.LatePromptStopped: lambda e: (
        f"prompt {e.prompt_id}, given up, arrived late on {e.server_id}: "
        + ("stopped" if e.confirmed is not False else "stop sent, not confirmed")
        + f" ({e.was})"
    ),
    ev.InputUploaded: lambda e: f"uploaded {e.name} ({e.size} bytes) for node {e.node_id}",
    ev.PromptSubmitting: lambda e: (
        f"submitting prompt {e.prompt_id} (attempt {e.attempt}) to {e.server_id}"
    ),
    ev.PromptSubmitted: lambda e: f"prompt {e.prompt_id} queued as #{_num(e.number)}",
    ev.PromptRejected: lambda e: (
        f"prompt {e.prompt_id} rejected: {_rejected_node(e)}{e.error_type}: {e.message}"
    ),
    ev.ExecutionStarted: lambda e: f"prompt {e.prompt_id} started",
    ev.NodeCached: lambda e: f"cached nodes: {', '.join(e.nodes) or 'none'}",
    ev.NodeStarted: lambda e: f"node {e.node_id} running",
    ev.NodeProgress: lambda e: f"node {e.node_id} {_num(e.value)}/{_num(e.max)}",
    ev.NodeExecuted: lambda e: f"node {e.node_id} done",
    ev.ExecutionSucceeded: lambda e: f"prompt {e.prompt_id} succeeded",
    ev.ExecutionInterrupted: lambda e: f"prompt {e.prompt_id} interrupted",
    ev.ExecutionFailed: lambda e: (
        f"node {e.node_id} ({e.node_type}) failed: {e.exception_type}: {e.message}"
    ),
    ev.OutputSaved: lambda e: (
        f"saved {e.kind} {e.filename} ({e.size} bytes, sha256 {e.sha256[:12]}) -> {e.path}"
    ),
    ev.CostAccrued: lambda e: f"cost so far {format_usd(e.amount_micros)}",
    ev.BudgetSet: lambda e: (
        (
            "none set (no spending limit)"
            if e.limit_micros is None
            else f"set to {format_usd(e.limit_micros)}"
        )
        + (" (--budget at start)" if e.from_start else "")
    ),
    ev.BudgetWarning: lambda e: (
        f"warning: {format_usd(e.spent_micros)} of the {format_usd(e.limit_micros)} budget spent"
    ),
    ev.BudgetExceeded: lambda e: (
        f"exceeded: {format_usd(e.spent_micros)} of the {format_usd(e.limit_micros)} budget"
        " spent; launching stops, the unfinished jobs are cancelled and every machine is"
        f" stopped; {RAISE_BUDGET}"
    ),
    # A launch is for the demand, not one job: ``job_id`` names the waiting job whose ask
    # it was, which a machine launched or running may still serve (asks race each other).
    ev.LaunchRefused: lambda e: (
        f"launch refused (job {e.job_id} waiting): needs {format_usd(e.estimate_micros)},"
        + (
            f" {format_usd(e.remaining_micros)} of the budget left"
            if e.remaining_micros >= 0
            else f" the budget {format_usd(-e.remaining_micros)} over"
        )
        + " after what is spent and committed"
    ),
    ev.BudgetLimitReached: _limit_reached,
    ev.SystemStarted: lambda e: f"started run {e.run_id} ({e.mode}, version {e.version})",
    ev.SystemStopped: lambda e: f"stopped ({e.reason})",
    rt.ActorStarted: lambda e: f"started (incarnation {e.incarnation})",
    rt.ActorCrashed: lambda e: f"crashed: {e.error_type}: {e.message}",
    rt.ActorRestarted: lambda e: f"restarting after {_num(e.delay)}s",
    rt.ActorStopped: lambda e: f"stopped ({e.reason})",
    rt.SupervisorEscalated: lambda e: (
        f"escalated: {e.child} restarted {e.restarts} times in {_num(e.window)}s"
    ),
    # A job's output is said under its job (event_subject): which asset it became is
    # said then, or the line names no asset at all.
    se.AssetRecorded: lambda e: (
        ("recorded" if e.job_id is None else f"output recorded as asset {e.asset_id}")
        + f": {e.file_path or '-'} ({e.size} bytes, {e.hash[:19]})"
        + ("" if e.created_new else ", existing blob")
    ),
    se.AssetDeleted: lambda e: "deleted",
    se.AssetExpired: lambda e: "expired",
    se.IdempotencyKeyClaimed: lambda e: f"{e.scope} key {e.key!r} claimed",
    se.IdempotencyKeyReleased: lambda e: f"{e.scope} key {e.key!r} released ({e.reason})",
    se.ApiJobAccepted: lambda e: (
        "accepted by the job service" + (f", labels {_one_line(str(e.labels))}" if e.labels else "")
    ),
    se.ApiJobCancelRequested: lambda e: "cancel requested by the client",
    se.ApiJobExpired: lambda e: "expired (past its retention)",
    se.ApiJobExpiryMoved: lambda e: (
        f"ended: kept {_num(round(e.expires_at - e.at))}s more (its retention runs from its end)"
    ),
    se.ApiJobOutputsNotStored: lambda e: (
        f"{len(e.paths)} output(s) not stored as assets ({_one_line(e.reason)}):"
        " the job service reads it failed (outputs_not_stored)"
    ),
}


def machine_status(machine: Machine) -> str:
    """A machine's status as ``replay`` and the live view show it: the status, and while it
    drains (``MachineDraining``: no new job, stopped once its jobs end) ``draining`` with the
    reason, e.g. ``ready, draining (reattach_given_up)``."""
    status = machine.status
    if machine.draining is None or status in MACHINE_GONE or status == M_STOPPING:
        return status
    return f"{status}, draining ({machine.draining})"


def machine_kind(machine: Machine, mode: str | None) -> str:
    """Where a machine ran, as the run's summary says it (``machines: 1 used (simulated)``):
    a RunComfy machine of a log whose run was on the embedded simulated cloud (``mode``,
    the log's ``system.mode``) is ``simulated`` (a log is resumed only where its run ran, so
    its last start's mode is every start's)."""
    if machine.kind == "runcomfy" and mode == "simulated":
        return "simulated"
    return str(machine.kind)


def event_job_id(event: object) -> str | None:
    """The job an event is about, if any (``MachineLeased`` and friends count)."""
    job_id = getattr(event, "job_id", None)
    return job_id if isinstance(job_id, str) else None


def event_subject(event: object) -> str:
    """What the event is about: ``job X``, ``machine Y``, ``actor Z``, ``budget``..."""
    if isinstance(event, ev.BudgetLimitReached):
        return "budget"  # its server_id names the machine refused, not what it is about
    if isinstance(event, ev.MachineLeased | ev.MachineReleased):
        return f"machine {event.server_id}"
    job_id = event_job_id(event)
    if job_id is not None and not isinstance(event, ev.LaunchRefused):
        return f"job {job_id}"
    server_id = getattr(event, "server_id", None)
    if isinstance(server_id, str):
        return f"machine {server_id}"
    if isinstance(event, ev.MachineLaunchRequested | ev.MachineLaunchFailed):
        return f"launch {event.request_key}"
    if isinstance(event, rt.ActorStarted | rt.ActorCrashed | rt.ActorRestarted | rt.ActorStopped):
        return f"actor {event.actor}"
    if isinstance(event, rt.SupervisorEscalated):
        return f"actor {event.supervisor}"
    if isinstance(event, ev.WorkflowRegistered):
        return "workflow"
    if isinstance(event, se.AssetDeleted | se.AssetExpired | se.AssetRecorded):
        return f"asset {event.asset_id}"
    if isinstance(event, se.IdempotencyKeyClaimed | se.IdempotencyKeyReleased):
        return "idempotency"
    if isinstance(event, ev.BudgetSet | ev.BudgetWarning | ev.BudgetExceeded | ev.LaunchRefused):
        return "budget"
    return "system"


def describe(event: object) -> tuple[str, str]:
    """``(subject, one-line summary)`` of any event (unknown types: tag and fields)."""
    summarize = _SUMMARIES.get(type(event))
    if summarize is not None:
        return event_subject(event), _one_line(summarize(event))
    if isinstance(event, msgspec.Struct):
        fields = msgspec.structs.asdict(event)
        fields.pop("at", None)
        text = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return event_subject(event), _one_line(f"{type(event).__name__}({text})")
    return "system", repr(event)
