"""The decide step: pure functions that read the state, validate a command, return events.

An actor never assigns to the state. It calls one of these with the current state and the
facts it learned (times, ids, what a server said); a rejected command raises a
:class:`~conjure_actors.domain.errors.DomainError` and emits nothing; an accepted one returns
the event(s) to journal. :func:`~conjure_actors.domain.state.apply` then folds them in.
Nothing here reads a clock or makes an id: the caller passes ``at`` and every id.

Naming: functions are the commands, in the imperative (``start_job``, ``lease_machine``);
the events they return are in the past tense.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import attrs

from conjure_actors.domain import events as ev
from conjure_actors.domain import prices
from conjure_actors.domain.errors import CommandRejectedError, IllegalTransitionError
from conjure_actors.domain.state import (
    ACTIVE_STATUSES,
    CANCELLED,
    FAILED,
    INTERRUPTED,
    LEGAL_TRANSITIONS,
    M_READY,
    MACHINE_GONE,
    QUEUED,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    Job,
    Machine,
    State,
)

__all__ = [
    "AttemptFailure",
    "Intents",
    "cancel_job",
    "check_transition",
    "dropped_outputs",
    "execution_failure",
    "fail_job",
    "interrupt_job",
    "job_crashed",
    "job_deadline",
    "judge_failure",
    "lease_machine",
    "machine_launched",
    "machine_ready",
    "outside_interrupt",
    "pending_intents",
    "queue_job",
    "release_machine",
    "request_launch",
    "resume_job",
    "retry_job",
    "start_job",
    "stop_machine",
    "submit_job",
    "succeed_job",
    "time_out_job",
]

TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})


def check_transition(job_id: str, from_status: str, to_status: str) -> None:
    """Raise :class:`IllegalTransitionError` (naming job, from and to) unless legal."""
    if to_status not in LEGAL_TRANSITIONS.get(from_status, frozenset()):
        raise IllegalTransitionError(job_id, from_status, to_status)


def _job(state: State, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None:
        raise CommandRejectedError(f"no job {job_id} in this run: check the job id")
    return job


def _machine(state: State, server_id: str) -> Machine:
    machine = state.machines.get(server_id)
    if machine is None:
        raise CommandRejectedError(f"no machine {server_id} in this run: check the server id")
    return machine


# ------------------------------------------------------------------------------- jobs


def submit_job(
    state: State,
    *,
    job_id: str,
    workflow_sha256: str,
    at: float,
    bindings: Mapping[str, str] | None = None,
    image_path: str | None = None,
    image_sha256: str | None = None,
    prompt: str | None = None,
    priority: int = 0,
    seed: int | None = None,
    parent_id: str | None = None,
    workflow_version: str | None = None,
    extra_inputs: Mapping[str, str] | None = None,
) -> ev.JobSubmitted:
    """A new job on a registered workflow; ids must be new, a parent must exist."""
    if job_id in state.jobs:
        raise CommandRejectedError(f"job {job_id} already exists: choose a new job id")
    if workflow_sha256 not in state.workflows:
        raise CommandRejectedError(
            f"job {job_id}: workflow {workflow_sha256[:12]} is not registered: register it first"
        )
    if parent_id is not None and parent_id not in state.jobs:
        raise CommandRejectedError(f"job {job_id}: parent job {parent_id} does not exist")
    return ev.JobSubmitted(
        job_id=job_id,
        workflow_sha256=workflow_sha256,
        bindings=dict(bindings or {}),
        image_path=image_path,
        image_sha256=image_sha256,
        prompt=prompt,
        priority=priority,
        seed=seed,
        parent_id=parent_id,
        workflow_version=workflow_version,
        at=at,
        extra_inputs=dict(extra_inputs or {}),
    )


def queue_job(state: State, job_id: str, *, at: float, reason: str = "") -> ev.JobQueued:
    """Queue (or requeue) a job waiting for a machine."""
    check_transition(job_id, _job(state, job_id).status, QUEUED)
    return ev.JobQueued(job_id=job_id, reason=reason, at=at)


def start_job(state: State, job_id: str, server_id: str, *, at: float) -> ev.JobStarted:
    """Start the next attempt of a job on a machine it holds a lease on."""
    job = _job(state, job_id)
    check_transition(job_id, job.status, RUNNING)
    machine = _machine(state, server_id)
    if job_id not in machine.leases:
        raise CommandRejectedError(
            f"job {job_id} holds no lease on machine {server_id}: lease it first"
        )
    return ev.JobStarted(job_id=job_id, attempt=job.attempt + 1, server_id=server_id, at=at)


def retry_job(state: State, job_id: str, *, delay: float, reason: str, at: float) -> ev.JobRetrying:
    """Schedule another attempt after ``delay`` seconds."""
    job = _job(state, job_id)
    check_transition(job_id, job.status, RETRYING)
    if delay < 0:
        raise CommandRejectedError(f"job {job_id}: retry delay {delay} is negative")
    return ev.JobRetrying(job_id=job_id, attempt=job.attempt, delay=delay, reason=reason, at=at)


def succeed_job(
    state: State, job_id: str, *, at: float, saving: ev.OutputSaved | None = None
) -> ev.JobSucceeded:
    """Mark a job done: it must be running and have at least one verified output (``saving``:
    one saved in the same append, just before the success)."""
    job = _job(state, job_id)
    check_transition(job_id, job.status, SUCCEEDED)
    if not job.outputs and (saving is None or saving.job_id != job_id):
        raise CommandRejectedError(
            f"job {job_id} has no saved output: download and verify its outputs first"
        )
    return ev.JobSucceeded(job_id=job_id, at=at)


def fail_job(
    state: State,
    job_id: str,
    *,
    error_type: str,
    message: str,
    retryable: bool = False,
    at: float,
) -> ev.JobFailed:
    """Give up on a job (terminal)."""
    check_transition(job_id, _job(state, job_id).status, FAILED)
    return ev.JobFailed(
        job_id=job_id, error_type=error_type, message=message, retryable=retryable, at=at
    )


def cancel_job(state: State, job_id: str, *, reason: str, at: float) -> ev.JobCancelled:
    """Cancel a job that has not finished."""
    check_transition(job_id, _job(state, job_id).status, CANCELLED)
    return ev.JobCancelled(job_id=job_id, reason=reason, at=at)


def interrupt_job(state: State, job_id: str, *, reason: str, at: float) -> ev.JobInterrupted:
    """The run stops before the job finished: it waits, ``interrupted``, for a resume."""
    check_transition(job_id, _job(state, job_id).status, INTERRUPTED)
    return ev.JobInterrupted(job_id=job_id, reason=reason, at=at)


def resume_job(state: State, job_id: str, *, at: float) -> ev.JobResumed:
    """A resume takes up an interrupted job (running again if its prompt was submitted)."""
    job = _job(state, job_id)
    if job.status != INTERRUPTED:
        raise CommandRejectedError(f"job {job_id} is {job.status}, not interrupted")
    return ev.JobResumed(job_id=job_id, at=at)


FailureKind = Literal["fatal", "retryable", "machine_lost", "cancelled"]


@attrs.frozen
class AttemptFailure:
    """What went wrong with an attempt, as its WorkflowActor learned it.

    ``kind``: ``fatal`` (retrying cannot help: a prompt rejected by validation, an input
    missing, a node error: :func:`execution_failure`), ``retryable`` (a network error, a
    timeout of the attempt, a node out of memory),
    ``machine_lost`` (the machine went away: a requeue, not a failure) or ``cancelled``
    (someone else stopped the prompt: the job ends cancelled, not resubmitted). ``error_type``
    names the failure for ``JobFailed`` (``PromptRejected``, ``InputMissing``...).
    """

    kind: FailureKind
    reason: str
    error_type: str = "AttemptFailed"


MAX_LOST_MACHINES: Final = 3
"""Machines lost under one job before it fails (``retry.max_lost_machines``'s default)."""


def judge_failure(
    state: State,
    job_id: str,
    failure: AttemptFailure,
    *,
    max_attempts: int,
    delay: float,
    at: float,
    max_lost: int = MAX_LOST_MACHINES,
) -> ev.JobQueued | ev.JobRetrying | ev.JobFailed | ev.JobCancelled | None:
    """The job's next step after a failed attempt: requeue (machine lost, up to the
    ``max_lost``-th loss), retry after ``delay`` s, cancel (stopped by someone else), or
    fail (fatal, the ``max_attempts``-th failure, the ``max_lost``-th machine lost). None:
    the job already ended or is not running (nothing to decide)."""
    job = _job(state, job_id)
    if job.status in TERMINAL or job.status == INTERRUPTED:
        return None
    if failure.kind == "machine_lost":
        if job.status != RUNNING:
            return None
        if job.machines_lost + 1 >= max_lost:
            # A machine lost now and then is the cloud's; one lost under the same job again
            # and again is most likely the job's (a node that brings ComfyUI down, memory):
            # each loss was a paid boot and the graph up to it (QA7 F8: 17 machines).
            return ev.JobFailed(
                job_id=job_id,
                error_type="MachineLost",
                message=f"the machine running it was lost {job.machines_lost + 1} times (the"
                f" last: {failure.reason}): not run on another; does the workflow bring"
                " ComfyUI down (a node that crashes it, out of memory)? (retry.max_lost_machines)",
                retryable=True,
                at=at,
            )
        return ev.JobQueued(job_id=job_id, reason=failure.reason, at=at)
    if failure.kind == "cancelled":
        return cancel_job(state, job_id, reason=failure.reason, at=at)
    if failure.kind == "fatal":
        return ev.JobFailed(
            job_id=job_id,
            error_type=failure.error_type,
            message=failure.reason,
            retryable=False,
            at=at,
        )
    if job.status != RUNNING:
        # Failed before an attempt started (no machine to retry on, e.g. none could be
        # leased): nothing to retry, the job fails with the error it met.
        return ev.JobFailed(
            job_id=job_id,
            error_type=failure.error_type,
            message=failure.reason,
            retryable=True,
            at=at,
        )
    if job.failures + 1 >= max_attempts:
        return ev.JobFailed(
            job_id=job_id,
            error_type="RetriesExhausted",
            message=f"attempt {max(job.attempt, 1)}: {failure.reason}",
            retryable=True,
            at=at,
        )
    return retry_job(state, job_id, delay=delay, reason=failure.reason, at=at)


TRANSIENT_EXCEPTIONS: Final = frozenset(
    {
        "OutOfMemoryError",  # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError
        "torch.OutOfMemoryError",
        "torch.cuda.OutOfMemoryError",
        "MemoryError",
        "ConnectionError",
        "ConnectionResetError",
        "TimeoutError",
        "OSError",  # a model file on a network disk, a full temp dir
    }
)
"""``exception_type`` of a node error that another attempt may not meet (memory, I/O)."""

_TRANSIENT_MARKERS: Final = ("out of memory", "cuda error", "allocation on device")


def execution_failure(
    node_id: str | None, node_type: str | None, exception_type: str, message: str
) -> AttemptFailure:
    """A node raised while the prompt ran. The same graph on the same inputs raises the same
    error again (a bad value, a missing model, an image of the wrong size), so it is fatal:
    a retry that cannot help is not made. Only memory and I/O troubles are retried."""
    first = (message.strip().splitlines() or [""])[0]
    where = f"node {node_id or '?'} ({node_type or '?'})"
    reason = f"{where} failed: {exception_type}: {first}".rstrip(": ")
    short = exception_type.rsplit(".", 1)[-1]
    transient = (
        exception_type in TRANSIENT_EXCEPTIONS
        or short in TRANSIENT_EXCEPTIONS
        or any(m in message.lower() for m in _TRANSIENT_MARKERS)
    )
    return AttemptFailure("retryable" if transient else "fatal", reason, "ExecutionFailed")


def outside_interrupt(node_id: str | None = None, node_type: str | None = None) -> AttemptFailure:
    """The prompt was interrupted and this run did not ask for it (another client, e.g. the
    ComfyUI web UI, POSTed ``/interrupt``): someone meant to stop it, so the job ends
    cancelled instead of running again."""
    at_node = f" at node {node_id} ({node_type or '?'})" if node_id else ""
    return AttemptFailure(
        "cancelled",
        f"interrupted on the server{at_node}, not by this run",
        "InterruptedOnServer",
    )


def dropped_outputs(problems: list[str]) -> AttemptFailure:
    """``POST /prompt`` answered 200 but listed node errors: ComfyUI queued the prompt
    without the outputs those errors drop. Fewer outputs than asked is a failure, and the
    same graph would be answered the same way: fatal."""
    shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
    return AttemptFailure(
        "fatal",
        f"ComfyUI dropped output(s) for node errors: {shown}; fix the workflow inputs",
        "NodeErrors",
    )


def job_deadline(state: State, job_id: str, *, total_timeout: float) -> float:
    """The wall time at which the job times out: when the time it has spent inside runs
    reaches ``total_timeout``. It counts from its submission, or from the start of this run
    for a job an earlier run submitted, less what it used in earlier runs (``time_used``: a
    restart gives it what it had left, never its whole time again, and the days no process
    was alive do not count). Behind the run's start when it has used it all."""
    job = _job(state, job_id)
    return _counting_since(state, job) + total_timeout - job.time_used


def _counting_since(state: State, job: Job) -> float:
    """When this run began counting the job's time: its submission or the run's start."""
    started = state.system.started_at
    return job.submitted_at if started is None else max(job.submitted_at, started)


def time_out_job(state: State, job_id: str, *, total_timeout: float, at: float) -> ev.JobFailed:
    """The job's time inside runs reached its ``total_timeout``: it fails, retryable. One
    that ran in earlier runs says how long over how many, and the setting to raise."""
    job = _job(state, job_id)
    check_transition(job_id, job.status, FAILED)
    message = f"job did not finish within {total_timeout:g} s"
    if job.runs_used:
        now = max(0.0, at - _counting_since(state, job))
        used, runs = job.time_used + now, job.runs_used + (now > 0)
        message += (
            f": it ran about {used:.0f} s over {runs} run{'s' if runs != 1 else ''} (the"
            " time between runs does not count); raise retry.total_timeout"
            " (CONJURE_RETRY_TOTAL_TIMEOUT) to give it more"
        )
    return ev.JobFailed(
        job_id=job_id,
        error_type="Timeout",
        message=message,
        retryable=True,
        at=at,
    )


def job_crashed(
    state: State, job_id: str, *, crashes: int, max_crashes: int, error: str, at: float
) -> ev.JobFailed | None:
    """The job's actor crashed ``crashes`` times (a bug, not a cloud failure): up to
    ``max_crashes`` the job goes on where its log left it (None), then it fails. The limit is
    per job, so a job that keeps crashing fails alone and the run goes on."""
    job = _job(state, job_id)
    if job.status in TERMINAL or crashes <= max_crashes:
        return None
    return ev.JobFailed(
        job_id=job_id,
        error_type="InternalError",
        message=f"its actor crashed {crashes} times, last: {error}",
        retryable=False,
        at=at,
    )


# --------------------------------------------------------------------------- machines


def request_launch(
    state: State,
    *,
    request_key: str,
    server_type: str,
    workflow_version: str,
    estimated_duration: int,
    table: prices.PriceTable,
    at: float,
    max_jobs: int = 1,
) -> ev.MachineLaunchRequested:
    """The launch intent (log it BEFORE the POST). The server type must have a price."""
    if request_key in state.launch_requests or any(
        m.request_key == request_key for m in state.machines.values()
    ):
        raise CommandRejectedError(f"launch request {request_key} already used: pick a new key")
    if estimated_duration <= 0:
        raise CommandRejectedError(f"estimated_duration must be positive, not {estimated_duration}")
    if max_jobs < 1:
        raise CommandRejectedError(f"max_jobs must be at least 1, not {max_jobs}")
    table.rate(server_type)
    return ev.MachineLaunchRequested(
        request_key=request_key,
        server_type=server_type,
        workflow_version=workflow_version,
        estimated_duration=estimated_duration,
        max_jobs=max_jobs,
        at=at,
    )


def machine_launched(
    state: State, *, request_key: str, server_id: str, at: float
) -> ev.MachineLaunched:
    """RunComfy answered the launch of ``request_key`` with ``server_id``."""
    if request_key not in state.launch_requests:
        raise CommandRejectedError(f"no pending launch request {request_key}")
    if server_id in state.machines:
        raise CommandRejectedError(f"machine {server_id} is already known")
    return ev.MachineLaunched(request_key=request_key, server_id=server_id, at=at)


def machine_ready(
    state: State,
    server_id: str,
    *,
    service_ready_at: float,
    estimated_stopping_at: float | None,
    table: prices.PriceTable,
    at: float,
) -> ev.MachineReady:
    """The server reports Ready: fix its rate from ``table`` (recorded in the event)."""
    machine = _machine(state, server_id)
    if machine.status in MACHINE_GONE:
        raise CommandRejectedError(f"machine {server_id} is {machine.status}, it cannot be ready")
    if machine.server_type is None:
        raise CommandRejectedError(f"machine {server_id} has no server type to price")
    return ev.MachineReady(
        server_id=server_id,
        service_ready_at=service_ready_at,
        estimated_stopping_at=estimated_stopping_at,
        rate_micros_per_hour=table.rate(machine.server_type),
        price_table_version=table.version,
        at=at,
    )


def lease_machine(state: State, server_id: str, job_id: str, *, at: float) -> ev.MachineLeased:
    """Hand a ready machine to an active job, within the machine's job limit."""
    machine = _machine(state, server_id)
    job = _job(state, job_id)
    if machine.status != M_READY:
        raise CommandRejectedError(f"machine {server_id} is {machine.status}, not ready")
    if job.status not in ACTIVE_STATUSES:
        raise CommandRejectedError(f"job {job_id} is {job.status}: it needs no machine")
    if job_id in machine.leases:
        raise CommandRejectedError(f"job {job_id} already leases machine {server_id}")
    if len(machine.leases) >= machine.max_jobs:
        raise CommandRejectedError(
            f"machine {server_id} already runs {len(machine.leases)} of {machine.max_jobs} jobs"
        )
    return ev.MachineLeased(server_id=server_id, job_id=job_id, at=at)


def release_machine(state: State, server_id: str, job_id: str, *, at: float) -> ev.MachineReleased:
    """Job ``job_id`` gives its lease on ``server_id`` back."""
    if job_id not in _machine(state, server_id).leases:
        raise CommandRejectedError(f"job {job_id} holds no lease on machine {server_id}")
    return ev.MachineReleased(server_id=server_id, job_id=job_id, at=at)


def stop_machine(state: State, server_id: str, *, reason: str, at: float) -> ev.MachineStopping:
    """The stop intent (log it BEFORE the DELETE)."""
    machine = _machine(state, server_id)
    if machine.status in MACHINE_GONE:
        raise CommandRejectedError(f"machine {server_id} is already {machine.status}")
    return ev.MachineStopping(server_id=server_id, reason=reason, at=at)


# --------------------------------------------------------------------------- recovery


@attrs.frozen
class Intents:
    """What recovery must reconcile after a crash (sorted, deterministic)."""

    launch_requests: tuple[str, ...]
    """Launch intents without outcome: a server may exist that the log never named."""
    prompts: tuple[str, ...]
    """Prompt ids POSTed (maybe) without an answer: look them up before resubmitting."""
    machines: tuple[str, ...]
    """RunComfy machines the log says may still be running (not stopped, not lost)."""
    jobs: tuple[str, ...]
    """Jobs not in a terminal state."""


def pending_intents(state: State) -> Intents:
    """Everything a resume must look at, from the log alone."""
    return Intents(
        launch_requests=tuple(sorted(state.launch_requests)),
        prompts=tuple(sorted(state.submitting)),
        machines=tuple(
            sorted(
                m.server_id
                for m in state.machines.values()
                if m.kind == "runcomfy" and m.status not in MACHINE_GONE
            )
        ),
        jobs=tuple(sorted(j.job_id for j in state.jobs.values() if j.status in ACTIVE_STATUSES)),
    )
