"""The event vocabulary: every state change of conjure_actors, as it is written to the log.

Each event is a frozen, keyword-only ``msgspec.Struct`` with an explicit, stable ``tag``
(the ``"type"`` field on the wire), so renaming a class never breaks an old log. Every event
carries the ids it is about and ``at``, the wall time (seconds since the epoch) at which its
emitter decided it, so that :func:`conjure_actors.domain.state.apply` never reads a clock.

Conventions:

- Money is INTEGER micro-USD (``*_micros``): 1 USD = 1_000_000. Floats never hold money, so a
  replay reproduces the bill to the micro-dollar.
- ``server_id`` names a machine: a RunComfy server id, or for a ComfyUI the user runs
  (``--comfyui-url``) and dev machines, a url-less name chosen by the runtime. Machine URLs
  (``main_service_url``) are capabilities and NEVER appear in an event; neither do tokens.
- Intents are logged before their side effect (``MachineLaunchRequested`` before the launch
  POST, ``PromptSubmitting`` before ``POST /prompt``); an intent without its outcome in the
  log tells recovery what may exist out there.
- Evolution: new fields get a default and go last; a removed or retyped field needs an
  upcaster in the log reader. Never reuse a tag for a different meaning.

The :data:`Event` union also holds the actor runtime's lifecycle events
(:mod:`conjure_actors.lifecycle`), so one typed decoder reads a whole log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import msgspec

from conjure_actors.domain.service_events import (
    SERVICE_EVENTS,
    ApiJobAccepted,
    ApiJobCancelRequested,
    ApiJobExpired,
    ApiJobExpiryMoved,
    ApiJobOutputsNotStored,
    AssetDeleted,
    AssetExpired,
    AssetRecorded,
    IdempotencyKeyClaimed,
    IdempotencyKeyReleased,
)
from conjure_actors.lifecycle import (
    LIFECYCLE_EVENTS,
    ActorCrashed,
    ActorRestarted,
    ActorStarted,
    ActorStopped,
    SupervisorEscalated,
)

__all__ = [
    "DOMAIN_EVENTS",
    "EVENT_TYPES",
    "TAGS",
    "UPCASTERS",
    "BudgetExceeded",
    "BudgetLimitReached",
    "BudgetSet",
    "BudgetWarning",
    "CostAccrued",
    "Event",
    "ExecutionFailed",
    "ExecutionInterrupted",
    "ExecutionStarted",
    "ExecutionSucceeded",
    "InputUploaded",
    "JobCancelled",
    "JobFailed",
    "JobInterrupted",
    "JobQueued",
    "JobResumed",
    "JobRetrying",
    "JobStalled",
    "JobStarted",
    "JobSubmitted",
    "JobSucceeded",
    "LatePromptStopped",
    "LaunchRefused",
    "LeaseRenewed",
    "MachineAdopted",
    "MachineAttached",
    "MachineDraining",
    "MachineHealthy",
    "MachineLaunchFailed",
    "MachineLaunchRequested",
    "MachineLaunched",
    "MachineLeased",
    "MachineLost",
    "MachineReady",
    "MachineReleased",
    "MachineStatusObserved",
    "MachineStopped",
    "MachineStoppedAgain",
    "MachineStopping",
    "MachineUnhealthy",
    "MachineUnknownListed",
    "NodeCached",
    "NodeExecuted",
    "NodeProgress",
    "NodeStarted",
    "OutputSaved",
    "PromptRejected",
    "PromptSubmitted",
    "PromptSubmitting",
    "SystemStarted",
    "SystemStopped",
    "WorkflowRegistered",
    "event_tag",
]


# --------------------------------------------------------------------------------- workflow


class WorkflowRegistered(msgspec.Struct, frozen=True, kw_only=True, tag="workflow.registered"):
    """Emitted by the CLI (``run``) before the first job that uses a workflow graph.

    The graph is stored once, as canonical JSON text; jobs refer to it by ``sha256`` (see
    :func:`conjure_actors.domain.workflow.graph_sha256`) so a resume can rebuild the prompt.
    """

    sha256: str
    name: str
    graph_json: str
    at: float


# -------------------------------------------------------------------------------------- job


class JobSubmitted(msgspec.Struct, frozen=True, kw_only=True, tag="job.submitted"):
    """Emitted by the CLI (``run``) when it decided to run a job; the job is ``pending``.

    ``bindings`` maps ``"NODE.INPUT"`` to the JSON text of the value injected there (image
    name, prompt and ``--set`` overrides already resolved), so the prompt can be rebuilt from
    the registered graph alone. ``parent_id`` links a child job to its parent (fan-out).
    ``workflow_version`` is the RunComfy workflow version a machine must run (None: any).
    ``extra_inputs`` maps ``"NODE.INPUT"`` to more input files than ``image_path`` (which goes
    to the input-image node), each kept at submission under its content's sha256 (the file
    name's stem): each is uploaded before the prompt and the name ComfyUI gave it bound
    there (``serve`` jobs with several LoadImage inputs). Empty in older logs.
    """

    job_id: str
    workflow_sha256: str
    bindings: dict[str, str] = {}
    image_path: str | None = None
    image_sha256: str | None = None
    prompt: str | None = None
    priority: int = 0
    seed: int | None = None
    parent_id: str | None = None
    workflow_version: str | None = None
    at: float
    extra_inputs: dict[str, str] = {}


class JobQueued(msgspec.Struct, frozen=True, kw_only=True, tag="job.queued"):
    """Emitted by the job supervisor when a job waits for a machine (also a requeue after a
    lost machine or on resume); status ``queued``."""

    job_id: str
    reason: str = ""
    at: float


class JobStarted(msgspec.Struct, frozen=True, kw_only=True, tag="job.started"):
    """Emitted by the WorkflowActor when attempt ``attempt`` (1-based) begins on a leased
    machine ``server_id``; status ``running``."""

    job_id: str
    attempt: int
    server_id: str
    at: float


class JobRetrying(msgspec.Struct, frozen=True, kw_only=True, tag="job.retrying"):
    """Emitted by the WorkflowActor after a retryable failure of ``attempt``: the next one
    starts after ``delay`` seconds of backoff; status ``retrying``."""

    job_id: str
    attempt: int
    delay: float
    reason: str
    at: float


class JobSucceeded(msgspec.Struct, frozen=True, kw_only=True, tag="job.succeeded"):
    """Emitted by the WorkflowActor once every output is downloaded and verified (terminal)."""

    job_id: str
    at: float


class JobFailed(msgspec.Struct, frozen=True, kw_only=True, tag="job.failed"):
    """Emitted by the WorkflowActor when a job gives up (terminal). ``retryable`` says whether
    the last error was transient (retries exhausted) or not (e.g. a prompt rejected by
    validation). ``message`` is one line, scrubbed of secrets."""

    job_id: str
    error_type: str
    message: str
    retryable: bool = False
    at: float


class JobCancelled(msgspec.Struct, frozen=True, kw_only=True, tag="job.cancelled"):
    """Emitted by the job supervisor when a job is cancelled (user, Ctrl-C, budget; terminal)."""

    job_id: str
    reason: str
    at: float


class JobInterrupted(msgspec.Struct, frozen=True, kw_only=True, tag="job.interrupted"):
    """Emitted by the runtime's ordered shutdown for a job that had not finished when the run
    was interrupted (Ctrl-C, SIGTERM, SIGHUP, an error elsewhere); status ``interrupted``: not
    terminal, so ``run --resume`` runs it to the end. The job's prompt id and machine are kept,
    so a resume can re-attach to a prompt that still runs."""

    job_id: str
    reason: str = ""
    at: float


class JobResumed(msgspec.Struct, frozen=True, kw_only=True, tag="job.resumed"):
    """Emitted by a job's WorkflowActor when a resume takes up an ``interrupted`` job: it is
    ``running`` again when its prompt was submitted on a machine (re-attach), else
    ``queued``."""

    job_id: str
    at: float


class JobStalled(msgspec.Struct, frozen=True, kw_only=True, tag="job.stalled"):
    """Emitted by the MonitorActor when a running job showed no progress for ``idle_seconds``;
    its WorkflowActor then switches to polling. Does not change the job's status."""

    job_id: str
    idle_seconds: float
    at: float


