"""The state of the whole runtime and ``apply``, the fold step that is its only writer.

``state = fold(apply, events, initial_state())``. :func:`apply` is:

- **pure in effect**: no I/O, no clock, no randomness; everything it needs is in the event;
- **total**: applying ANY logged event never raises. An event that makes no sense here (an
  unknown job, an illegal transition, an out-of-order fact) changes nothing it should not
  and is recorded in ``state.anomalies`` instead. Cost facts are never dropped: a
  ``MachineStopped`` for a machine the log never launched still enters the ledger;
- **deterministic**: the same events give equal states (``==`` compares every field);
- **in place**: for speed (>= 500k events/s on a replay) ``apply`` MUTATES the state it is
  given and returns it. The fold owns its state: never apply to a state somebody else is
  reading; :func:`copy_state` gives an independent copy.

Dispatch is one dict lookup by the event's exact class (no ``isinstance`` chains): a
NodeProgress, 80% of a real log, costs a lookup, two dict gets and two attribute writes.

Vocabulary: a *job* is one run of a workflow (a task); its ComfyUI nodes are its child
tasks (``Job.nodes``); a *machine* is a RunComfy server or an attached ComfyUI; the
*ledger* is the sum of every machine's cost; *intents* are side effects logged before they
happen whose outcome is not logged yet (what recovery reconciles).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

import attrs
import msgspec

from conjure_actors import lifecycle as rt
from conjure_actors.domain import events as ev
from conjure_actors.domain.prices import machine_cost_micros
from conjure_actors.domain.service_events import SERVICE_HANDLERS, ServiceState
from conjure_actors.domain.sharing import EMPTY_DICT, EMPTY_LIST, SHARED, dict_or_empty, share

__all__ = [
    "ACCRUE_INTERVAL",
    "ACTIVE_STATUSES",
    "CANCELLED",
    "FAILED",
    "INTERRUPTED",
    "JOB_STATUSES",
    "LEGAL_TRANSITIONS",
    "LOST_WHILE_DOWN",
    "MACHINE_GONE",
    "MAX_ANOMALIES",
    "M_LOST",
    "M_READY",
    "M_STARTING",
    "M_STOPPED",
    "M_STOPPING",
    "NODE_CACHED",
    "NODE_EXECUTED",
    "NODE_FAILED",
    "NODE_INTERRUPTED",
    "NODE_RUNNING",
    "PENDING",
    "QUEUED",
    "RESUMABLE_STATUSES",
    "RETRYING",
    "RUNNING",
    "SCHEMA_VERSION",
    "SUCCEEDED",
    "TERMINAL_STATUSES",
    "ActorHealth",
    "Budget",
    "InputFile",
    "Job",
    "JobError",
    "LaunchRequest",
    "Ledger",
    "Machine",
    "NodeState",
    "OutputFile",
    "PendingPrompt",
    "State",
    "SystemInfo",
    "WorkflowRecord",
    "apply",
    "apply_all",
    "copy_state",
    "initial_state",
    "is_legal",
    "machine_cost_at",
    "queue_key",
    "state_from_builtins",
    "state_to_builtins",
]

SCHEMA_VERSION: Final = 1
"""Version of the JSON/snapshot encoding of :class:`State` (docs/replay-json.md)."""

# ------------------------------------------------------------------------- job statuses

PENDING: Final = "pending"
QUEUED: Final = "queued"
RUNNING: Final = "running"
RETRYING: Final = "retrying"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
# The run stopped (Ctrl-C, a signal, an error elsewhere) before the job finished: neither
# active (nothing works on it) nor terminal (``run --resume`` runs it to the end).
INTERRUPTED: Final = "interrupted"

JOB_STATUSES: Final = (
    PENDING,
    QUEUED,
    RUNNING,
    RETRYING,
    SUCCEEDED,
    FAILED,
    CANCELLED,
    INTERRUPTED,
)
TERMINAL_STATUSES: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE_STATUSES: Final = frozenset({PENDING, QUEUED, RUNNING, RETRYING})
RESUMABLE_STATUSES: Final = ACTIVE_STATUSES | {INTERRUPTED}
"""The jobs a start on an existing log runs again (to their end)."""

LEGAL_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    # A job may start at once when a machine is free (pending -> running).
    PENDING: frozenset({QUEUED, RUNNING, FAILED, CANCELLED, INTERRUPTED}),
    # queued -> queued: a resume queues again the jobs the log left queued.
    QUEUED: frozenset({QUEUED, RUNNING, FAILED, CANCELLED, INTERRUPTED}),
    # running -> queued: its machine was lost, or a resume requeues it.
    RUNNING: frozenset({SUCCEEDED, FAILED, RETRYING, CANCELLED, QUEUED, INTERRUPTED}),
    RETRYING: frozenset({RUNNING, QUEUED, FAILED, CANCELLED, INTERRUPTED}),
    # interrupted -> running: a resume re-attaches to its submitted prompt (JobResumed);
    # -> queued: it had none, or it needs a machine again.
    INTERRUPTED: frozenset({RUNNING, QUEUED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}
"""from-status -> the statuses a job may move to. Terminal statuses lead nowhere."""


def queue_key(job: Job) -> tuple[int, int]:
    """Where ``job`` waits in the one queue of jobs waiting for a machine: higher priority
    first, then submission order (:attr:`Job.order`). The pool serves its waiting jobs in
    this order and the service's ``queue_position`` counts by it, whatever brought a job
    there (its submission, a requeue after a lost machine or a retry, a restart's resume):
    a job queued again keeps its place."""
    return (-job.priority, job.order)


def is_legal(from_status: str, to_status: str) -> bool:
    """Whether a job may move from ``from_status`` to ``to_status``."""
    return to_status in LEGAL_TRANSITIONS.get(from_status, frozenset())


# Node (child task) statuses.
NODE_RUNNING: Final = "running"
NODE_CACHED: Final = "cached"
NODE_EXECUTED: Final = "executed"
NODE_FAILED: Final = "failed"
NODE_INTERRUPTED: Final = "interrupted"

# Machine statuses.
M_STARTING: Final = "starting"
M_READY: Final = "ready"
M_STOPPING: Final = "stopping"
M_STOPPED: Final = "stopped"
M_LOST: Final = "lost"
MACHINE_GONE: Final = frozenset({M_STOPPED, M_LOST})

LOST_WHILE_DOWN: Final = "gone while we were down"
"""``MachineLost.reason`` of a machine of the log that a resume (``run --resume``, a serve
restart) finds gone: when it went, and why, nobody tells."""

MAX_ANOMALIES: Final = 1000
"""Anomaly messages kept (the count goes on); a damaged log must not eat the memory."""

# ------------------------------------------------------------------------------ classes
#
# The leaves a long run has by the ten thousand (a node, an input, an output per job) are
# msgspec Structs: msgspec decodes them in half the time of attrs classes (a snapshot of a
# 1M-event run, the cost of ``replay --at``, in 3/4), and holding only strings and numbers
# they need no GC tracking (gc=False).


class NodeState(msgspec.Struct, gc=False):
    """One ComfyUI node of a job's current prompt (a child task)."""

    status: str
    value: float = 0.0
    max: float = 0.0


class OutputFile(msgspec.Struct, gc=False):
    """A downloaded, verified output of a job."""

    node_id: str
    filename: str
    path: str
    size: int
    sha256: str
    kind: str


class InputFile(msgspec.Struct, gc=False):
    """An input uploaded to the job's machine (``name`` as ComfyUI stored it)."""

    node_id: str
    name: str
    sha256: str
    size: int


@attrs.define(slots=True)
class JobError:
    """Why a job (or its last attempt) failed."""

    error_type: str
    message: str
    retryable: bool = False
    node_id: str | None = None
    node_type: str | None = None


@attrs.define(slots=True)
class Job:
    """One run of a workflow, with its attempts, nodes, inputs, outputs and error."""

    job_id: str
    workflow_sha256: str
    status: str = PENDING
    priority: int = 0
    seed: int | None = None
    bindings: dict[str, str] = attrs.Factory(dict)
    image_path: str | None = None
    image_sha256: str | None = None
    prompt: str | None = None
    parent_id: str | None = None
    workflow_version: str | None = None
    children: list[str] = attrs.Factory(list)
    submitted_at: float = 0.0
    # Its place in the log's order of submissions (0: the log's first job), set by the fold:
    # the queue's tie-break within a priority (:func:`queue_key`), which the clock's
    # ``submitted_at`` cannot be (jobs submitted in the same instant, a clock set back).
    order: int = 0
    updated_at: float = 0.0
    finished_at: float | None = None
    attempt: int = 0
    failures: int = 0  # failed attempts (JobRetrying); a requeue after a lost machine is not one
    machines_lost: int = 0  # attempts whose machine was lost (a requeue: JobQueued from running)
    server_id: str | None = None
    prompt_id: str | None = None
    client_id: str | None = None
    prompt_number: float | None = None
    execution: str | None = None  # None, submitting, submitted, started, succeeded, failed...
    execution_started_at: float | None = None  # when the current prompt began executing
    started_at: float | None = None  # when the current attempt got its machine (JobStarted)
    current_node: str | None = None
    nodes: dict[str, NodeState] = attrs.Factory(dict)
    inputs: list[InputFile] = attrs.Factory(list)
    outputs: list[OutputFile] = attrs.Factory(list)
    error: JobError | None = None
    retry_delay: float | None = None
    retry_reason: str | None = None
    queue_reason: str | None = None
    cancel_reason: str | None = None
    stalls: int = 0
    # The seconds it spent inside earlier runs of the log (``retry.total_timeout`` counts
    # them, never the time no process was alive), and how many runs that was: added up at
    # each SystemStarted while it is unfinished (:func:`_system_started`).
    time_used: float = 0.0
    runs_used: int = 0
    # The same for its current attempt (from its JobStarted): ``retry.attempt_timeout``
    # counts it when a restart re-attaches the attempt to its prompt.
    attempt_time_used: float = 0.0
    # "NODE.INPUT" -> kept path of input files beyond image_path (JobSubmitted).
    extra_inputs: dict[str, str] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        _share_job(self, SHARED)


@attrs.define(slots=True)
class Machine:
    """A RunComfy server (``kind="runcomfy"``) or an attached ComfyUI (``comfyui``/``dev``).

    ``cost_micros`` is the machine's contribution to the ledger: the latest accrual while it
    runs, the final bill once stopped.
    """

    server_id: str
    kind: str = "runcomfy"
    status: str = M_STARTING
    server_type: str | None = None
    workflow_version: str | None = None
    request_key: str | None = None
    observed_status: str | None = None
    launched_at: float | None = None
    service_ready_at: float | None = None
    estimated_stopping_at: float | None = None
    rate_micros_per_hour: int = 0
    price_table_version: str = ""
    healthy: bool = False
    adopted: bool = False
    max_jobs: int = 1
    leases: list[str] = attrs.Factory(list)
    jobs_served: int = 0
    idle_since: float | None = None
    accrued_until: float | None = None
    cost_micros: int = 0
    stop_requested_at: float | None = None  # the stop intent (before the DELETE)
    stopped_at: float | None = None
    billed_seconds: int | None = None
    stop_reason: str | None = None
    lost_reason: str | None = None
    # ``MachineDraining``'s reason: the machine takes no new job and is stopped once the
    # jobs still on it end (None: it is not draining). Kept once it stops (why it went).
    draining: str | None = None
    stop_still_up: bool = False  # its last DELETE's 200 showed it still up: billing goes on
    # The ``estimated_duration`` its launch asked for (its first lease: RunComfy stops it
    # that long after Ready); what a loss bills a machine the log never saw Ready by.
    launch_duration: int | None = None


@attrs.define(slots=True)
class Ledger:
    """The bill: ``total_micros`` is always the sum of every machine's ``cost_micros``."""

    total_micros: int = 0
    accruals: int = 0
    price_table_versions: list[str] = attrs.Factory(list)


@attrs.define(slots=True)
class Budget:
    """The spending limit (None: unlimited) and what the CostActor did about it."""

    limit_micros: int | None = None
    warned: bool = False
    exceeded: bool = False
    launches_refused: int = 0
    # The budget the log's last start given one was configured with (``BudgetSet`` with
    # ``from_start``): a start given the same keeps ``limit_micros`` (None: none recorded).
    start_micros: int | None = None


@attrs.define(slots=True)
class ActorHealth:
    """What the supervisors said about one actor (or supervisor). A job's actor that
    stopped once its job finished, never having crashed, has none (``ActorStopped``)."""

    status: str
    incarnation: int = 0
    crashes: int = 0
    restarts: int = 0
    last_error: str | None = None
    updated_at: float = 0.0


@attrs.define(slots=True)
class LaunchRequest:
    """A launch intent whose outcome is not in the log yet."""

    request_key: str
    server_type: str
    workflow_version: str
    estimated_duration: int
    max_jobs: int
    at: float


@attrs.define(slots=True)
class PendingPrompt:
    """A ``POST /prompt`` intent whose outcome is not in the log yet."""

    prompt_id: str
    job_id: str
    attempt: int
    client_id: str
    server_id: str
    at: float


@attrs.define(slots=True)
class WorkflowRecord:
    """A registered workflow graph (canonical JSON text)."""

    sha256: str
    name: str
    graph_json: str
    registered_at: float


@attrs.define(slots=True)
class SystemInfo:
    """The current (last) run of the runtime that wrote the log."""

    run_id: str | None = None
    version: str | None = None
    mode: str | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    stop_reason: str | None = None
    running: bool = False
    runs: int = 0
    # The options its SystemStarted recorded, which ``run --resume`` keeps unless given
    # again (None: not recorded, a log written before they were).
    out_dir: str | None = None
    server_type: str | None = None
    max_machines: int | None = None
    idle_timeout: float | None = None
    # The process that writes the run (its SystemStarted's ``writer_*``: host name, pid,
    # start in clock ticks after boot, boot id; None: not recorded), which a start on a
    # copy of the log asks whether it still runs.
    writer_host: str | None = None
    writer_pid: int | None = None
    writer_started: int | None = None
    writer_boot_id: str | None = None
    # The runtime's events (an actor started, stopped...) in a row at the log's end: the
    # ``events_applied`` of the last one, and the ``at`` of the event before the first. A
    # process writes its actors' starts before its SystemStarted: the end of a run that
    # crashed is the last event before them (:func:`_count_run_time`), not their time.
    runtime_seq: int = 0
    before_runtime_at: float | None = None


@attrs.define(slots=True)
class State:
    """Everything the runtime knows; rebuilt exactly by replaying the log."""

    jobs: dict[str, Job] = attrs.Factory(dict)
    machines: dict[str, Machine] = attrs.Factory(dict)
    workflows: dict[str, WorkflowRecord] = attrs.Factory(dict)
    ledger: Ledger = attrs.Factory(Ledger)
    budget: Budget = attrs.Factory(Budget)
    actors: dict[str, ActorHealth] = attrs.Factory(dict)
    launch_requests: dict[str, LaunchRequest] = attrs.Factory(dict)
    submitting: dict[str, PendingPrompt] = attrs.Factory(dict)
    system: SystemInfo = attrs.Factory(SystemInfo)
    events_applied: int = 0
    # Jobs ever submitted: the next job's ``order`` (not ``len(jobs)``: an expired job
    # leaves ``jobs``, and a count of what is left would give two jobs one place).
    jobs_submitted: int = 0
    last_at: float | None = None
    anomaly_count: int = 0
    anomalies: list[str] = attrs.Factory(list)
    # serve's assets, API jobs and idempotency keys (conjure_actors.domain.service_events).
    service: ServiceState = attrs.Factory(ServiceState)

    def __attrs_post_init__(self) -> None:
        # A decoded state (a snapshot serve restarts from, copy_state) holds a new object
        # for every value: make it share what the fold shares.
        if self.jobs or self.service.assets or self.service.api_jobs:
            _share_decoded(self)


def machine_cost_at(machine: Machine, now: float) -> int:
    """A machine's bill as of ``now``: its final bill once stopped, else the billing rule
    up to ``now`` (or its lease's end, when RunComfy stops it). The ledger's accruals lag
    behind a running machine by up to the accrual period; this does not."""
    if machine.service_ready_at is None or (
        machine.status in MACHINE_GONE and not machine.stop_still_up
    ):
        return machine.cost_micros  # (a stop that did not take: it bills on, as if up)
    until = now
    if machine.estimated_stopping_at is not None:
        until = min(now, machine.estimated_stopping_at)
    return max(
        machine.cost_micros,
        machine_cost_micros(machine.rate_micros_per_hour, machine.service_ready_at, until),
    )


def _share_job(job: Job, table: dict[str, str]) -> None:
    """Share the values of one job record (its containers and ids are the state's part)."""
    intern = sys.intern
    job.workflow_sha256 = share(table, job.workflow_sha256)
    job.status = intern(job.status)
    if job.image_sha256 is not None:
        job.image_sha256 = share(table, job.image_sha256)
    if job.workflow_version is not None:
        job.workflow_version = intern(job.workflow_version)
    if job.server_id is not None:
        job.server_id = share(table, job.server_id)
    if job.client_id is not None:
        job.client_id = share(table, job.client_id)
    if job.execution is not None:
        job.execution = intern(job.execution)
    if job.queue_reason is not None:
        job.queue_reason = share(table, job.queue_reason)
    if job.retry_reason is not None:
        job.retry_reason = share(table, job.retry_reason)
    if job.cancel_reason is not None:
        job.cancel_reason = share(table, job.cancel_reason)
    error = job.error
    if error is not None:
        error.error_type = intern(error.error_type)
        error.message = share(table, error.message)
        if error.node_id is not None:
            error.node_id = intern(error.node_id)
        if error.node_type is not None:
            error.node_type = intern(error.node_type)
    nodes = job.nodes
    if nodes:
        for node in nodes.values():
            node.status = intern(node.status)
        if any(intern(node_id) is not node_id for node_id in nodes):
            job.nodes = {intern(node_id): node for node_id, node in nodes.items()}
    for put in job.inputs:
        put.node_id = intern(put.node_id)
        put.name = share(table, put.name)
        put.sha256 = share(table, put.sha256)
    for out in job.outputs:
        out.node_id = intern(out.node_id)
        out.filename = share(table, out.filename)
        out.sha256 = share(table, out.sha256)
        out.kind = intern(out.kind)


def _share_decoded(s: State) -> None:
    """Make a decoded state share values as the fold does (conjure_actors.domain.sharing):
    equal values become one object, empty per-job containers the shared empty ones. Only
    objects change, never a value: the state compares and encodes the same."""
    table = SHARED
    intern = sys.intern
    svc = s.service
    ids = {job_id: job_id for job_id in s.jobs}  # this pass only: one object per job id

    def opt(value: str | None) -> str | None:
        return None if value is None else share(table, value)

    for job_id, job in s.jobs.items():
        if job.job_id == job_id:
            job.job_id = job_id
        # Its values were shared as it was decoded (Job.__attrs_post_init__): not again.
        workflow = s.workflows.get(job.workflow_sha256)
        if workflow is not None:
            job.workflow_sha256 = workflow.sha256
        if job.parent_id is not None:
            job.parent_id = ids.get(job.parent_id, job.parent_id)
        job.children = [ids.get(c, c) for c in job.children] if job.children else EMPTY_LIST
        job.bindings = job.bindings or EMPTY_DICT
        job.extra_inputs = job.extra_inputs or EMPTY_DICT
        job.nodes = job.nodes or EMPTY_DICT
        job.inputs = job.inputs or EMPTY_LIST
        job.outputs = job.outputs or EMPTY_LIST

    asset_ids = {asset_id: asset_id for asset_id in svc.assets}
    paths: dict[str, str] = {}  # output path -> the OutputFile's object (this pass only)
    for asset_id, record in svc.assets.items():
        if record.asset_id == asset_id:
            record.asset_id = asset_id
        record.hash = share(table, record.hash)
        record.content_type = intern(record.content_type)
        record.file_path = opt(record.file_path)
        record.tags = [intern(tag) for tag in record.tags] if record.tags else EMPTY_LIST
        if record.node_id is not None:
            record.node_id = intern(record.node_id)
        if record.kind is not None:
            record.kind = intern(record.kind)
        if record.job_id is not None:
            record.job_id = ids.get(record.job_id, record.job_id)
            owner = s.jobs.get(record.job_id)
            if owner is not None and record.source_path is not None:
                for out in owner.outputs:
                    if out.path == record.source_path:
                        record.source_path = paths[out.path] = out.path
                        break
    svc.blob_refs = {share(table, h): n for h, n in svc.blob_refs.items()}
    svc.blob_sizes = {share(table, h): n for h, n in svc.blob_sizes.items()}
    api_jobs: dict[str, Any] = {}
    for job_id, api in svc.api_jobs.items():
        job_id = ids.setdefault(job_id, job_id)
        if api.job_id == job_id:
            api.job_id = job_id
        api.labels = api.labels or EMPTY_DICT
        api.input_assets = api.input_assets or EMPTY_DICT
        api_jobs[job_id] = api
    svc.api_jobs = api_jobs
    svc.job_outputs = {
        ids.get(job_id, job_id): {
            paths.get(path, path): asset_ids.get(asset_id, asset_id)
            for path, asset_id in outputs.items()
        }
        for job_id, outputs in svc.job_outputs.items()
    }


def initial_state() -> State:
    """The state before the first event."""
    return State()


# -------------------------------------------------------------------------- encoding
#
# msgspec encodes and decodes attrs classes natively, so the state goes to JSON (``--json``)
# or msgpack (snapshots) without a hand-written schema; the shape is documented in
# docs/replay-json.md and versioned by SCHEMA_VERSION.


def state_to_builtins(state: State) -> dict[str, Any]:
    """The state as JSON-ready builtins (dicts, lists, str, int, float, bool, None)."""
    out: dict[str, Any] = msgspec.to_builtins(state)
    return out


def state_from_builtins(data: Any) -> State:
    """Inverse of :func:`state_to_builtins` (validated; raises ``msgspec.ValidationError``)."""
    return msgspec.convert(data, State)


def copy_state(state: State) -> State:
    """A deep, independent copy of ``state`` (apply mutates in place)."""
    return state_from_builtins(state_to_builtins(state))


# --------------------------------------------------------------------------- the fold


def _anomaly(state: State, message: str) -> None:
    state.anomaly_count += 1
    if len(state.anomalies) < MAX_ANOMALIES:
        state.anomalies.append(message)


def _job_for(state: State, job_id: str, what: str) -> Job | None:
    job = state.jobs.get(job_id)
    if job is None:
        _anomaly(state, f"{what} for unknown job {job_id}")
    return job


def _move(state: State, job: Job, to: str, what: str, at: float) -> bool:
    """Move ``job`` to ``to`` if legal (True); else record an anomaly and change nothing."""
    if to not in LEGAL_TRANSITIONS[job.status]:
        _anomaly(state, f"{what}: job {job.job_id} cannot go {job.status} -> {to}")
        return False
    job.status = to
    job.updated_at = at
    if to in TERMINAL_STATUSES:
        job.finished_at = at
        job.current_node = None
    return True


def _machine(state: State, server_id: str, what: str) -> Machine:
    """The machine ``server_id``; an unknown one is created (facts about it are kept)."""
    machine = state.machines.get(server_id)
    if machine is None:
        _anomaly(state, f"{what} for unknown machine {server_id}")
        machine = state.machines[server_id] = Machine(server_id=server_id)
    return machine


def _set_machine_cost(state: State, machine: Machine, micros: int) -> None:
    state.ledger.total_micros += micros - machine.cost_micros
    machine.cost_micros = micros


def _note_table(state: State, version: str) -> None:
    if version and version not in state.ledger.price_table_versions:
        state.ledger.price_table_versions.append(version)


# --- workflow & jobs


def _workflow_registered(s: State, e: ev.WorkflowRegistered) -> None:
    if e.sha256 not in s.workflows:
        s.workflows[e.sha256] = WorkflowRecord(e.sha256, e.name, e.graph_json, e.at)


def _job_submitted(s: State, e: ev.JobSubmitted) -> None:
    if e.job_id in s.jobs:
        _anomaly(s, f"job {e.job_id} submitted twice")
        return
    # Shared objects where the state already holds the value (sharing.py): the workflow's
    # hash, the job id its ApiJobAccepted (just before) recorded, its parent's id.
    workflow = s.workflows.get(e.workflow_sha256)
    if workflow is None:
        _anomaly(s, f"job {e.job_id} uses unregistered workflow {e.workflow_sha256[:12]}")
    api_job = s.service.api_jobs.get(e.job_id)
    job_id = e.job_id if api_job is None else api_job.job_id
    table = SHARED
    s.jobs[job_id] = job = Job(
        job_id=job_id,
        workflow_sha256=e.workflow_sha256 if workflow is None else workflow.sha256,
        priority=e.priority,
        seed=e.seed,
        bindings=dict_or_empty(e.bindings),
        image_path=e.image_path,
        image_sha256=None if e.image_sha256 is None else share(table, e.image_sha256),
        prompt=e.prompt,
        parent_id=e.parent_id,
        workflow_version=None if e.workflow_version is None else sys.intern(e.workflow_version),
        children=EMPTY_LIST,
        submitted_at=e.at,
        order=s.jobs_submitted,
        updated_at=e.at,
        nodes=EMPTY_DICT,
        inputs=EMPTY_LIST,
        outputs=EMPTY_LIST,
        extra_inputs=dict_or_empty(e.extra_inputs),
    )
    s.jobs_submitted += 1
    if workflow is not None:
        job.workflow_sha256 = workflow.sha256  # the WorkflowRecord's own object
    if e.parent_id is not None:
        parent = s.jobs.get(e.parent_id)  # after the insert: as ever, a job may name itself
        if parent is None:
            _anomaly(s, f"job {e.job_id} names unknown parent {e.parent_id}")
        else:
            job.parent_id = parent.job_id
            if parent.children is EMPTY_LIST:
                parent.children = []
            parent.children.append(job_id)


def _job_queued(s: State, e: ev.JobQueued) -> None:
    job = _job_for(s, e.job_id, "JobQueued")
    running = job is not None and job.status == RUNNING
    if job is not None and _move(s, job, QUEUED, "JobQueued", e.at):
        if running:  # its machine was lost (decide.judge_failure): requeued
            job.machines_lost += 1
        job.queue_reason = share(SHARED, e.reason) if e.reason else None
        job.server_id = None
        job.current_node = None


def _job_started(s: State, e: ev.JobStarted) -> None:
    job = _job_for(s, e.job_id, "JobStarted")
    if job is not None and _move(s, job, RUNNING, "JobStarted", e.at):
        if e.attempt <= job.attempt:
            _anomaly(s, f"job {e.job_id} attempt {e.attempt} after attempt {job.attempt}")
        job.attempt = max(job.attempt, e.attempt)
        machine = s.machines.get(e.server_id)
        job.server_id = share(SHARED, e.server_id) if machine is None else machine.server_id
        job.prompt_id = None
        job.client_id = None
        job.prompt_number = None
        job.execution = None
        job.execution_started_at = None
        job.started_at = e.at
        job.attempt_time_used = 0.0
        job.current_node = None
        job.nodes = EMPTY_DICT
        job.retry_delay = None
        # A new attempt: what an earlier one saved is not this job's output (its files are
        # removed as the attempt starts: WorkflowActor._on_leased), nor are the assets the
        # job service made of them (their records stay, no longer the job's outputs: the new
        # attempt's outputs, saved at the same paths, become assets of their own).
        job.outputs = EMPTY_LIST
        s.service.job_outputs.pop(e.job_id, None)


def _job_retrying(s: State, e: ev.JobRetrying) -> None:
    job = _job_for(s, e.job_id, "JobRetrying")
    if job is not None and _move(s, job, RETRYING, "JobRetrying", e.at):
        job.failures += 1
        job.retry_delay = e.delay
        job.retry_reason = share(SHARED, e.reason)
        job.current_node = None


def _job_succeeded(s: State, e: ev.JobSucceeded) -> None:
    job = _job_for(s, e.job_id, "JobSucceeded")
    if job is not None and _move(s, job, SUCCEEDED, "JobSucceeded", e.at):
        job.error = None


def _job_failed(s: State, e: ev.JobFailed) -> None:
    job = _job_for(s, e.job_id, "JobFailed")
    if job is not None and _move(s, job, FAILED, "JobFailed", e.at):
        node_id = job.error.node_id if job.error is not None else None
        node_type = job.error.node_type if job.error is not None else None
        job.error = JobError(
            sys.intern(e.error_type), share(SHARED, e.message), e.retryable, node_id, node_type
        )


def _job_cancelled(s: State, e: ev.JobCancelled) -> None:
    job = _job_for(s, e.job_id, "JobCancelled")
    if job is not None and _move(s, job, CANCELLED, "JobCancelled", e.at):
        job.cancel_reason = share(SHARED, e.reason)


def _job_interrupted(s: State, e: ev.JobInterrupted) -> None:
    # The prompt id and the machine stay: a resume may re-attach to a prompt still running.
    job = _job_for(s, e.job_id, "JobInterrupted")
    if job is not None and _move(s, job, INTERRUPTED, "JobInterrupted", e.at):
        job.current_node = None
        job.retry_delay = None


def _job_resumed(s: State, e: ev.JobResumed) -> None:
    job = _job_for(s, e.job_id, "JobResumed")
    if job is None:
        return
    # Back to running when its prompt was submitted (re-attach), else queued.
    submitted = job.prompt_id is not None and job.execution not in (None, "rejected")
    to = RUNNING if submitted and job.server_id is not None else QUEUED
    if _move(s, job, to, "JobResumed", e.at) and to == QUEUED:
        job.queue_reason = "resumed"
        job.server_id = None


def _job_stalled(s: State, e: ev.JobStalled) -> None:
    job = _job_for(s, e.job_id, "JobStalled")
    if job is not None:
        job.stalls += 1


# --- machines


def _launch_requested(s: State, e: ev.MachineLaunchRequested) -> None:
    if e.request_key in s.launch_requests:
        _anomaly(s, f"launch request {e.request_key} logged twice")
    s.launch_requests[e.request_key] = LaunchRequest(
        e.request_key, e.server_type, e.workflow_version, e.estimated_duration, e.max_jobs, e.at
    )


def _launched(s: State, e: ev.MachineLaunched) -> None:
    request = s.launch_requests.pop(e.request_key, None)
    if request is None:
        _anomaly(s, f"machine {e.server_id} launched by unknown request {e.request_key}")
    machine = s.machines.get(e.server_id)
    if machine is None:
        machine = s.machines[e.server_id] = Machine(server_id=e.server_id)
    else:
        _anomaly(s, f"machine {e.server_id} launched twice")
    machine.request_key = e.request_key
    machine.launched_at = e.at
    if request is not None:
        machine.server_type = request.server_type
        machine.workflow_version = request.workflow_version
        machine.max_jobs = request.max_jobs
        machine.launch_duration = request.estimated_duration


def _launch_failed(s: State, e: ev.MachineLaunchFailed) -> None:
    if s.launch_requests.pop(e.request_key, None) is None:
        _anomaly(s, f"launch failure for unknown request {e.request_key}")


def _status_observed(s: State, e: ev.MachineStatusObserved) -> None:
    _machine(s, e.server_id, "MachineStatusObserved").observed_status = e.status


def _unknown_listed(s: State, e: ev.MachineUnknownListed) -> None:
    """A server the log does not know, named: not one of the log's machines."""


def _ready(s: State, e: ev.MachineReady) -> None:
    m = _machine(s, e.server_id, "MachineReady")
    if m.status in MACHINE_GONE:
        _anomaly(s, f"machine {e.server_id} ready after it was {m.status}")
        return
    if m.status == M_STARTING:  # a late Ready must not undo a stop already under way
        m.status = M_READY
    m.service_ready_at = e.service_ready_at
    m.estimated_stopping_at = e.estimated_stopping_at
    m.rate_micros_per_hour = e.rate_micros_per_hour
    m.price_table_version = e.price_table_version
    if m.idle_since is None and not m.leases:
        m.idle_since = e.at
    _note_table(s, e.price_table_version)


def _healthy(s: State, e: ev.MachineHealthy) -> None:
    _machine(s, e.server_id, "MachineHealthy").healthy = True


def _unhealthy(s: State, e: ev.MachineUnhealthy) -> None:
    _machine(s, e.server_id, "MachineUnhealthy").healthy = False


def _leased(s: State, e: ev.MachineLeased) -> None:
    m = _machine(s, e.server_id, "MachineLeased")
    if m.status != M_READY:
        _anomaly(s, f"machine {e.server_id} leased while {m.status}")
    if e.job_id in m.leases:
        _anomaly(s, f"machine {e.server_id} leased twice to job {e.job_id}")
        return
    if e.job_id not in s.jobs:
        _anomaly(s, f"machine {e.server_id} leased to unknown job {e.job_id}")
    m.leases.append(e.job_id)
    m.jobs_served += 1
    m.idle_since = None


def _released(s: State, e: ev.MachineReleased) -> None:
    m = _machine(s, e.server_id, "MachineReleased")
    try:
        m.leases.remove(e.job_id)
    except ValueError:
        # A stop or a loss already dropped every lease: a late release is expected then.
        if m.status not in MACHINE_GONE:
            _anomaly(s, f"machine {e.server_id} released by job {e.job_id} that held no lease")
        return
    if not m.leases:
        m.idle_since = e.at


def _lease_renewed(s: State, e: ev.LeaseRenewed) -> None:
    _machine(s, e.server_id, "LeaseRenewed").estimated_stopping_at = e.estimated_stopping_at


def _stopping(s: State, e: ev.MachineStopping) -> None:
    m = _machine(s, e.server_id, "MachineStopping")
    if m.status in MACHINE_GONE:
        _anomaly(s, f"machine {e.server_id} stopping after it was {m.status}")
        return
    m.status = M_STOPPING
    m.stop_reason = e.reason
    m.stop_requested_at = e.at


def _draining(s: State, e: ev.MachineDraining) -> None:
    m = _machine(s, e.server_id, "MachineDraining")
    if m.status in MACHINE_GONE:
        _anomaly(s, f"machine {e.server_id} draining after it was {m.status}")
        return
    m.draining = e.reason


def _stopped(s: State, e: ev.MachineStopped) -> None:
    m = _machine(s, e.server_id, "MachineStopped")
    if m.status == M_STOPPED and m.lost_reason is None:
        # (A lost machine found up later and stopped gets its bill corrected: no anomaly.)
        _anomaly(s, f"machine {e.server_id} stopped twice")
    m.status = M_STOPPED
    if m.service_ready_at is None and e.service_ready_at is not None:
        m.service_ready_at = e.service_ready_at  # Ready between two polls: its final record
        m.rate_micros_per_hour = e.rate_micros_per_hour
        m.price_table_version = e.price_table_version
        _note_table(s, e.price_table_version)
    elif m.service_ready_at is None and e.rate_micros_per_hour and not m.rate_micros_per_hour:
        # Lost before the log saw it Ready, billed by its launch's lease: priced all the same.
        m.rate_micros_per_hour = e.rate_micros_per_hour
        m.price_table_version = e.price_table_version
        _note_table(s, e.price_table_version)
    m.stopped_at = e.stopped_at
    m.billed_seconds = e.billed_seconds
    m.accrued_until = e.stopped_at
    m.stop_still_up = e.still_up
    m.leases = []
    m.idle_since = None
    _set_machine_cost(s, m, e.cost_micros)


def _stopped_again(s: State, e: ev.MachineStoppedAgain) -> None:
    """A later ``DELETE`` of a machine logged stopped answered: its bill ends there."""
    m = _machine(s, e.server_id, "MachineStoppedAgain")
    if m.status != M_STOPPED:
        _anomaly(s, f"machine {e.server_id} stopped again while {m.status}")
        return
    if m.service_ready_at is None and e.service_ready_at is not None:
        m.service_ready_at = e.service_ready_at  # Ready after its first stop's answer
        m.rate_micros_per_hour = e.rate_micros_per_hour
        m.price_table_version = e.price_table_version
        _note_table(s, e.price_table_version)
    m.stopped_at = e.stopped_at
    m.billed_seconds = e.billed_seconds
    m.accrued_until = e.stopped_at
    m.stop_still_up = e.still_up
    _set_machine_cost(s, m, e.cost_micros)


def _late_prompt_stopped(s: State, e: ev.LatePromptStopped) -> None:
    """An audit fact: the prompt is not the job's any more, the machine's status is unchanged."""


def _lost(s: State, e: ev.MachineLost) -> None:
    m = _machine(s, e.server_id, "MachineLost")
    if m.status == M_STOPPED:
        _anomaly(s, f"machine {e.server_id} lost after it was stopped")
        return
    m.status = M_LOST
    m.lost_reason = e.reason
    m.leases = []
    m.idle_since = None


def _adopted(s: State, e: ev.MachineAdopted) -> None:
    m = s.machines.get(e.server_id)
    if m is None:
        m = s.machines[e.server_id] = Machine(server_id=e.server_id)
    if e.request_key is not None:
        request = s.launch_requests.pop(e.request_key, None)
        m.request_key = e.request_key
        if request is not None:  # adopted by the marker it echoes: that duration
            m.launch_duration = request.estimated_duration
    # Idle in the log already (Ready, no lease): it has been idle since then, not since the
    # restart (each restart would otherwise bill up to one more idle timeout).
    idle_since = m.idle_since if m.status == M_READY and not m.leases else None
    m.adopted = True
    m.server_type = e.server_type
    m.max_jobs = e.max_jobs
    if e.workflow_version is not None:
        m.workflow_version = e.workflow_version
    m.observed_status = e.status
    m.leases = []
    if e.service_ready_at is not None:
        m.status = M_READY
        m.service_ready_at = e.service_ready_at
        m.estimated_stopping_at = e.estimated_stopping_at
        m.rate_micros_per_hour = e.rate_micros_per_hour
        m.price_table_version = e.price_table_version
        m.idle_since = e.at if idle_since is None else min(idle_since, e.at)
        _note_table(s, e.price_table_version)
    else:
        m.status = M_STARTING


def _attached(s: State, e: ev.MachineAttached) -> None:
    m = s.machines.get(e.server_id)
    if m is None:
        m = s.machines[e.server_id] = Machine(server_id=e.server_id)
    m.kind = e.kind
    m.status = M_READY
    m.max_jobs = e.max_jobs
    m.leases = []
    m.idle_since = e.at


# --- execution


def _input_uploaded(s: State, e: ev.InputUploaded) -> None:
    job = _job_for(s, e.job_id, "InputUploaded")
    if job is not None:
        table = SHARED
        new = InputFile(sys.intern(e.node_id), share(table, e.name), share(table, e.sha256), e.size)
        if job.inputs is EMPTY_LIST:
            job.inputs = [new]  # sized exactly: most jobs have one or two
        else:
            job.inputs.append(new)


def _prompt_submitting(s: State, e: ev.PromptSubmitting) -> None:
    s.submitting[e.prompt_id] = PendingPrompt(
        e.prompt_id, e.job_id, e.attempt, e.client_id, e.server_id, e.at
    )
    job = _job_for(s, e.job_id, "PromptSubmitting")
    if job is not None:
        job.prompt_id = e.prompt_id
        job.client_id = share(SHARED, e.client_id)
        job.execution = "submitting"
        job.nodes = EMPTY_DICT


def _prompt_submitted(s: State, e: ev.PromptSubmitted) -> None:
    if s.submitting.pop(e.prompt_id, None) is None:
        _anomaly(s, f"prompt {e.prompt_id} submitted without its intent")
    job = _job_for(s, e.job_id, "PromptSubmitted")
    if job is not None:
        job.prompt_id = e.prompt_id
        job.prompt_number = e.number
        job.execution = "submitted"


def _prompt_rejected(s: State, e: ev.PromptRejected) -> None:
    s.submitting.pop(e.prompt_id, None)
    job = _job_for(s, e.job_id, "PromptRejected")
    if job is not None:
        job.execution = "rejected"
        job.error = _job_error(s, e.error_type, e.message, e.node_id, e.class_type)


def _job_error(
    s: State, error_type: str, message: str, node_id: str | None, node_type: str | None
) -> JobError:
    return JobError(
        sys.intern(error_type),
        share(SHARED, message),
        False,
        None if node_id is None else sys.intern(node_id),
        None if node_type is None else sys.intern(node_type),
    )


def _nodes(job: Job) -> dict[str, NodeState]:
    """``job.nodes``, to add to (a new dict in place of the shared empty one)."""
    nodes = job.nodes
    if nodes is EMPTY_DICT:
        nodes = job.nodes = {}
    return nodes


def _current_job(s: State, job_id: str, prompt_id: str, what: str) -> Job | None:
    """The job, if ``prompt_id`` is its current prompt (else an anomaly: a stale frame)."""
    job = s.jobs.get(job_id)
    if job is None:
        _anomaly(s, f"{what} for unknown job {job_id}")
        return None
    if job.prompt_id != prompt_id:
        _anomaly(s, f"{what} for job {job_id} names prompt {prompt_id}, not its current one")
        return None
    return job


def _execution_started(s: State, e: ev.ExecutionStarted) -> None:
    # The WS may beat the HTTP answer: the prompt then runs before PromptSubmitted.
    job = _current_job(s, e.job_id, e.prompt_id, "ExecutionStarted")
    if job is not None:
        if job.execution != "started":
            job.execution_started_at = e.at
        job.execution = "started"
        job.updated_at = e.at


def _node_cached(s: State, e: ev.NodeCached) -> None:
    job = _current_job(s, e.job_id, e.prompt_id, "NodeCached")
    if job is not None:
        nodes = _nodes(job)
        for node_id in e.nodes:
            nodes[sys.intern(node_id)] = NodeState(NODE_CACHED)


def _node_started(s: State, e: ev.NodeStarted) -> None:
    job = _current_job(s, e.job_id, e.prompt_id, "NodeStarted")
    if job is not None:
        node = job.nodes.get(e.node_id)
        if node is None:
            _nodes(job)[sys.intern(e.node_id)] = NodeState(NODE_RUNNING)
        else:
            node.status = NODE_RUNNING
        job.current_node = e.node_id
        job.updated_at = e.at


def _node_progress(s: State, e: ev.NodeProgress) -> None:
    # The hot path: keep it to a couple of dict lookups and attribute writes.
    job = s.jobs.get(e.job_id)
    if job is None or job.prompt_id != e.prompt_id:
        _current_job(s, e.job_id, e.prompt_id, "NodeProgress")
        return
    node = job.nodes.get(e.node_id)
    if node is None:
        _nodes(job)[sys.intern(e.node_id)] = NodeState(NODE_RUNNING, e.value, e.max)
    else:
        node.value = e.value
        node.max = e.max
    job.updated_at = e.at


def _node_executed(s: State, e: ev.NodeExecuted) -> None:
    job = _current_job(s, e.job_id, e.prompt_id, "NodeExecuted")
    if job is not None:
        node = job.nodes.get(e.node_id)
        if node is None:
            _nodes(job)[sys.intern(e.node_id)] = NodeState(NODE_EXECUTED)
        else:
            node.status = NODE_EXECUTED
        if job.current_node == e.node_id:
            job.current_node = None
        job.updated_at = e.at


def _execution_succeeded(s: State, e: ev.ExecutionSucceeded) -> None:
    job = _current_job(s, e.job_id, e.prompt_id, "ExecutionSucceeded")
    if job is not None:
        job.execution = "succeeded"
        job.current_node = None


def _execution_interrupted(s: State, e: ev.ExecutionInterrupted) -> None:
    job = _current_job(s, e.job_id, e.prompt_id, "ExecutionInterrupted")
    if job is not None:
        job.execution = "interrupted"
        job.current_node = None
        if e.node_id is not None:
            node = job.nodes.get(e.node_id)
            if node is not None and node.status == NODE_RUNNING:
                node.status = NODE_INTERRUPTED


def _execution_failed(s: State, e: ev.ExecutionFailed) -> None:
    job = _current_job(s, e.job_id, e.prompt_id, "ExecutionFailed")
    if job is not None:
        job.execution = "failed"
        job.current_node = None
        job.error = _job_error(s, e.exception_type, e.message, e.node_id, e.node_type)
        if e.node_id is not None:
            node = job.nodes.get(e.node_id)
            if node is None:
                _nodes(job)[sys.intern(e.node_id)] = NodeState(NODE_FAILED)
            else:
                node.status = NODE_FAILED


def _output_saved(s: State, e: ev.OutputSaved) -> None:
    job = _job_for(s, e.job_id, "OutputSaved")
    if job is not None:
        table = SHARED
        new = OutputFile(
            sys.intern(e.node_id),
            share(table, e.filename),
            e.path,
            e.size,
            share(table, e.sha256),
            sys.intern(e.kind),
        )
        if job.outputs is EMPTY_LIST:
            job.outputs = [new]  # sized exactly: most jobs have one or two
        elif any(o.path == e.path for o in job.outputs):  # saved again (a re-attach)
            job.outputs = [new if o.path == e.path else o for o in job.outputs]
        else:
            job.outputs.append(new)


# --- cost


def _cost_accrued(s: State, e: ev.CostAccrued) -> None:
    m = _machine(s, e.server_id, "CostAccrued")
    s.ledger.accruals += 1
    _note_table(s, e.price_table_version)
    if m.status == M_STOPPED:
        return  # the final bill already supersedes every accrual
    if m.accrued_until is not None and e.until < m.accrued_until:
        _anomaly(s, f"cost of machine {e.server_id} accrued back in time")
        return
    m.accrued_until = e.until
    if not m.rate_micros_per_hour:
        m.rate_micros_per_hour = e.rate_micros_per_hour
        m.price_table_version = e.price_table_version
    _set_machine_cost(s, m, e.amount_micros)


def _budget_set(s: State, e: ev.BudgetSet) -> None:
    if e.from_start:
        s.budget.start_micros = e.limit_micros
        if e.limit_micros == s.budget.limit_micros:
            return  # the start's budget recorded, the one in force unchanged
    s.budget.limit_micros = e.limit_micros
    s.budget.warned = False
    s.budget.exceeded = False


def _budget_warning(s: State, e: ev.BudgetWarning) -> None:
    s.budget.warned = True


def _budget_exceeded(s: State, e: ev.BudgetExceeded) -> None:
    s.budget.warned = True
    s.budget.exceeded = True


def _launch_refused(s: State, e: ev.LaunchRefused) -> None:
    s.budget.launches_refused += 1


def _budget_limit_reached(s: State, e: ev.BudgetLimitReached) -> None:
    """A notice for the user (the run's line, the replay's timeline): no state of its own
    (the refusals it announces are the pool's and the CostActor's decisions)."""


# --- system & actors


def _system_started(s: State, e: ev.SystemStarted) -> None:
    sysinfo = s.system
    if sysinfo.started_at is not None:
        _count_run_time(s, sysinfo.started_at, e.at)
    sysinfo.run_id = e.run_id
    sysinfo.version = e.version
    sysinfo.mode = e.mode
    sysinfo.started_at = e.at
    sysinfo.stopped_at = None
    sysinfo.stop_reason = None
    sysinfo.running = True
    sysinfo.runs += 1
    sysinfo.out_dir = e.out_dir
    sysinfo.server_type = e.server_type
    sysinfo.max_machines = e.max_machines
    sysinfo.idle_timeout = e.idle_timeout
    sysinfo.writer_host = e.writer_host
    sysinfo.writer_pid = e.writer_pid
    sysinfo.writer_started = e.writer_started
    sysinfo.writer_boot_id = e.writer_boot_id


ACCRUE_INTERVAL: Final = 30.0
"""Seconds at most between two accruals of a billing machine's cost (the CostActor's
period): a run with a machine billing logs a record at least this often, so a run that
crashed ended at most this long after its last record."""


def _count_run_time(s: State, run_start: float, next_start: float) -> None:
    """Add the run that just ended (the one before this SystemStarted, at ``next_start``)
    to the time each unfinished job spent inside runs: from its submission, or the run's
    start if later, to the run's end. That end is its SystemStopped; for a run that crashed,
    :data:`ACCRUE_INTERVAL` past the last record it wrote (``last_at``: :func:`apply` moves
    it on after the handler), or the next start if sooner: a crashed run logs nothing while
    a node runs long, and a crash loop faster than its records was counted as nothing (QA:
    a 30 s total_timeout let a job run 74 s over 8 runs killed 7 s apart). Once per run,
    over the jobs: a job's ``retry.total_timeout`` is then what it has left, not its whole
    time again at every restart (a serve restarted every 30 min, a job hanging on a paid
    machine ran for ever), while the days between a crash and its resume count for nothing
    (at most :data:`ACCRUE_INTERVAL` of them)."""
    sysinfo = s.system
    if not sysinfo.running and sysinfo.stopped_at is not None:
        end: float | None = sysinfo.stopped_at
    else:
        if sysinfo.runtime_seq == s.events_applied - 1:
            # Actors' starts just before this SystemStarted: this process's, which may come
            # days after the crash; the crashed run's last record is the one before them.
            last = sysinfo.before_runtime_at
        else:
            last = s.last_at
        end = None if last is None else min(last + ACCRUE_INTERVAL, max(last, next_start))
    if end is None or end <= run_start:
        return
    for job in s.jobs.values():
        if job.status in TERMINAL_STATUSES:
            continue
        used = end - max(job.submitted_at, run_start)
        if used > 0:
            job.time_used += used
            job.runs_used += 1
        if job.status == RUNNING and job.started_at is not None:
            attempt = end - max(job.started_at, run_start)
            if attempt > 0:
                job.attempt_time_used += attempt


def _system_stopped(s: State, e: ev.SystemStopped) -> None:
    s.system.running = False
    s.system.stopped_at = e.at
    s.system.stop_reason = e.reason


def _runtime_event(s: State) -> None:
    """Note a runtime event (see ``SystemInfo.runtime_seq``): once per such event."""
    sysinfo = s.system
    if sysinfo.runtime_seq != s.events_applied - 1:  # the first of a row
        sysinfo.before_runtime_at = s.last_at
    sysinfo.runtime_seq = s.events_applied


def _actor(s: State, name: str) -> ActorHealth:
    _runtime_event(s)
    health = s.actors.get(name)
    if health is None:
        health = s.actors[name] = ActorHealth(status="unknown")
    return health


def _actor_started(s: State, e: rt.ActorStarted) -> None:
    h = _actor(s, e.actor)
    h.status = "running"
    h.incarnation = e.incarnation
    h.updated_at = e.at


def _actor_crashed(s: State, e: rt.ActorCrashed) -> None:
    h = _actor(s, e.actor)
    h.status = "crashed"
    h.incarnation = e.incarnation
    h.crashes += 1
    h.last_error = f"{e.error_type}: {e.message}"
    h.updated_at = e.at


def _actor_restarted(s: State, e: rt.ActorRestarted) -> None:
    h = _actor(s, e.actor)
    h.status = "restarting"
    h.incarnation = e.incarnation
    h.restarts += 1
    h.updated_at = e.at


def _actor_stopped(s: State, e: rt.ActorStopped) -> None:
    # A job's actor (``.../<job id>``) that stopped once its job finished, having never
    # crashed, leaves no record: it would say "stopped" once per job the log ever ran (serve
    # keeps finished jobs for days). A crash, or a job not finished, keeps it.
    job = s.jobs.get(e.actor.rpartition("/")[2])
    if job is not None and job.status in TERMINAL_STATUSES:
        old = s.actors.get(e.actor)
        if old is None or not (old.crashes or old.restarts or old.last_error):
            s.actors.pop(e.actor, None)
            _runtime_event(s)  # (else _actor notes it)
            return
    h = _actor(s, e.actor)
    h.status = "stopped"
    h.incarnation = e.incarnation
    h.updated_at = e.at


def _supervisor_escalated(s: State, e: rt.SupervisorEscalated) -> None:
    h = _actor(s, e.supervisor)
    h.status = "escalated"
    h.last_error = f"child {e.child} restarted {e.restarts} times in {e.window:g}s"
    h.updated_at = e.at


_HANDLERS: Final[dict[type[Any], Callable[[State, Any], None]]] = {
    ev.WorkflowRegistered: _workflow_registered,
    ev.JobSubmitted: _job_submitted,
    ev.JobQueued: _job_queued,
    ev.JobStarted: _job_started,
    ev.JobRetrying: _job_retrying,
    ev.JobSucceeded: _job_succeeded,
    ev.JobFailed: _job_failed,
    ev.JobCancelled: _job_cancelled,
    ev.JobInterrupted: _job_interrupted,
    ev.JobResumed: _job_resumed,
    ev.JobStalled: _job_stalled,
    ev.MachineLaunchRequested: _launch_requested,
    ev.MachineLaunched: _launched,
    ev.MachineLaunchFailed: _launch_failed,
    ev.MachineStatusObserved: _status_observed,
    ev.MachineUnknownListed: _unknown_listed,
    ev.MachineReady: _ready,
    ev.MachineHealthy: _healthy,
    ev.MachineUnhealthy: _unhealthy,
    ev.MachineLeased: _leased,
    ev.MachineReleased: _released,
    ev.LeaseRenewed: _lease_renewed,
    ev.MachineStopping: _stopping,
    ev.MachineDraining: _draining,
    ev.MachineStopped: _stopped,
    ev.MachineStoppedAgain: _stopped_again,
    ev.MachineLost: _lost,
    ev.MachineAdopted: _adopted,
    ev.MachineAttached: _attached,
    ev.LatePromptStopped: _late_prompt_stopped,
    ev.InputUploaded: _input_uploaded,
    ev.PromptSubmitting: _prompt_submitting,
    ev.PromptSubmitted: _prompt_submitted,
    ev.PromptRejected: _prompt_rejected,
    ev.ExecutionStarted: _execution_started,
    ev.NodeCached: _node_cached,
    ev.NodeStarted: _node_started,
    ev.NodeProgress: _node_progress,
    ev.NodeExecuted: _node_executed,
    ev.ExecutionSucceeded: _execution_succeeded,
    ev.ExecutionInterrupted: _execution_interrupted,
    ev.ExecutionFailed: _execution_failed,
    ev.OutputSaved: _output_saved,
    ev.CostAccrued: _cost_accrued,
    ev.BudgetSet: _budget_set,
    ev.BudgetWarning: _budget_warning,
    ev.BudgetExceeded: _budget_exceeded,
    ev.LaunchRefused: _launch_refused,
    ev.BudgetLimitReached: _budget_limit_reached,
    ev.SystemStarted: _system_started,
    ev.SystemStopped: _system_stopped,
    rt.ActorStarted: _actor_started,
    rt.ActorCrashed: _actor_crashed,
    rt.ActorRestarted: _actor_restarted,
    rt.ActorStopped: _actor_stopped,
    rt.SupervisorEscalated: _supervisor_escalated,
    **SERVICE_HANDLERS,
}


_NodeProgress: Final = ev.NodeProgress


def apply(state: State, event: ev.Event) -> State:
    """Apply one event to ``state`` IN PLACE and return it. Never raises for a logged event."""
    state.events_applied += 1
    # Fast path for the event that is 80% of a log: progress of a node we already know, in
    # the job's current prompt. Anything unusual falls through to the full handler.
    if type(event) is _NodeProgress:
        job = state.jobs.get(event.job_id)
        if job is not None and job.prompt_id == event.prompt_id:
            node = job.nodes.get(event.node_id)
            if node is not None:
                node.value = event.value
                node.max = event.max
                state.last_at = job.updated_at = event.at
                return state
    handler = _HANDLERS.get(type(event))
    if handler is None:
        _anomaly(state, f"unhandled event type {type(event).__name__}")
    else:
        handler(state, event)
    # After the handler: a SystemStarted's sees the at of the event before it (the last one
    # of a run that crashed: _count_run_time).
    state.last_at = event.at
    return state


def apply_all(state: State, events: Any) -> State:
    """Apply every event of an iterable in order (in place); returns the state."""
    handlers = _HANDLERS
    jobs = state.jobs
    for event in events:
        state.events_applied += 1
        if type(event) is _NodeProgress:  # the fast path of apply, inlined
            job = jobs.get(event.job_id)
            if job is not None and job.prompt_id == event.prompt_id:
                node = job.nodes.get(event.node_id)
                if node is not None:
                    node.value = event.value
                    node.max = event.max
                    state.last_at = job.updated_at = event.at
                    continue
        handler = handlers.get(type(event))
        if handler is None:
            _anomaly(state, f"unhandled event type {type(event).__name__}")
        else:
            handler(state, event)
        state.last_at = event.at  # after the handler, as in apply
    return state