# ---------------------------------------------------------------------------------- machine


class MachineLaunchRequested(
    msgspec.Struct, frozen=True, kw_only=True, tag="machine.launch_requested"
):
    """Emitted by the MachineActor BEFORE ``POST /servers`` (an intent).

    ``request_key`` is chosen locally and unique; if the log ends before the matching
    ``MachineLaunched``/``MachineLaunchFailed``, recovery lists the account's servers to find
    what this request may have started. ``max_jobs`` is how many jobs the machine may run
    at once (``jobs_per_machine``).
    """

    request_key: str
    server_type: str
    workflow_version: str
    estimated_duration: int
    max_jobs: int = 1
    at: float


class MachineLaunched(msgspec.Struct, frozen=True, kw_only=True, tag="machine.launched"):
    """Emitted by the MachineActor when RunComfy answered the launch (status ``Starting``)."""

    request_key: str
    server_id: str
    at: float


class MachineLaunchFailed(msgspec.Struct, frozen=True, kw_only=True, tag="machine.launch_failed"):
    """Emitted by the MachineActor when the launch call failed for good (no server exists)."""

    request_key: str
    reason: str
    at: float


class MachineStatusObserved(
    msgspec.Struct, frozen=True, kw_only=True, tag="machine.status_observed"
):
    """Emitted by the MachineActor when a poll shows a RunComfy status it has not recorded
    yet (an open string: ``Starting``, ``Initializing``, ``Error``...). Informational."""

    server_id: str
    status: str
    at: float


class MachineUnknownListed(msgspec.Struct, frozen=True, kw_only=True, tag="machine.unknown_listed"):
    """Emitted by the MachineActor after a recovery's listing (``run --resume``, serve's
    start), once per server the account lists up that the log does not know: another
    client's, or one launched after the log's last record (a log cut short or salvaged
    lost its launch). Named, never adopted nor stopped (``machines_policy.unknown_servers``
    says why). ``cost_micros``: its cost so far by the price table (None: not Ready, or a
    server type the table has no price for). Changes no state: what was seen, and when."""

    server_id: str
    status: str
    server_type: str | None = None
    service_ready_at: float | None = None
    estimated_stopping_at: float | None = None
    cost_micros: int | None = None
    at: float


class MachineReady(msgspec.Struct, frozen=True, kw_only=True, tag="machine.ready"):
    """Emitted by the MachineActor when the server reports ``Ready``.

    Billing starts at ``service_ready_at``, the SERVER's time (epoch seconds). The rate and
    the price-table version are the facts the ledger is rebuilt from.
    """

    server_id: str
    service_ready_at: float
    estimated_stopping_at: float | None
    rate_micros_per_hour: int
    price_table_version: str
    at: float


class MachineHealthy(msgspec.Struct, frozen=True, kw_only=True, tag="machine.healthy"):
    """Emitted by the MachineActor once ComfyUI's ``/system_stats`` answered on the machine."""

    server_id: str
    at: float


class MachineUnhealthy(msgspec.Struct, frozen=True, kw_only=True, tag="machine.unhealthy"):
    """Emitted by the MachineActor when an attached ComfyUI (a machine we do not pay for:
    ``--comfyui-url``, the dev machine) stopped answering ``/system_stats``: it takes no job
    until it answers again (``MachineHealthy``); the jobs on it wait for it (queued again,
    or, with a prompt there, to re-attach to it)."""

    server_id: str
    reason: str
    at: float


class MachineLeased(msgspec.Struct, frozen=True, kw_only=True, tag="machine.leased"):
    """Emitted by the MachineActor when it hands machine ``server_id`` to job ``job_id``."""

    server_id: str
    job_id: str
    at: float


class MachineReleased(msgspec.Struct, frozen=True, kw_only=True, tag="machine.released"):
    """Emitted by the MachineActor when job ``job_id`` gave machine ``server_id`` back."""

    server_id: str
    job_id: str
    at: float


class LeaseRenewed(msgspec.Struct, frozen=True, kw_only=True, tag="machine.lease_renewed"):
    """Emitted by the MachineActor after ``update-estimated-duration`` succeeded: RunComfy
    will stop the machine by itself at ``estimated_stopping_at`` unless renewed again."""

    server_id: str
    estimated_stopping_at: float
    at: float


class MachineStopping(msgspec.Struct, frozen=True, kw_only=True, tag="machine.stopping"):
    """Emitted by the MachineActor BEFORE ``DELETE /servers/{id}`` (an intent); ``reason``:
    idle, budget, shutdown, not_ready, lost, unhealthy, reattach_given_up..."""

    server_id: str
    reason: str
    at: float


class MachineDraining(msgspec.Struct, frozen=True, kw_only=True, tag="machine.draining"):
    """Emitted by the MachineActor when machine ``server_id`` is to take no new job and to be
    stopped (``MachineStopping`` with this ``reason``) once the jobs still on it end, or at
    once if none is: ``reattach_given_up`` (a job gave its re-attach up there before any
    lookup of its prompt answered, so that prompt may still run there, unfollowed). Logged
    with the job's ``MachineReleased`` and before the job's own retry, so that a run resumed
    after a crash gives the machine no job either. Not in logs written before session 27."""

    server_id: str
    reason: str
    at: float


class MachineStopped(msgspec.Struct, frozen=True, kw_only=True, tag="machine.stopped"):
    """Emitted by the MachineActor when the stop call returned 200 at ``stopped_at``.

    ``billed_seconds`` and ``cost_micros`` follow THE billing rule
    (:func:`conjure_actors.domain.prices.billed_seconds`, ``machine_cost_micros``); a machine
    that never became ready bills 0. ``service_ready_at`` (with its rate and price table)
    is the server's Ready time from its final record, when the log had not seen it Ready
    (stopped while Starting, or Ready between two polls); ``None`` in older logs.

    Emitted a second time for a machine taken for lost (``MachineLost`` and its bill) that a
    later listing showed up after all: stopped then, this bill replaces the first.

    ``still_up``: the 200's answer still showed the machine up (not Deleting/Stopping): the
    stop did not take, so billing did not end at ``stopped_at`` (a ``DELETE`` sent again, or
    the listing that shows it gone, ends it: ``MachineStoppedAgain``). False in older logs.
    """

    server_id: str
    stopped_at: float
    billed_seconds: int
    cost_micros: int
    service_ready_at: float | None = None
    rate_micros_per_hour: int = 0
    price_table_version: str = ""
    still_up: bool = False
    at: float


class MachineStoppedAgain(msgspec.Struct, frozen=True, kw_only=True, tag="machine.stopped_again"):
    """Emitted by the MachineActor when a machine whose stop is logged (``MachineStopped``:
    its ``DELETE`` answered 200) was still listed up afterwards, so was sent a ``DELETE``
    again, and that one answered at ``stopped_at`` (``found`` False: 404, gone by then;
    ``stopped_at`` is then bounded as for any machine found gone). RunComfy billed it
    until then: ``billed_seconds`` and ``cost_micros`` (from the logged Ready time and
    rate, by THE billing rule) replace the bill ``MachineStopped`` gave it.
    ``service_ready_at`` (with its rate and price table): the server's Ready time from that
    answer, when the log had none (it became Ready after its first stop's answer).
    ``still_up``: as for ``MachineStopped`` (this 200 did not take either). Emitted with
    ``found`` False too when a listing shows gone a machine whose last 200 was ``still_up``
    (it went by itself since: billed until then, at most its lease end)."""

    server_id: str
    stopped_at: float
    billed_seconds: int
    cost_micros: int
    found: bool = True
    service_ready_at: float | None = None
    rate_micros_per_hour: int = 0
    price_table_version: str = ""
    still_up: bool = False
    at: float


class MachineLost(msgspec.Struct, frozen=True, kw_only=True, tag="machine.lost"):
    """Emitted by the MachineActor when a machine vanished (404) or stopped on its own (lease
    ran out); its jobs are requeued."""

    server_id: str
    reason: str
    at: float


class LatePromptStopped(
    msgspec.Struct, frozen=True, kw_only=True, tag="machine.late_prompt_stopped"
):
    """Emitted by the MachineActor when a prompt its job had given up on (``POST /prompt``
    with an unknown outcome, not found, or still on the wire when its attempt ended) showed up
    late on machine ``server_id`` and was stopped there: ``was`` ``"pending"`` (deleted from
    the queue) or ``"running"`` (interrupted). The job follows another prompt, or has ended.
    ``confirmed``: a later lookup found it gone (``/interrupt`` only sets a flag ComfyUI
    reads at the next node); False: the watch ended first (its machine went, or the prompt
    still ran long after the stop); None in older logs, which logged ``"running"`` once
    the interrupt was accepted, confirmed or not."""

    server_id: str
    prompt_id: str
    job_id: str
    was: str
    confirmed: bool | None = None
    at: float


class MachineAdopted(msgspec.Struct, frozen=True, kw_only=True, tag="machine.adopted"):
    """Emitted by the MachineActor on resume for a server found alive that the log knew of
    (or that a dangling launch request started): the runtime owns it again. Carries what
    the server said so the machine can be rebuilt even if its launch was never logged."""

    server_id: str
    request_key: str | None = None
    server_type: str
    workflow_version: str | None = None
    status: str
    service_ready_at: float | None = None
    estimated_stopping_at: float | None = None
    rate_micros_per_hour: int = 0
    price_table_version: str = ""
    max_jobs: int = 1
    at: float


class MachineAttached(msgspec.Struct, frozen=True, kw_only=True, tag="machine.attached"):
    """Emitted by the MachineActor for a machine it does not pay for: a ComfyUI the user runs
    (``kind="comfyui"``) or a dev machine from the state file (``kind="dev"``). ``server_id``
    is a url-less name. Ready and healthy-checked separately; costs nothing here."""

    server_id: str
    kind: Literal["comfyui", "dev"]
    max_jobs: int = 1
    at: float


# -------------------------------------------------------------------------------- execution


class InputUploaded(msgspec.Struct, frozen=True, kw_only=True, tag="exec.input_uploaded"):
    """Emitted by the WorkflowActor when an input file reached the machine: ``name`` is the
    name ComfyUI answered (use it, not the one sent), bound into LoadImage ``node_id``."""

    job_id: str
    node_id: str
    name: str
    sha256: str
    size: int
    at: float


class PromptSubmitting(msgspec.Struct, frozen=True, kw_only=True, tag="exec.prompt_submitting"):
    """Emitted by the WorkflowActor BEFORE ``POST /prompt`` (an intent). ``prompt_id`` is a
    uuid4 chosen locally; recovery looks it up in ``/queue`` and ``/history/{id}``."""

    job_id: str
    attempt: int
    prompt_id: str
    client_id: str
    server_id: str
    at: float


class PromptSubmitted(msgspec.Struct, frozen=True, kw_only=True, tag="exec.prompt_submitted"):
    """Emitted by the WorkflowActor when ``POST /prompt`` answered 200 (``number`` is the
    queue position ComfyUI assigned)."""

    job_id: str
    prompt_id: str
    number: float
    at: float


class PromptRejected(msgspec.Struct, frozen=True, kw_only=True, tag="exec.prompt_rejected"):
    """Emitted by the WorkflowActor when ``POST /prompt`` answered 4xx (validation), or when
    its own check against the version's node catalogue refused the prompt before the POST:
    the outcome of the ``PromptSubmitting`` intent; the prompt never ran. ``node_id`` and
    ``class_type``: the first node the rejection names (ComfyUI's ``node_errors``); None
    when it names none, and in logs written before they existed."""

    job_id: str
    prompt_id: str
    error_type: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    at: float


class ExecutionStarted(msgspec.Struct, frozen=True, kw_only=True, tag="exec.started"):
    """Emitted by the WorkflowActor on ComfyUI's ``execution_start`` for the job's prompt."""

    job_id: str
    prompt_id: str
    at: float


class NodeCached(msgspec.Struct, frozen=True, kw_only=True, tag="exec.node_cached"):
    """Emitted by the WorkflowActor on ``execution_cached``: these nodes will not run."""

    job_id: str
    prompt_id: str
    nodes: tuple[str, ...]
    at: float


class NodeStarted(msgspec.Struct, frozen=True, kw_only=True, tag="exec.node_started"):
    """Emitted by the WorkflowActor on ``executing {node}``."""

    job_id: str
    prompt_id: str
    node_id: str
    at: float


class NodeProgress(msgspec.Struct, frozen=True, kw_only=True, tag="exec.node_progress"):
    """Emitted by the WorkflowActor on ``progress {value, max}`` (the most frequent event)."""

    job_id: str
    prompt_id: str
    node_id: str
    value: float
    max: float
    at: float


class NodeExecuted(msgspec.Struct, frozen=True, kw_only=True, tag="exec.node_executed"):
    """Emitted by the WorkflowActor when a node finished (``executed`` or the
    ``progress_state`` that marks it finished)."""

    job_id: str
    prompt_id: str
    node_id: str
    at: float


class ExecutionSucceeded(msgspec.Struct, frozen=True, kw_only=True, tag="exec.succeeded"):
    """Emitted by the WorkflowActor on ``execution_success`` (outputs not downloaded yet)."""

    job_id: str
    prompt_id: str
    at: float


class ExecutionInterrupted(msgspec.Struct, frozen=True, kw_only=True, tag="exec.interrupted"):
    """Emitted by the WorkflowActor on ``execution_interrupted`` (after ``/interrupt``)."""

    job_id: str
    prompt_id: str
    node_id: str | None = None
    at: float


class ExecutionFailed(msgspec.Struct, frozen=True, kw_only=True, tag="exec.failed"):
    """Emitted by the WorkflowActor on a terminal ``execution_error`` of the job's prompt."""

    job_id: str
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    exception_type: str
    message: str
    at: float


class OutputSaved(msgspec.Struct, frozen=True, kw_only=True, tag="exec.output_saved"):
    """Emitted by the WorkflowActor when an output file of node ``node_id`` was downloaded
    and verified: ``path`` is local (under ``OUT/<job_id>/``), ``kind`` e.g. image, mesh."""

    job_id: str
    node_id: str
    filename: str
    path: str
    size: int
    sha256: str
    kind: str
    at: float


# ------------------------------------------------------------------------------------- cost


class CostAccrued(msgspec.Struct, frozen=True, kw_only=True, tag="cost.accrued"):
    """Emitted by the CostActor periodically for a ready machine.

    ``amount_micros`` is the machine's CUMULATIVE cost from its ``service_ready_at`` to
    ``until`` under the billing rule (not a delta): rounding never drifts, and the ledger
    just takes the latest figure. ``MachineStopped.cost_micros`` supersedes it.
    """

    server_id: str
    amount_micros: int
    until: float
    rate_micros_per_hour: int
    price_table_version: str
    at: float


class BudgetSet(msgspec.Struct, frozen=True, kw_only=True, tag="cost.budget_set"):
    """Emitted by the CostActor when a budget is set or changed (None: no budget).

    ``from_start``: the budget a start was configured with (``--budget``, ``budget.usd``),
    set because it differs from the one the log's last start given a budget had (or the
    log did not record that one); its ``limit_micros`` is that start's budget, which a later
    start given the same keeps the log's budget over (one set at run time). Such an event
    whose limit is the one in force only records it. False: set at run time (``PUT
    /api/conjure/budget``), or a log written before it was recorded."""

    limit_micros: int | None
    at: float
    from_start: bool = False


class BudgetWarning(msgspec.Struct, frozen=True, kw_only=True, tag="cost.budget_warning"):
    """Emitted by the CostActor when spending crossed the warning threshold (80%)."""

    spent_micros: int
    limit_micros: int
    at: float


class BudgetExceeded(msgspec.Struct, frozen=True, kw_only=True, tag="cost.budget_exceeded"):
    """Emitted by the CostActor when spending reached the limit: machines get stopped."""

    spent_micros: int
    limit_micros: int
    at: float


class BudgetLimitReached(
    msgspec.Struct, frozen=True, kw_only=True, tag="cost.budget_limit_reached"
):
    """Emitted by the CostActor when it refuses a launch, or a machine's lease renewal,
    because the budget cannot cover it: the first such refusal since the budget was set or
    since one of that kind (a launch; that machine's renewal) was last granted. It says
    what was refused, not that nothing more will be: the pool asks again while jobs wait
    (a launch) or the machine runs a job (a renewal), and one that fits later (a machine
    stopped before its lease's end frees what it committed) is granted. A machine whose
    renewal was refused takes no new job meanwhile and stops once idle.

    ``what``: ``"launch"`` or ``"renewal"``; ``committed_micros``: what RunComfy will bill
    beyond ``spent_micros`` (the rest of each lease, one lease per launch on its way);
    ``needed_micros``: what the refused launch or renewal would have committed more;
    ``server_id``: the machine whose renewal was refused (both None in logs written before
    they were recorded)."""

    what: str
    spent_micros: int
    committed_micros: int
    limit_micros: int
    at: float
    needed_micros: int | None = None
    server_id: str | None = None


class LaunchRefused(msgspec.Struct, frozen=True, kw_only=True, tag="cost.launch_refused"):
    """Emitted by the CostActor when a launch for ``job_id`` would cross the budget."""

    job_id: str
    estimate_micros: int
    remaining_micros: int
    at: float


# ----------------------------------------------------------------------------------- system


class SystemStarted(msgspec.Struct, frozen=True, kw_only=True, tag="system.started"):
    """Emitted by the CLI first thing in every run (also each ``--resume``). ``out_dir``:
    the absolute folder the run's outputs go to (``OUT/<job_id>/``), which a resume without
    ``--out`` writes to again; ``server_type``, ``max_machines``, ``idle_timeout``: the
    run's, which a resume keeps unless told otherwise (each None in logs written before it
    was recorded). ``writer_host``, ``writer_pid``, ``writer_started``, ``writer_boot_id``:
    the process that writes the run (its host name, pid, start in clock ticks after boot and
    boot id: ``runtime.process.ProcessId``), so that a start on a copy of the log made while
    that process runs can tell it still does, and refuse to drive its machines too (None in
    logs written before they were recorded; the last two where the OS does not say them)."""

    run_id: str
    version: str
    mode: Literal["simulated", "runcomfy", "comfyui"]
    at: float
    out_dir: str | None = None
    server_type: str | None = None
    max_machines: int | None = None
    idle_timeout: float | None = None
    writer_host: str | None = None
    writer_pid: int | None = None
    writer_started: int | None = None
    writer_boot_id: str | None = None


class SystemStopped(msgspec.Struct, frozen=True, kw_only=True, tag="system.stopped"):
    """Emitted by the CLI last thing in a run that ended in order (``reason``: done,
    interrupted, error...). A log without it after ``SystemStarted`` ended in a crash."""

    reason: str
    at: float


Event = (
    WorkflowRegistered
    | JobSubmitted
    | JobQueued
    | JobStarted
    | JobRetrying
    | JobSucceeded
    | JobFailed
    | JobCancelled
    | JobInterrupted
    | JobResumed
    | JobStalled
    | MachineLaunchRequested
    | MachineLaunched
    | MachineLaunchFailed
    | MachineStatusObserved
    | MachineUnknownListed
    | MachineReady
    | MachineHealthy
    | MachineUnhealthy
    | MachineLeased
    | MachineReleased
    | LeaseRenewed
    | MachineStopping
    | MachineDraining
    | MachineStopped
    | MachineStoppedAgain
    | MachineLost
    | MachineAdopted
    | MachineAttached
    | LatePromptStopped
    | InputUploaded
    | PromptSubmitting
    | PromptSubmitted
    | PromptRejected
    | ExecutionStarted
    | NodeCached
    | NodeStarted
    | NodeProgress
    | NodeExecuted
    | ExecutionSucceeded
    | ExecutionInterrupted
    | ExecutionFailed
    | OutputSaved
    | CostAccrued
    | BudgetSet
    | BudgetWarning
    | BudgetExceeded
    | LaunchRefused
    | BudgetLimitReached
    | SystemStarted
    | SystemStopped
    | ActorStarted
    | ActorCrashed
    | ActorRestarted
    | ActorStopped
    | SupervisorEscalated
    | AssetRecorded
    | AssetDeleted
    | AssetExpired
    | IdempotencyKeyClaimed
    | IdempotencyKeyReleased
    | ApiJobAccepted
    | ApiJobCancelRequested
    | ApiJobExpired
    | ApiJobExpiryMoved
    | ApiJobOutputsNotStored
)
"""Every event a log may hold: pass it to ``eventlog`` as the ``event_type``."""

DOMAIN_EVENTS: Final[tuple[type[msgspec.Struct], ...]] = (
    WorkflowRegistered,
    JobSubmitted,
    JobQueued,
    JobStarted,
    JobRetrying,
    JobSucceeded,
    JobFailed,
    JobCancelled,
    JobInterrupted,
    JobResumed,
    JobStalled,
    MachineLaunchRequested,
    MachineLaunched,
    MachineLaunchFailed,
    MachineStatusObserved,
    MachineUnknownListed,
    MachineReady,
    MachineHealthy,
    MachineUnhealthy,
    MachineLeased,
    MachineReleased,
    LeaseRenewed,
    MachineStopping,
    MachineDraining,
    MachineStopped,
    MachineStoppedAgain,
    MachineLost,
    MachineAdopted,
    MachineAttached,
    LatePromptStopped,
    InputUploaded,
    PromptSubmitting,
    PromptSubmitted,
    PromptRejected,
    ExecutionStarted,
    NodeCached,
    NodeStarted,
    NodeProgress,
    NodeExecuted,
    ExecutionSucceeded,
    ExecutionInterrupted,
    ExecutionFailed,
    OutputSaved,
    CostAccrued,
    BudgetSet,
    BudgetWarning,
    BudgetExceeded,
    LaunchRefused,
    BudgetLimitReached,
    SystemStarted,
    SystemStopped,
)
"""The domain's own event classes (without the runtime's lifecycle events)."""

EVENT_TYPES: Final[tuple[type[msgspec.Struct], ...]] = (
    DOMAIN_EVENTS + LIFECYCLE_EVENTS + SERVICE_EVENTS
)
"""Every class of the :data:`Event` union, in a stable order (the service's events of
:mod:`conjure_actors.domain.service_events` last)."""


def event_tag(cls: type[msgspec.Struct]) -> str:
    """The stable wire tag of an event class (e.g. ``"job.submitted"``)."""
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):  # pragma: no cover - every event class sets a string tag
        raise TypeError(f"{cls.__name__} has no string tag")
    return tag


TAGS: Final[dict[str, type[msgspec.Struct]]] = {event_tag(cls): cls for cls in EVENT_TYPES}
"""Wire tag -> event class, for every event of the union."""


UPCASTERS: Final[Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
"""Old tag -> a function rewriting an old event's raw dict into a newer one; pass it to
``eventlog.read`` / ``eventlog.open_journal`` as ``upcasters``. Empty today: every tag ever
written is current. When an event must change incompatibly, the new layout gets a new tag
(e.g. ``job.submitted.v2``) on the class, the old tag gets an upcaster here, and the old
golden log under ``tests/data/`` proves old logs still replay."""
