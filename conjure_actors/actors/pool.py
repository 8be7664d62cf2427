"""The MachineActor: the machine pool (launch, wait-ready, health, lease, renew, idle
shutdown, stop, lost machines, adoption after a crash).

The actor handles one message at a time and is the only writer of the machine events. It
never waits on the cloud itself: every call that waits (``POST /servers``, the one
``GET /servers`` per poll, a ``DELETE``, a renewal, a health check, the budget's approval,
the poll timer, the shutdown deadline) runs in a child task in the actor's nursery that
REPORTS what happened as a message (``ServerPolled``, ``LaunchAnswered``, ``StopAnswered``...).
The actor then decides with a pure function of :mod:`conjure_actors.domain.machines_policy`
and emits. A child never emits and never touches the pool's memory.

:class:`MachinePool` is the memory that outlives a restart of the actor (the waiting lease
requests, each machine's live client and lost signal, the count of launches that failed in a
row); what is in flight (calls of the crashed incarnation) is not: after a restart, a launch
whose answer was lost stays an open intent that the next listing resolves, and a stop whose
answer was lost is sent again when a listing shows the machine still running.

How a lease is served (``_assign``, after every change):

1. waiting requests in their jobs' queue order (``state.queue_key``: priority, then
   submission order, the order ``queue_position`` counts; a job queued again keeps its
   place) take a Ready, healthy machine of their workflow version with a free slot (reuse
   first). After a restart, a slot the log shows filled by a job's submitted prompt is not
   free: it is kept for that job's re-attach (``reserved``); and the jobs the restart
   re-queues that have not asked yet hold their places: no job behind the first of them
   is served before it asks (``MachinePool.unasked``, for ``RESUMED_IDLE_HOLD`` at most);
2. the requests left over whose job is still active are *unmet demand*: launch
   ``launches_needed(...)`` machines (each approved by the CostActor), at most
   ``max_machines`` alive, never after ``StopLaunching``, and not again once
   ``max_launch_attempts`` launches in a row ended without a Ready machine, nor a workflow
   version held because as many of its machines in a row were Ready but their ComfyUI never
   answered (``MachinePool.unanswered``: its waiting jobs fail, saying so). Each approved
   launch decides when the account's rate limit lets it out whether the demand still needs
   it, so a burst a Ready machine drained meanwhile sends (almost) no launch;
3. machines still Starting beyond what the waiting requests need (a Ready machine took
   them, or their jobs were cancelled) are stopped while Starting, which RunComfy does not
   bill (``surplus_starting``); a pre-launched machine is kept. Those Starting beyond
   ``max_machines`` alive (a launch of unknown outcome that landed late) are stopped too.
   After a restart the jobs the log re-queues count as waiting until they ask
   (``MachinePool.resumed``): the recovery adopts the machines still Starting before those
   jobs are queued again; and the log's machines are not judged at all before the
   recovery's listing has shown what they are now (``MachinePool.unreconciled``). The
   spares of a hedged launch (``launch_hedge`` > 1) that are Ready already when another
   machine took their job are stopped too, unless the warm pool keeps them
   (``_stop_hedge_spares``);
4. a request that can never be served (refused, launching stopped, shutdown) fails.

The waiting requests are the run's one job queue (issue 16): a job waiting for a machine
has no actor, only its entry here (``QueueJob``: a ``_Waiter`` and its heap entries). A
machine leased to it goes to ``on_granted``, which starts its WorkflowActor with the lease;
a refusal goes to ``on_refused``. The queued jobs' deadlines sit in one heap watched by one
timer child (``machine-queue-timer``): a job still waiting at its deadline is refused with
``reason="timeout"``. Requests of a running actor (``LeaseMachine``: a restarted job
incarnation, a recovery bound to one machine) wait here too, answered through their reply.

Predictive pre-launch (``pool.prelaunch_max`` > 0): each lease request is an arrival; from
their rate over ``prelaunch_window`` the pool launches machines (each approved by the
CostActor, like any launch) until ``prelaunch_target(...)`` are alive, so machines start
before the jobs that will need them arrive. A pre-launched machine is never stopped as
surplus; one that no job takes stops by the idle timeout.

Given-up prompts (``WatchLatePrompt``): a job that gave a prompt up while its ``POST /prompt``
may still reach the machine (outcome unknown and not found, still on the wire at its
attempt's end, unknown to a restarted run) tells the pool, which looks it up there every
``LATE_PROMPT_EVERY`` s for ``LATE_PROMPT_WINDOW`` s (one child per prompt; the watches
outlive a restart of the actor) and deletes or interrupts it if it shows up
(``LatePromptStopped``), so it does not run unfollowed on the paid machine.

Billing: a stop's bill comes from the server's final record (the ``DELETE``'s answer, or a
``GET`` after it), so a machine stopped while the log still said Starting, or that became
Ready between two polls, is billed from the server's Ready time, as RunComfy bills it. A
machine still listed up after its ``DELETE`` answered 200 is sent one again, and the answer
to that one ends its bill (``MachineStoppedAgain``): RunComfy billed it until then. A
``DELETE`` answered 404 ends the bill at the first listing that left the machine out, when
one did (``missing_since``), as a loss does: the answer may come long after.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import math
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs
import msgspec
import trio

import eventlog
from conjure_actors.actors.context import Context
from conjure_actors.actors.messages import (
    CancelLease,
    Lease,
    LeaseFailedError,
    LeaseMachine,
    LostSignal,
    PollNow,
    QueueDeadline,
    QueueJob,
    ReleaseMachine,
    Reply,
    ResumeLaunching,
    StopAllMachines,
    StopLaunching,
    StopMachine,
    WatchLatePrompt,
)
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clients.errors import (
    AuthError,
    ClientError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerNotFoundError,
    TransportError,
)
from conjure_actors.clients.ratelimit import TokenBucket
from conjure_actors.domain import cost_policy, decide
from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy as policy
from conjure_actors.domain.describe import RAISE_BUDGET, budget_left
from conjure_actors.domain.errors import DomainError
from conjure_actors.domain.machines_policy import MachineView, Observation, Seen
from conjure_actors.domain.prices import format_usd
from conjure_actors.domain.state import (
    ACTIVE_STATUSES,
    LOST_WHILE_DOWN,
    M_READY,
    M_STARTING,
    M_STOPPED,
    MACHINE_GONE,
    RETRYING,
    RUNNING,
    queue_key,
)
from conjure_actors.runtime import Actor, ActorRef
from conjure_actors.runtime.errors import ActorStoppedError, AskTimeoutError

log = logging.getLogger("conjure_actors.actors.pool")

HEALTH_ATTEMPTS = 5

ATTACHED_MISSES = 3
"""An attached ComfyUI (``--comfyui-url``, the dev machine: nothing we launch or pay for)
is asked ``/system_stats`` at every poll; this many failed in a row (or one, checked at once
when a job's own request to it failed: see ``_on_attached_checked``) and it is taken for down
(``MachineUnhealthy``): its jobs wait for it, in their place (a job whose prompt it has
keeps that prompt, to follow it there again: it may only have been cut off)."""

ATTACHED_CHECK_TIMEOUT = 10.0
"""How long one ``/system_stats`` of an attached ComfyUI may take (its retries included)."""

LATE_PROMPT_EVERY = 10.0
"""Seconds between two lookups of a prompt its job gave up on (``WatchLatePrompt``)."""

LATE_PROMPT_WINDOW = 900.0
"""Seconds such a prompt is watched for: a request's bytes held by TCP retransmissions may
still reach ComfyUI that late (Linux gives up after ~15 min)."""

LATE_PROMPT_CONFIRM = 600.0
"""Seconds a watch goes on (past its window if need be) after it first stopped the prompt,
until a lookup finds it gone: ``/interrupt`` is a flag ComfyUI reads at the next node or
progress step, so a long node that reports no progress runs on to its end (the watch
interrupts it again at each lookup meanwhile)."""

STOP_RECHECK = 300.0
"""Seconds after a ``DELETE`` answered 200 during which listings are checked for that
machine: RunComfy answers ``Deleting`` and then drops it; one still listed up (Ready,
Starting, ...) meanwhile was not stopped, so it is sent a ``DELETE`` again. Five minutes:
many polls, and well within any lease (so a machine that ignores it is not billed long)."""

ORPHANED_LAUNCH = "its cloud ended with the run that launched it"
# MachineStopping's reason for a machine a job gave its re-attach up on before any lookup
# of its prompt answered (the prompt may still run there, unfollowed).
REATTACH_GIVEN_UP = "reattach_given_up"

RECOVERY_LOOKUP_PATIENCE = 60.0
"""Seconds the recovery waits, in all, for the lookups of the machines its listing left
out (_look_up_unlisted): the start-up of a resumed run waits for them."""

REAP_WITHOUT_LISTING = 2.5
"""Poll intervals without a successful listing after which each tick runs the idle stops
and lease renewals from what the pool knows (``_renew_and_reap``: they ran only after a
listing, so a listing outage kept idle machines billing and let busy ones' leases run out)."""

RESUMED_IDLE_HOLD = 30.0
"""Seconds after the recovery during which the jobs it re-queues, until they ask for a
machine, hold the idle stops and the jobs queued behind them (they ask within moments; one
that never does must not)."""

LOSS_LOOKUPS = 3
"""Failed ``GET /servers/{id}`` (5xx, timeout, 429) of a machine a listing left out after
which it is taken for lost as if the lookup had answered 404 (see _confirm_loss): an
outage must not keep a machine unlisted for ever."""
"""Why a launch intent of a run on the embedded simulated cloud is closed as soon as a
later run resumes its log (``MachinePool(fresh_cloud=True)``): nothing it started is left."""


def _followed(state: Any, job_id: str, prompt_id: str) -> bool:
    """Whether the log says job ``job_id`` runs and follows ``prompt_id`` (a job that gave a
    prompt up and then re-attached to it after a restart of its actor): not stopped then."""
    job = state.jobs.get(job_id)
    return job is not None and job.status == RUNNING and job.prompt_id == prompt_id


def _unanswered_words(exc: ClientError | None) -> str:
    """How a ComfyUI's health check failed, in words for a line (never its message: it may
    hold the machine's URL)."""
    if exc is None:
        return "no answer"
    if exc.status is not None:
        return f"HTTP {exc.status}"
    if isinstance(exc, OutcomeUnknownError):
        return "no answer in time"
    if isinstance(exc, TransportError):
        return "no connection"
    return "an answer that is not ComfyUI's"


def _unanswered_on_trio_clock(ctx: Any) -> dict[str, policy.Unanswered]:
    """The versions' series of unanswered machines as the log leaves them
    (``policy.unanswered_from_log``), their times (hold, last stop) moved from the log's
    clock to trio's."""
    found = policy.unanswered_from_log(
        ctx.state, max_launch_attempts=ctx.config.pool.max_launch_attempts
    )
    if not found:
        return {}
    shift = trio.current_time() - ctx.now()
    return {
        version: attrs.evolve(
            series,
            held_at=None if series.held_at is None else series.held_at + shift,
            last_at=None if series.last_at is None else series.last_at + shift,
        )
        for version, series in found.items()
    }


def _minutes(seconds: float) -> str:
    """``seconds`` for a line: "10 min", "45 s"."""
    if seconds >= 90:
        return f"{round(seconds / 60):d} min"
    return f"{max(0, round(seconds)):d} s"


def _passing(exc: ClientError) -> bool:
    """A failure that waiting cures: rate limited, unreachable, or the service's own 5xx."""
    if isinstance(exc, AuthError):
        return False
    if isinstance(exc, (RateLimitedError, TransportError, OutcomeUnknownError)):
        return True
    return exc.status is not None and exc.status >= 500


async def list_servers_patiently(
    rc: Any, patience: float, *, what: str, outage_patience: float | None = None
) -> list[Any]:
    """``GET /servers``, waiting out rate limits and outages for up to ``patience`` seconds
    (the client already retried each call a few times); a wrong token fails at once.
    ``outage_patience``, if given, is shorter for an unreachable or failing service (a rate
    limit says the account is there and busy; an outage says nothing).

    Start-up and recovery cannot go on without this listing: giving up would leave the
    machines a crashed run may have launched billing until their lease runs out."""
    start = trio.current_time()
    delay = 2.0
    while True:
        try:
            return list(await rc.list_servers())
        except ClientError as exc:
            limit = patience
            if outage_patience is not None and not isinstance(exc, RateLimitedError):
                limit = min(patience, outage_patience)
            if not _passing(exc) or trio.current_time() + delay > start + limit:
                raise
            log.warning("%s: listing servers failed (%s); trying again in %g s", what, exc, delay)
        await trio.sleep(delay)
        delay = min(60.0, delay * 2)


POLL_FAILURES_SAID = 4
"""Failed listings in a row before serve says so (fewer are a hiccup the next poll
recovers from: a debug line each); its recovery is said too."""


def _stop_retry_line(server_id: str, exc: ClientError, until: float) -> str:
    """The one line a stop that RunComfy fails to answer says before its retries."""
    left = max(1.0, until - trio.current_time())
    if exc.status is not None:
        what = f"RunComfy answers HTTP {exc.status} to the stop of machine {server_id}"
    else:
        what = f"the stop of machine {server_id} gets no answer from RunComfy"
    return f"{what}; retrying for up to {left:.0f} s: it bills until stopped"


class _FirstAttempt:
    """The ``task_status`` of a machine's socket task: sets ``over`` once its first attempt
    to connect is over (connected or not)."""

    __slots__ = ("over",)

    def __init__(self, over: trio.Event) -> None:
        self.over = over

    def started(self, value: None = None) -> None:
        self.over.set()


def _unknown_listed(u: policy.UnknownServer, now: float) -> ev.MachineUnknownListed:
    """The record of a server the account lists and the log does not know (named, never
    adopted nor stopped: ``policy.unknown_servers``)."""
    return ev.MachineUnknownListed(
        server_id=u.server_id,
        status=u.status,
        server_type=u.server_type,
        service_ready_at=u.service_ready_at,
        estimated_stopping_at=u.estimated_stopping_at,
        cost_micros=u.cost_micros,
        at=now,
    )


def _listed(s: Any) -> policy.Listed:
    """A listing entry as the recovery's policies judge it (no URL)."""
    return policy.Listed(
        server_id=s.server_id,
        status=s.status,
        server_type=s.server_type,
        workflow_version_id=s.workflow_version_id,
        estimated_duration=s.estimated_duration,
        service_ready_at=s.service_ready_at,
        estimated_stopping_at=s.estimated_stopping_at,
    )


def _seen(s: Any) -> Seen:
    return Seen(
        status=s.status,
        ready=s.is_ready,
        service_ready_at=s.service_ready_at,
        estimated_stopping_at=s.estimated_stopping_at,
    )


# ------------------------------------------------------------------------------ messages
# What the actor's children (and start-up) report to it. In-process, never persisted.


@attrs.frozen(eq=False)
class Reconcile:
    """Recovery: list the cloud, adopt or close what the log knows; ``reply`` when done."""

    reply: Reply[None]


@attrs.frozen(eq=False)
class Tick:
    """The poll timer fired."""


@attrs.frozen(eq=False)
class ServerPolled:
    """One ``GET /servers`` ended: its servers, or why it failed (``servers is None``)."""

    servers: list[Any] | None
    error: str = ""
    waiters: tuple[Reply[None], ...] = ()


@attrs.frozen(eq=False)
class Reconciled:
    """The recovery listing ended (``error``: it could not be had)."""

    servers: list[Any] | None
    reply: Reply[None]
    error: BaseException | None = None
    look_only: bool = False  # the log holds nothing to reconcile: listed to name the unknown


@attrs.frozen(eq=False)
class LaunchApproved:
    """The CostActor answered whether a launch for ``job_id`` fits the budget.
    ``incarnation``: of the MachineActor that asked (and counted it in ``_approving``)."""

    job_id: str
    version: str
    approved: bool | None
    prelaunch: bool = False  # a predictive pre-launch, not a launch for unmet demand
    incarnation: int = 0


@attrs.frozen
class LaunchTurn:
    """The account's bucket should have a token for the next approved launch now."""


@attrs.frozen(eq=False)
class LaunchAnswered:
    """``POST /servers`` for intent ``key`` answered (``server``) or failed (``error``)."""

    key: str
    server: Any = None
    error: ClientError | None = None


@attrs.frozen(eq=False)
class StopAnswered:
    """A ``DELETE`` ended: ``found`` (200, at ``stopped_at``, with the server's own Ready
    time from its final record), 404 (``found=False``), or given up (``error``)."""

    server_id: str
    found: bool = False
    stopped_at: float = 0.0
    server_ready_at: float | None = None
    error: str = ""
    still_up: bool = False
    """A 200 whose answer still shows the machine up (not Deleting/Stopping): it did not
    take, so billing did not end at that answer."""


@attrs.frozen(eq=False)
class RenewAnswered:
    """A lease renewal ended: the server's new lease end, or ``None`` (refused, failed);
    ``refused``: the budget refused it (the machine takes no new job, see
    :func:`~conjure_actors.domain.machines_policy.lease_takes_job`)."""

    server_id: str
    until: float | None
    gone: bool = False
    refused: bool = False


@attrs.frozen(eq=False)
class HealthAnswered:
    """A health check ended; ``events``/``scope``: the machine's WebSocket, if it opened."""

    server_id: str
    healthy: bool
    events: Any = None
    scope: trio.CancelScope | None = None
    what: str = ""  # unhealthy: how its last check failed, in words ("HTTP 503")


@attrs.frozen(eq=False)
class OpenEvents:
    """Open the WebSocket of an attached machine (comfyui/dev) in the background."""

    server_id: str


@attrs.frozen(eq=False)
class LateWatchEnded:
    """A watch of a given-up prompt ended: its prompt was stopped when the watch's ``was``
    is set; else its window passed, or its machine went away."""

    prompt_id: str


@attrs.frozen(eq=False)
class LossChecked:
    """The ``GET /servers/{id}`` of a machine a listing left out answered: ``server`` (up or
    going), ``None`` with no ``error`` (404: gone), or ``error`` (not proven either way)."""

    server_id: str
    server: Any = None
    error: str = ""


def attached_name(kind: str, server_id: str) -> str:
    """An attached machine as a user knows it (never its URL)."""
    return "the ComfyUI of --comfyui-url" if kind == "comfyui" else f"the dev machine {server_id}"


@attrs.frozen(eq=False)
class AttachedChecked:
    """The ``/system_stats`` of an attached ComfyUI answered (``answered``) or not."""

    server_id: str
    answered: bool


@attrs.frozen(eq=False)
class ShutdownDeadline:
    """``stop_patience`` has passed since ``StopAllMachines``: answer with what still runs."""


# --------------------------------------------------------------------------------- memory


NO_ORDER = sys.maxsize
"""The submission order of a request whose job the state does not hold (after every job
of its priority that it does)."""


@attrs.define(eq=False)
class _Waiter:
    job_id: str
    workflow_version: str | None
    priority: int
    seq: int  # the request's own number (its arrival): its id in the queue, a last tie-break
    reply: Reply[Lease] | _Admission
    only_server: str | None = None
    deadline: float = math.inf  # trio time; a queued job's (QueueJob), else none
    order: int = NO_ORDER  # its job's submission order (``Job.order``)


class _Admission:
    """The answer slot of a job queued without an actor (``QueueJob``): the grant or the
    refusal goes to the pool's ``on_granted`` / ``on_refused``, which start the job's actor
    (issue 16: a queued job holds this, a ``_Waiter`` and its heap entries, not a task)."""

    __slots__ = ("done", "job_id", "pool")

    def __init__(self, pool: MachinePool, job_id: str) -> None:
        self.pool = pool
        self.job_id = job_id
        self.done = False

    def set(self, lease: Lease) -> bool:
        if self.done:
            return False
        self.done = True
        self.pool.granted(self.job_id, lease)
        return True

    def fail(self, error: LeaseFailedError) -> bool:
        if self.done:
            return False
        self.done = True
        self.pool.refused(self.job_id, error)
        return True


def _serving_key(w: _Waiter) -> tuple[int, int, int]:
    """Serving order: the job's place in the queue (``state.queue_key``: higher priority
    first, then submission order, the order ``queue_position`` counts), then arrival."""
    return (-w.priority, w.order, w.seq)


def _queue_place(job: Any, priority: int) -> tuple[int, int]:
    """(priority, submission order) of a lease request of ``job``: its job's place in the
    queue (``state.queue_key``), or after its priority's jobs when the state has no such job
    (``priority``: the request's)."""
    if job is None:
        return priority, NO_ORDER
    neg_priority, order = queue_key(job)
    return -neg_priority, order


class _WaitQueue:
    """The waiting lease requests, so that serving one costs O(log n), not a scan of all.

    Requests any machine may serve sit in a heap in serving order (an entry whose request
    was removed is dropped when it reaches the top); requests bound to one machine (a
    recovery) are few and kept apart. Counts by workflow version answer "is there work for
    this machine?" without a scan.
    """

    def __init__(self) -> None:
        self.unbound: dict[int, _Waiter] = {}
        self.bound: dict[int, _Waiter] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._versions: Counter[str | None] = Counter()
        self._by_job: dict[str, list[_Waiter]] = {}

    def __len__(self) -> int:
        return len(self.unbound) + len(self.bound)

    def __iter__(self) -> Iterator[_Waiter]:
        """Every request, in arrival order (a copy: the caller may remove as it goes)."""
        return iter(sorted([*self.unbound.values(), *self.bound.values()], key=lambda w: w.seq))

    def append(self, w: _Waiter) -> None:
        if w.only_server is None:
            self.unbound[w.seq] = w
            heapq.heappush(self._heap, _serving_key(w))
        else:
            self.bound[w.seq] = w
        self._versions[w.workflow_version] += 1
        self._by_job.setdefault(w.job_id, []).append(w)

    def remove(self, w: _Waiter) -> None:
        if (self.unbound if w.only_server is None else self.bound).pop(w.seq, None) is not None:
            self._versions[w.workflow_version] -= 1
            same_job = self._by_job[w.job_id]
            same_job.remove(w)
            if not same_job:
                del self._by_job[w.job_id]

    def get(self, seq: int) -> _Waiter | None:
        """The request queued as ``seq``, if it still waits."""
        return self.unbound.get(seq) or self.bound.get(seq)

    def of_job(self, job_id: str) -> list[_Waiter]:
        """The requests of one job (a copy)."""
        return list(self._by_job.get(job_id, ()))

    def clear(self) -> None:
        self.unbound.clear()
        self.bound.clear()
        self._heap.clear()
        self._versions.clear()
        self._by_job.clear()

    def wants(self, workflow_version: str | None) -> bool:
        """True when a request a machine running ``workflow_version`` could serve waits."""
        versions = self._versions
        return versions[None] > 0 or versions[workflow_version] > 0

    def peek(self) -> _Waiter | None:
        """The next unbound request in serving order (left queued)."""
        heap = self._heap
        while heap:
            w = self.unbound.get(heap[0][2])
            if w is not None:
                return w
            heapq.heappop(heap)
        return None

    def pop(self) -> _Waiter | None:
        """Take the next unbound request in serving order out of the heap (it stays
        queued: :meth:`push_back` it, or :meth:`remove` it once served)."""
        w = self.peek()
        if w is not None:
            heapq.heappop(self._heap)
        return w

    def push_back(self, w: _Waiter) -> None:
        heapq.heappush(self._heap, _serving_key(w))


@attrs.define(eq=False)
class _Live:
    """Live (not logged) facts about one machine: its client, its lost signal."""

    client: Any = None
    lost: LostSignal = attrs.Factory(LostSignal)
    launched_at: float = 0.0  # trio time of the launch (ready deadline)
    # ``launched_at`` is the launch itself (this actor sent it), not when this actor first
    # saw the machine (a restart): trio's clock then measures its grace, not the wall's.
    launch_seen: bool = False
    seen: bool = False  # listed at least once: a 404 from now on means it is gone
    events: Any = None  # ComfyUIEvents: one WebSocket per machine, shared by its jobs
    events_scope: trio.CancelScope | None = None
    # The machine's WebSocket is opening (an attached machine's first one, or any live
    # machine's again after a restart of this actor): no lease until that attempt is over
    # (a prompt posted with no socket to name would be followed by polling alone).
    opening: bool = False
    # Jobs that still hold a lease on it, asking for it again (their actor restarted) while
    # its socket opens: answered with the socket once that attempt is over.
    returns: list[tuple[str, Reply[Lease] | _Admission]] = attrs.Factory(list)


@attrs.define(eq=False)
class _LateWatch:
    """A prompt its job gave up on, watched on its machine until ``until`` (trio time)."""

    server_id: str
    job_id: str
    until: float
    # What the prompt was when the watch first stopped it ("pending": deleted, "running":
    # interrupted), and whether a later lookup found it gone; kept here, not in the child,
    # so a restart of the actor between the stop and its confirmation still logs
    # ``LatePromptStopped``.
    was: str | None = None
    confirmed: bool = False


@attrs.define(eq=False)
class _Shutdown:
    """``StopAllMachines`` received: why, and who waits for the last machine to stop."""

    reason: str
    replies: list[Reply[list[str]]] = attrs.Factory(list)


ApproveLaunchFn = Callable[[str, str], Awaitable[bool]]
ApproveRenewalFn = Callable[[str, float], Awaitable[float | None]]
"""The budget's answer to a lease renewal to run so many seconds from now: the seconds
granted (all, or fewer: what it still covers), ``None`` if refused."""
ApprovalUnusedFn = Callable[[str], Awaitable[None]]


class MachinePool:
    """What the MachineActor keeps across its restarts (see the module docstring). Only the
    actor changes it; others may read :meth:`still_running`."""

    def __init__(
        self,
        ctx: Context,
        *,
        approve_launch: ApproveLaunchFn,
        approve_renewal: ApproveRenewalFn,
        make_client: Callable[[str, Any], Any],
        approval_unused: ApprovalUnusedFn | None = None,
        on_granted: Callable[[str, Lease], None] | None = None,
        on_refused: Callable[[str, LeaseFailedError], None] | None = None,
        on_launching: Callable[[str | None], None] | None = None,
        fresh_cloud: bool = False,
    ) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.pool
        self.server_type = ctx.config.runcomfy.server_type
        self.default_version = ctx.config.runcomfy.workflow_version or None
        self.approve_launch = approve_launch  # asks the CostActor (from a child task)
        self.approve_renewal = approve_renewal
        self.approval_unused = approval_unused  # tells the CostActor (from a child task)
        self.make_client = make_client  # (server_id, SecretURL|str) -> ComfyUIClient
        self.waiting = _WaitQueue()
        self.on_granted = on_granted  # a queued job got its machine: start its actor
        self.on_refused = on_refused  # a queued job cannot be served, or timed out
        # Launching stopped on launch failures (the reason), or going again (None): for
        # serve's health probe (a service that refuses jobs must say so).
        self.on_launching = on_launching
        self.deadlines: list[tuple[float, int]] = []  # (deadline, seq) of queued jobs, a heap
        self.seq = itertools.count()
        self.live: dict[str, _Live] = {}
        self.launching_allowed = True
        self.refuse_reason = ""
        self.failed_in_a_row = 0  # launches that ended without a Ready machine
        self.failed_at: float | None = None  # trio time of the last of them (a series ends)
        # Workflow version -> its machines in a row that were Ready (billed) but stopped as
        # unhealthy before serving a job: their ComfyUI never answered (a custom node that
        # breaks its start, a proxy's 502). Each is a failed launch of that version; at
        # ``max_launch_attempts`` its waiting jobs fail and it is held (policy.version_held),
        # other versions launching on. A machine of it that answers ends its series.
        # Rebuilt from the log at a restart (a version held stays held), on trio's clock.
        self.unanswered: dict[str, policy.Unanswered] = _unanswered_on_trio_clock(ctx)
        self.reaped_at = float("-inf")  # trio time of the last idle/renewal pass
        self.last_boot_failure = ""  # how the last of them ended (its words)
        # Launching stopped on launch failures (not the budget, not the stop): the next
        # job queued launches again (a service lives on past a cloud's bad hour).
        self.relaunch = False
        self.launch_errors = 0  # launch calls failed in a row (the backoff's exponent)
        self.failing_since: float | None = None  # first launch of a rate limit or outage
        self.next_launch_at = float("-inf")
        self.polls = 0
        self.ref: ActorRef | None = None
        self.shutdown: _Shutdown | None = None  # StopAllMachines received
        self.arrivals: list[float] = []  # trio times of lease requests (pre-launch's rate)
        self.prelaunch_keys: set[str] = set()  # pre-launch intents not answered yet
        # Open launch intents -> when (trio time) a listing without their server may close
        # them: policy.landing_grace after this process's POST ended in an unknown outcome
        # (``unknown``: LAUNCH_LAND_GRACE without an answer, NOT_VISIBLE_GRACE after a
        # 5xx in hand: such a launch may have started a machine), NOT_VISIBLE_GRACE
        # after this process first looked at one left by a crashed run (its POSTs ended
        # with it, so what they started is listed within that grace).
        self.landing: dict[str, float] = {}
        # ``fresh_cloud``: the cloud began with this process (the embedded simulated one),
        # so the launch intents the log holds already went to a cloud that ended with the
        # run that logged them: no listing can show what they started. They are closed at
        # the first listing (the reconcile), not after NOT_VISIBLE_GRACE. Never RunComfy's.
        self.orphaned: set[str] = set(ctx.state.launch_requests) if fresh_cloud else set()
        self.unknown: set[str] = set()
        self.foreign: set[str] = set()  # unknown servers no intent matched (logged once)
        # What the recovery's listing showed up on the account that the log does not know
        # (policy.unknown_servers): run and serve name each once start-up is done.
        self.unknown_listed: list[policy.UnknownServer] = []
        # Machines whose DELETE answered 200 -> until when (trio time) listings are checked
        # for them: one still listed up (not Deleting/Stopping) is sent a DELETE again.
        self.recheck: dict[str, float] = {}
        # Of those, the ones no listing has shown gone (absent, Deleting, Stopping) since:
        # the stop of every machine is not answered while one is left (nor the run ended).
        self.unconfirmed: set[str] = set()
        # Of those, the ones whose last DELETE answered 200 still up (it did not take) and
        # that no listing has shown going since: a listing that leaves one out may have
        # missed it (it bills on), so its recheck does not run out while it is left out.
        self.not_taken: set[str] = set()
        # Launch intents closed because no listing showed their server within the landing
        # grace -> (the intent, until when (trio time) its server may still land: the ready
        # timeout and a lease). A server that lands later echoing one's marker is adopted.
        self.given_up: dict[str, tuple[Any, float]] = {}
        # Servers the log does not know, listed now -> when (the log's clock) a listing
        # first showed them: one listed before a launch intent was logged is not its server.
        self.first_listed: dict[str, float] = {}
        # Their markers (estimated_duration): a new launch asks for none of them.
        self.foreign_markers: set[int] = set()
        # Open launch intents whose marker several listed servers echo -> those servers
        # (policy.launch_candidates): none adopted; said once, named when the intent closes.
        self.ambiguous: dict[str, tuple[str, ...]] = {}
        self.prelaunched: set[str] = set()  # pre-launched machines (never a hedge's surplus)
        # Machines this process launched for waiting jobs with ``launch_hedge`` > 1 that have
        # served no job yet: once Ready with no job waiting for them (another machine took
        # it), they are a hedge's spares, stopped at once (_stop_hedge_spares).
        self.hedged: set[str] = set()
        self.late: dict[str, _LateWatch] = {}  # prompt id -> its watch (WatchLatePrompt)
        # Machines taken for lost because no listing showed them (not visible past
        # NOT_VISIBLE_GRACE after their launch, or vanished) -> until when (trio time:
        # their lease's end, or for one never seen Ready, ready_timeout + lease_seconds)
        # listings go on for them even with nothing else to watch: one listed up after all
        # bills until its lease ends, so it is stopped (see _stop_found_after_loss).
        self.lost_watch: dict[str, float] = {}
        # Lost machines a listing showed up after all, until their DELETE answers (or a
        # listing shows them gone) -> that listing's Ready time and lease end: a 404 is
        # billed from the one, to the DELETE's answer at the latest, the other at most.
        # They bill meanwhile: :meth:`still_running` counts them.
        self.found_up: dict[str, tuple[float | None, float | None]] = {}
        # Rechecked machines a listing showed Ready -> that listing's Ready time: a DELETE
        # sent again that answers 404 is billed from it (the log may have none).
        self.recheck_ready: dict[str, float] = {}
        # Machines a listing left out whose lookup (GET /servers/{id}) failed -> failed
        # lookups so far: not proven lost; the next listing decides (_confirm_loss).
        self.unproven: dict[str, int] = {}
        # Machines the replayed log shows with a job's submitted prompt on them -> those
        # jobs (policy.reserved_slots): a restart's adoption drops their leases, yet each
        # prompt still fills a slot and its job re-attaches to it (a LeaseMachine bound to
        # the machine). Such a slot is that job's: no other job is granted it. An entry goes
        # once its job leased the machine again, or moved on (requeued, ended), or the
        # machine went (see MachineActor._reserved).
        self.reserved: dict[str, set[str]] = policy.reserved_slots(ctx.state)
        # Machines a listing left out -> when (the log's clock) the first listing since one
        # last showed them did: a loss confirmed later (a lookup's 404 comes after the
        # client's own 404 retries) is billed to that listing, not to the confirmation;
        # so is a stop whose DELETE answers 404 (kept while the stop is on its way).
        self.missing_since: dict[str, float] = {}
        # Machines the log never saw Ready -> when (the log's clock) the last listing or
        # lookup showed them Starting: RunComfy bills nothing before Ready, so one lost
        # before a look saw it Ready is billed from that look (policy.lost_bill), not from
        # its launch (a 3-minute boot, then gone, is not billed 3 minutes). Memory only: a
        # restart bills one gone while it was down from its launch.
        self.seen_starting: dict[str, float] = {}
        # Jobs the replayed log says will ask for a new machine (policy.awaits_machine)
        # that have not asked yet: the recovery (Reconcile) adopts the machines still
        # Starting before those jobs are queued again, and a machine judged surplus then
        # was stopped for want of the very jobs it was launched for (a whole boot lost per
        # restart). They count as waiting (_stop_surplus) until they ask, or end.
        self.resumed: set[str] = set()
        # The jobs the restart re-queues that ask at once (all but one in its retry's
        # backoff), as the recovery's listing left them (a job whose machine it found gone
        # is one), until they ask; and their places in the queue (state.queue_key, job id),
        # a heap: until the first of them asks, no job queued behind it is served
        # (``_first_unasked``), so a restart serves its jobs in their order, not in the
        # order their actors reach the pool (a job that was running requeues itself, last).
        # Until ``unasked_until`` (trio time) at most: one that never asks must not hold
        # the queue.
        self.unasked: set[str] = set()
        self.unasked_heap: list[tuple[tuple[int, int], str]] = []
        self.unasked_until = float("-inf")
        # The log's machines still Starting when this process began, until the recovery's
        # listing (Reconcile) has shown what they are now: the log's "Starting" is stale (one
        # may be Ready, billing, for the jobs the log re-queues), so none is judged surplus
        # before (the poll timer ticks while the start-up's or the recovery's listing is
        # retried through a rate limit or an outage).
        self.unreconciled: set[str] = {
            m.server_id for m in policy.paid_machines(ctx.state) if m.status == M_STARTING
        }
        # The log has paid machines the recovery's listing has not shown yet: the ticks'
        # idle stops and renewals (REAP_WITHOUT_LISTING) wait for it (the log's state is
        # stale: an idle machine there is the one a re-queued job is about to take).
        self.recovering = bool(policy.paid_machines(ctx.state))
        self.reconciled_at = float("-inf")  # trio time the recovery's listing was applied

    def attach(self, server_id: str, client: ComfyUIClient) -> None:
        """Register the live client of a machine we do not launch (comfyui/dev), before
        its ``MachineAttached`` is logged."""
        self.live[server_id] = _Live(client=client)

    def attach_events_later(self, server_id: str) -> None:
        """For attached machines: have the actor open their WebSocket in the background;
        the machine takes no lease until that first attempt is over (connected or not)."""
        live = self.live.get(server_id)
        if self.ref is not None and live is not None:
            live.opening = True
            self.ref.tell_nowait(OpenEvents(server_id))

    def granted(self, job_id: str, lease: Lease) -> None:
        if self.on_granted is None:
            raise RuntimeError("QueueJob needs MachinePool(on_granted=...)")
        self.on_granted(job_id, lease)

    def refused(self, job_id: str, error: LeaseFailedError) -> None:
        if self.on_refused is None:
            raise RuntimeError("QueueJob needs MachinePool(on_refused=...)")
        self.on_refused(job_id, error)

    def client_of(self, server_id: str) -> ComfyUIClient | None:
        live = self.live.get(server_id)
        return live.client if live is not None else None

    def still_running(self) -> list[str]:
        """The RunComfy machines we pay for that are not stopped or lost, then the ones
        taken for lost that a listing showed up, whose stop has not answered yet."""
        return [m.server_id for m in policy.paid_machines(self.ctx.state)] + sorted(self.found_up)

    def launches_unanswered(self) -> list[str]:
        """Launch intents without an outcome in the log (a POST still waiting for its
        answer, or whose answer was lost): each may have started a machine that bills."""
        if self.ctx.runcomfy is None:
            return []
        return [
            f"a launch without answer ({k[:8]})" for k in sorted(self.ctx.state.launch_requests)
        ]


def _unknown_launch_line(key: str, status: int | None, grace: float) -> str:
    """The user's line for a launch of unknown outcome: what RunComfy answered, what it
    means for the queued jobs, and how long they wait (``grace``, policy.landing_grace)."""
    if status is not None and status >= 500 and status != policy.GATEWAY_TIMEOUT:
        what = f"RunComfy answered HTTP {status} to launch {key[:8]}"
    elif status is not None and status < 300:
        what = f"RunComfy's answer to launch {key[:8]} (HTTP {status}) could not be read"
    else:
        what = f"RunComfy did not answer launch {key[:8]} (timeout or connection lost)"
    return (
        f"{what}: it may have started a machine; the jobs waiting for it wait up to"
        f" {grace:g} s for a listing to show one (used if it does) before a machine is"
        " launched again"
    )


def _may_be_landing(m: Any, now: float) -> bool:
    """A machine still Starting in the log, never listed (no status observed), launched
    less than NOT_VISIBLE_GRACE ago by the log's clock: a listing without it proves
    nothing yet."""
    return (
        m.status == M_STARTING
        and m.observed_status is None
        and m.launched_at is not None
        and now - m.launched_at < policy.NOT_VISIBLE_GRACE
    )


def _still_up(event: Any, msg: StopAnswered) -> Any:
    """``event`` (a stop's bill) marked with whether the answer showed the machine still up."""
    return msgspec.structs.replace(event, still_up=msg.found and msg.still_up)


def _found_gone_at(m: Any, seen: float, listed_end: float | None) -> float:
    """When a lost machine found up went, seen gone at ``seen``: as any machine found gone
    (:func:`~conjure_actors.domain.machines_policy.gone_at`), and at the latest the lease
    end of the listing that showed it up."""
    gone = policy.gone_at(m, seen)
    return gone if listed_end is None else min(gone, listed_end)


class MachineActor(Actor):
    """The pool as an actor (see the module docstring)."""

    def __init__(self, pool: MachinePool) -> None:
        self.pool = pool
        self.ctx = pool.ctx
        self.cfg = pool.cfg
        # In flight in this incarnation (children's calls). The mailbox outlives a crash:
        # a report queued before it reaches the next incarnation ahead of anything that one
        # starts, so clearing a flag or discarding from a set is a no-op there and the fact
        # reported (a listing, a launch's or a stop's answer) still holds. Only a count
        # would go wrong: LaunchApproved carries its incarnation (_approving).
        self._launching: set[str] = set()  # intent keys with a POST in flight
        self._approving = 0  # launches waiting for the CostActor's answer
        # Approved launches for demand waiting for their turn on the wire (_on_approved):
        # still counted in _approving until their turn decides whether they are sent.
        self._deferred: list[LaunchApproved] = []
        self._turn_at: float | None = None  # a child waits for the bucket's next token
        self._stopping: set[str] = set()  # DELETEs in flight
        self._renewing: set[str] = set()
        # Machines whose renewal the budget refused -> the lease end it was for: no new
        # job while that is still their lease's end (forgotten by a restart: the next
        # renewal, asked at the next poll, is refused again).
        self._renewal_refused: dict[str, float] = {}
        self._health: set[str] = set()
        self._attached_checks: set[str] = set()  # /system_stats of attached ComfyUIs in flight
        self._attached_misses: Counter[str] = Counter()  # ... failed in a row
        # The replies of jobs whose request to an attached ComfyUI failed (PollNow with its
        # server id), answered once the check that follows has been judged.
        self._attached_word: dict[str, list[Reply[None]]] = {}
        # Attached ComfyUIs back from down: the checks still to answer in a row before a
        # job's failed request counts again (see _on_attached_checked: no flapping).
        self._attached_shaky: Counter[str] = Counter()
        self._looking_up: set[str] = set()  # GET /servers/{id} of a machine left out
        # Of those, stopped machines whose DELETE did not take (recheck) -> failed lookups.
        self._recheck_lookups: dict[str, int] = {}
        self._polling = False
        self._poll_queued = False
        # Listings failed in a row (a hiccup of RunComfy is said once it lasts).
        self._poll_failures = 0
        self._poll_waiters: list[Reply[None]] = []
        self._reconciling = False
        self._timer_at = math.inf  # when the queue timer (one child) wakes next
        self._timer_scope: trio.CancelScope | None = None
        self._sockets: set[trio.CancelScope] = set()  # sockets opened by this incarnation

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        self.pool.ref = self.ref
        for server_id, live in self.pool.live.items():  # their tasks ended with the last one
            had = live.events is not None
            live.events, live.events_scope = None, None
            m = self.ctx.state.machines.get(server_id)
            alive = m is not None and m.status not in MACHINE_GONE
            if (live.opening or (had and alive)) and live.client is not None:
                # Its answer will not come, or its socket's task ended with the last
                # incarnation: open it again, and lease nothing on it until then.
                live.opening = True
                self.start_soon(self._open_events_child, server_id, live.client)
        self.start_soon(self._ticker, name="machine-poll-timer")
        self._arm_queue_timer()  # the queue outlives an incarnation; its timer does not
        for prompt_id in list(self.pool.late):  # so do the watches of given-up prompts
            self._start_late_watch(prompt_id)
        if self.pool.shutdown is not None and self.pool.shutdown.replies:
            # Restarted while stopping every machine: the next listing stops what still
            # runs, and the stop's reply still gets its answer in time.
            self.start_soon(self._deadline_child, name="machine-stop-deadline")
            self._poll()

    async def _ticker(self) -> None:
        """Child: tell the actor to poll every ``poll_interval``."""
        while True:
            await trio.sleep(self.cfg.poll_interval)
            await self.ref.tell(Tick())

    async def _tell(self, msg: Any) -> None:
        await self.ref.tell(msg)

    # ------------------------------------------------------------------ messages

    async def receive(self, msg: Any) -> Any:
        match msg:
            case LeaseMachine():
                await self._lease(
                    msg.job_id, msg.workflow_version, msg.priority, msg.reply, msg.only_server
                )
            case QueueJob():
                await self._lease(
                    msg.job_id,
                    msg.workflow_version,
                    msg.priority,
                    _Admission(self.pool, msg.job_id),
                    deadline=msg.deadline,
                )
            case QueueDeadline():
                self._expire_queued()
            case ReleaseMachine():
                await self._release(
                    msg.server_id, msg.job_id, broken=msg.broken, decided=msg.decided
                )
            case CancelLease():
                self._cancel_lease(msg.job_id)
                await self._stop_surplus()  # a machine starting for it may be needed no more
            case StopMachine():
                await self._stop(msg.server_id, msg.reason)
            case StopLaunching():
                self._stop_launching(msg.reason)
            case ResumeLaunching():
                self._resume_launching(msg.reason)
            case StopAllMachines():
                await self._stop_all(msg.reason, msg.reply)
            case PollNow(reply=Reply() as reply, server_id=str() as sid) if self._attached_up(sid):
                # A job's request to an attached ComfyUI failed: it is checked now, and the
                # job answered once that check is judged (see _on_attached_checked).
                self._attached_word.setdefault(sid, []).append(reply)
                self._check_attached(only=sid)
                self._poll()
            case PollNow(reply=reply):
                if reply is not None:
                    self._poll_waiters.append(reply)
                self._poll()
            case Tick():
                self._poll()
                self._check_attached()
                await self._assign()  # a launch backing off after a failure comes back here
                if not self.pool.recovering and (
                    trio.current_time() - self.pool.reaped_at
                    > REAP_WITHOUT_LISTING * self.cfg.poll_interval
                ):
                    # The listings fail (429s, 5xx): idle stops and lease renewals go on from
                    # what is known (an idle machine billed on past its timeout; a busy one's
                    # lease ran out mid-prompt, its job re-run on a new paid machine).
                    await self._renew_and_reap(self.ctx.now())
            case ServerPolled():
                await self._on_polled(msg)
            case Reconcile():
                self._reconcile(msg.reply)
            case Reconciled():
                await self._on_reconciled(msg)
            case LaunchApproved():
                await self._on_approved(msg)
            case LaunchAnswered():
                await self._on_launch_answered(msg)
                await self._send_deferred()
            case LaunchTurn():
                await self._send_deferred(turn=True)
            case StopAnswered():
                await self._on_stop_answered(msg)
            case RenewAnswered():
                await self._on_renewed(msg)
            case HealthAnswered():
                await self._on_health(msg)
            case OpenEvents():
                live = self.pool.live.get(msg.server_id)
                if live is not None and live.events is None and live.client is not None:
                    self.start_soon(self._open_events_child, msg.server_id, live.client)
                elif live is not None and live.opening:
                    self._opened(msg.server_id, live)
                    await self._assign()
            case LossChecked():
                await self._on_loss_checked(msg)
            case AttachedChecked():
                await self._on_attached_checked(msg)
            case ShutdownDeadline():
                self._on_shutdown_deadline()
            case WatchLatePrompt():
                self._watch_late_prompt(msg)
            case LateWatchEnded():
                await self._on_late_watch_ended(msg)
            case _:
                log.warning("MachineActor: unknown message %s", type(msg).__name__)

    # ------------------------------------------------------------------ leases

    async def _lease(
        self,
        job_id: str,
        workflow_version: str | None,
        priority: int,
        reply: Reply[Lease] | _Admission,
        only_server: str | None = None,
        *,
        deadline: float = math.inf,
    ) -> None:
        if self.pool.resumed:
            self.pool.resumed.discard(job_id)  # it asks now: counted in the queue
        if self.pool.unasked:
            self.pool.unasked.discard(job_id)
        if self.pool.shutdown is not None:
            reason = self.pool.shutdown.reason
            reply.fail(LeaseFailedError(f"no machine: {reason}", retryable=False, reason=reason))
            return
        # A job that still holds a lease (its actor restarted) gets it back as it is.
        for m in self.ctx.state.machines.values():
            if (
                job_id in m.leases
                and m.status not in MACHINE_GONE
                and (only_server in (None, m.server_id))
            ):
                live = self.pool.live.setdefault(m.server_id, _Live())
                if live.opening and not live.lost.is_set():
                    live.returns.append((job_id, reply))  # answered with its socket (_opened)
                else:
                    reply.set(Lease(m.server_id, live.client, live.lost, live.events))
                return
        if not self.pool.launching_allowed and self.pool.relaunch:
            self._relaunch(job_id)
        # Its place in the queue is its job's (state.queue_key), whatever brought it here:
        # a job queued again (its machine lost, a retry, a restart's resume, its attached
        # ComfyUI down) waits in its place, as queue_position says, not behind later jobs.
        seq = next(self.pool.seq)
        priority, order = _queue_place(self.ctx.state.jobs.get(job_id), priority)
        self.pool.waiting.append(
            _Waiter(job_id, workflow_version, priority, seq, reply, only_server, deadline, order)
        )
        if deadline != math.inf:
            heapq.heappush(self.pool.deadlines, (deadline, seq))
            if deadline < self._timer_at:
                self._arm_queue_timer()
        self._arrived()
        await self._assign()
        self._prelaunch(job_id, workflow_version)

    # One timer for the whole queue (issue 16): the deadlines of the queued jobs sit in one
    # heap; one child sleeps until the earliest and tells QueueDeadline, and is replaced
    # only when an earlier deadline arrives (in the usual FIFO-ish order, never). An entry
    # whose job was served or withdrawn is dropped when it reaches the top; the heap is
    # compacted when such entries outnumber the waiting ones.

    def _next_deadline(self) -> float:
        heap, waiting = self.pool.deadlines, self.pool.waiting
        if len(heap) > 64 and len(heap) > 2 * len(waiting):
            heap[:] = [d for d in heap if waiting.get(d[1]) is not None]
            heapq.heapify(heap)
        while heap and waiting.get(heap[0][1]) is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def _arm_queue_timer(self) -> None:
        at = self._next_deadline()
        if at == self._timer_at and self._timer_scope is not None:
            return
        if self._timer_scope is not None:
            self._timer_scope.cancel()
            self._timer_scope = None
        self._timer_at = at
        if at != math.inf:
            self._timer_scope = trio.CancelScope(deadline=math.inf)
            self.start_soon(self._queue_timer, self._timer_scope, at, name="machine-queue-timer")

    async def _queue_timer(self, scope: trio.CancelScope, at: float) -> None:
        with scope:
            await trio.sleep_until(at)
            await self.ref.tell(QueueDeadline())

    def _expire_queued(self) -> None:
        """Refuse (``reason="timeout"``) every queued job whose deadline has come."""
        now = trio.current_time()
        heap, waiting = self.pool.deadlines, self.pool.waiting
        while heap and heap[0][0] <= now:
            _, seq = heapq.heappop(heap)
            w = waiting.get(seq)
            if w is None:
                continue
            waiting.remove(w)
            w.reply.fail(
                LeaseFailedError(
                    f"job {w.job_id} waited for a machine past its deadline",
                    retryable=True,
                    reason="timeout",
                )
            )
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        self._timer_scope = None
        self._timer_at = math.inf
        self._arm_queue_timer()

    async def _release(
        self,
        server_id: str,
        job_id: str,
        *,
        broken: bool,
        decided: Reply[None] | None = None,
    ) -> None:
        """``broken``: the job gave up a re-attach there before any lookup answered (its
        prompt may still run there, unfollowed): the machine drains (``MachineDraining``,
        logged with the release: the log, not this memory, says so, for a resumed run
        too): it takes no new job and is stopped (``REATTACH_GIVEN_UP``) once no other job
        holds it. ``decided`` is answered once that is durable (the job's retry follows)."""
        try:
            state = self.ctx.state
            machine = state.machines.get(server_id)
            now = self.ctx.now()
            events: list[Any] = []
            if machine is not None and job_id in machine.leases:
                events.append(decide.release_machine(state, server_id, job_id, at=now))
            if broken:
                drain = policy.drain_machine(state, server_id, reason=REATTACH_GIVEN_UP, at=now)
                if drain is not None:
                    events.append(drain)
            if events:
                await self.ctx.emit(*events)  # one append: the release and its decision
            held = await self._stop_if_drained(server_id)
            if broken and held:
                log.info(
                    "machine %s: stopped once its %d other job(s) end (%s)",
                    server_id,
                    held,
                    REATTACH_GIVEN_UP,
                )
        finally:
            if decided is not None:
                decided.set(None)
        await self._assign()

    async def _stop_if_drained(self, server_id: str) -> int:
        """Stop a draining machine (``Machine.draining``) that no job holds any more; a slot
        kept for a job that re-attaches counts as held (its prompt is there). How many jobs
        still hold it (0: stopped now, or not draining)."""
        m = self.ctx.state.machines.get(server_id)
        if m is None or m.draining is None or m.status in MACHINE_GONE or m.status == "stopping":
            return 0
        held = len(m.leases) + len(self._reserved(server_id))
        if not held:
            await self._stop(server_id, m.draining)
        return held

    def _cancel_lease(self, job_id: str) -> None:
        self.pool.resumed.discard(job_id)
        self.pool.unasked.discard(job_id)
        for live in self.pool.live.values():
            if not live.returns:  # the usual case (once per job's end: issue 16)
                continue
            parked = [r for j, r in live.returns if j == job_id]
            if parked:
                live.returns = [(j, r) for j, r in live.returns if j != job_id]
                for reply in parked:
                    reply.fail(
                        LeaseFailedError(
                            f"job {job_id} cancelled", retryable=False, reason="cancelled"
                        )
                    )
        for w in self.pool.waiting.of_job(job_id):
            self.pool.waiting.remove(w)
            w.reply.fail(
                LeaseFailedError(f"job {job_id} cancelled", retryable=False, reason="cancelled")
            )

    def _stop_launching(self, reason: str, *, relaunch: bool = False) -> None:
        """No more launches; the jobs waiting for one fail with ``reason``. ``relaunch``:
        launches failed (``max_launch_attempts`` boots, ``cloud_patience``, a refusal): a
        job queued later starts a new series (:meth:`_relaunch`); not for the budget, the
        run's stop or a server type the price table cannot bill, which stay stopped."""
        pool = self.pool
        if relaunch and (pool.launching_allowed or not pool.relaunch):
            log.warning(
                "launching stopped: %s; the jobs waiting for a machine fail"
                " (a job queued later launches again)",
                reason,
            )
        pool.launching_allowed = False
        pool.refuse_reason = reason
        pool.relaunch = relaunch
        if pool.on_launching is not None:  # the launch failures' problem, or none (another
            pool.on_launching(reason if relaunch else None)  # stop, said its own way)

    def _unknown_launch_closed(self, now: float) -> None:
        """A launch of this run whose answer proved nothing (a 5xx, a timeout) started no
        machine the listings show: a failure that waiting cures, like a 5xx on any other
        call, waited out for ``cloud_patience`` from the first of them; then launching stops
        and the waiting jobs fail saying so (a lasting outage relaunched every minute, for
        ever, without a word)."""
        pool = self.pool
        since = pool.failing_since if pool.failing_since is not None else now
        pool.failing_since = since
        if pool.launching_allowed and now - since >= self.cfg.cloud_patience:
            self._stop_launching(
                f"launches keep failing: RunComfy answered none of them for {now - since:.0f} s"
                " with a machine (errors, or no answer, and no machine listed)",
                relaunch=True,
            )
            self._fail_unservable(pool.refuse_reason)

    def _relaunch(self, job_id: str) -> None:
        """A job queued after launching stopped on launch failures: launch again, a new
        series of ``max_launch_attempts`` (the back-off after the last failed call still
        holds; a boot that ends in Error, or is stopped while Starting, is not billed)."""
        pool = self.pool
        log.info("job %s: launching again (launches had stopped: %s)", job_id, pool.refuse_reason)
        pool.launching_allowed, pool.refuse_reason, pool.relaunch = True, "", False
        pool.failed_in_a_row, pool.failing_since = 0, None
        if pool.on_launching is not None:
            pool.on_launching(None)

    def _resume_launching(self, reason: str) -> None:
        """See :class:`ResumeLaunching`: the machines being stopped go on stopping; new
        jobs get machines again."""
        pool = self.pool
        stop = pool.shutdown
        if pool.launching_allowed or pool.refuse_reason != reason:
            return
        if stop is not None and (stop.reason != reason or stop.replies):
            return
        pool.shutdown = None
        pool.launching_allowed = True
        pool.refuse_reason = ""
        # A new series of launches, as after launch failures (_relaunch): failures counted
        # before the budget's stop would stop it again at once, with their old reason.
        pool.failed_in_a_row, pool.failing_since = 0, None

    def _free_views(self) -> list[MachineView]:
        """A view of each machine that can take a lease now: Ready, healthy, not stopping,
        not opening its events, not suspected lost (its lookup in flight), with a free
        slot. Only those are built (what :meth:`_serve_waiters` reads): the others are
        skipped before a record is made, on each of the ~2 calls per lease (issue 16)."""
        out = []
        stopping = self._stopping
        lives = self.pool.live
        reserved = self.pool.reserved
        for m in self.ctx.state.machines.values():
            # A machine whose slots its leases fill (most of them while jobs run) is out
            # whatever else holds: tested first, with no more than its lease count (issue 16).
            if len(m.leases) >= m.max_jobs or m.status != M_READY or not m.healthy:
                continue
            sid = m.server_id
            taken = len(m.leases) + (len(self._reserved(sid)) if reserved else 0)
            if sid in stopping or taken >= m.max_jobs or m.draining is not None:
                continue
            if sid in self._looking_up:
                continue  # a listing left it out: no new job until its lookup answers
            live = lives.get(sid)
            if live is not None and live.opening:
                continue
            if not self._lease_takes_job(m):
                continue  # its lease may run out under the job (the budget)
            out.append(
                MachineView(
                    server_id=sid,
                    ready=True,
                    healthy=True,
                    workflow_version=None if m.kind != "runcomfy" else m.workflow_version,
                    leases=taken,
                    stopping=False,
                )
            )
        return out

    def _lease_takes_job(self, m: Any) -> bool:
        """See :func:`~conjure_actors.domain.machines_policy.lease_takes_job` (a renewal in
        flight matters only under a budget: without one it is always approved)."""
        sid = m.server_id
        refused_end = self._renewal_refused.get(sid)
        if refused_end is None and sid not in self._renewing:
            return True
        return policy.lease_takes_job(
            now=self.ctx.now(),
            estimated_stopping_at=m.estimated_stopping_at,
            renew_margin=self.cfg.renew_margin,
            refused_end=refused_end,
            renewing=sid in self._renewing and self.ctx.state.budget.limit_micros is not None,
        )

    def _reserved(self, server_id: str) -> set[str]:
        """The jobs a slot of this machine is kept for (``MachinePool.reserved``) that have
        not leased it again yet. Entries whose job moved on (its prompt no longer there to
        follow: requeued, ended) or whose machine went are dropped here."""
        jobs = self.pool.reserved.get(server_id)
        if not jobs:
            return set()
        state = self.ctx.state
        m = state.machines.get(server_id)
        for job_id in list(jobs):
            job = state.jobs.get(job_id)
            if (
                m is None
                or m.status in MACHINE_GONE
                or job is None
                or policy.prompt_machine(job) != server_id
            ):
                jobs.discard(job_id)
        if not jobs or m is None:
            self.pool.reserved.pop(server_id, None)
            return set()
        return {j for j in jobs if j not in m.leases}

    def _reserved_for(self, w: _Waiter) -> str | None:
        """The machine whose slot is kept for ``w``'s job (its re-attach, bound to that
        machine), if it can take a lease now; the slot counts as taken for everyone else."""
        sid = w.only_server
        if sid is None or sid not in self.pool.reserved or w.job_id not in self._reserved(sid):
            return None
        m = self.ctx.state.machines[sid]
        live = self.pool.live.get(sid)
        if (
            m.status != M_READY
            or not m.healthy
            or sid in self._stopping
            or sid in self._looking_up
            or (live is not None and live.opening)
            or len(m.leases) >= m.max_jobs
        ):
            return None
        return sid

    def _jobs_held(self) -> bool:
        """Whether waiting jobs are held back from machines (``Context.hold_jobs``)."""
        hold = self.ctx.hold_jobs
        return hold is not None and hold()

    def _limit(self, server_id: str) -> int:
        m = self.ctx.state.machines.get(server_id)
        return m.max_jobs if m is not None else self.cfg.jobs_per_machine

    async def _assign(self) -> None:
        """Serve waiting requests from Ready machines; launch for the unmet demand."""
        await self._serve_waiters()
        self._launch_for_demand()
        await self._stop_surplus()
        await self._stop_hedge_spares()

    async def _stop_surplus(self) -> None:
        """Stop the machines still Starting beyond what the waiting jobs need
        (:func:`~conjure_actors.domain.machines_policy.surplus_starting`: not billed before
        Ready), the most recently launched first. A pre-launched one is kept (it was
        launched for jobs not here yet), and with pre-launch on, never fewer machines than
        its target are left alive. Only machines count: a launch still on its way is
        not sent once nothing needs it (:meth:`_send_deferred`), and one sent is judged
        here once it answers, so the machines furthest along are the ones kept.

        Beyond ``max_machines`` alive, the Starting ones over it are stopped too, needed or
        not: a launch of unknown outcome closed after its landing grace (a replacement was
        launched) may start a machine that a listing shows later still, and it is adopted
        (it would bill unaccounted otherwise); the cap the user set holds, unbilled.

        The log's machines are left alone until the recovery has listed them
        (``MachinePool.unreconciled``): the log's "Starting" may be Ready, billing."""
        if self.ctx.runcomfy is None:
            return
        machines = self.ctx.state.machines
        pool = self.pool
        if (
            not pool.prelaunched
            and not pool.resumed
            and len(machines) <= self.cfg.max_machines
            and policy.surplus_starting(
                waiting=len(pool.waiting.unbound),
                starting=len(machines),
                jobs_per_machine=self.cfg.jobs_per_machine,
                hedge=self.cfg.launch_hedge,
            )
            <= 0
        ):
            # Nothing can be surplus, without a look at each machine (this runs at every
            # assignment, issue 16): the jobs waiting need more machines than there are
            # (the surplus only grows with the Starting ones, all of them at most), and
            # none is over max_machines.
            return
        starting = []
        alive = 0
        stopping = self._stopping
        unreconciled = pool.unreconciled
        for m in machines.values():
            if m.kind != "runcomfy" or m.status in MACHINE_GONE or m.server_id in stopping:
                continue
            alive += 1
            if m.status == M_STARTING and m.server_id not in unreconciled:
                starting.append(m.server_id)
        if not starting:
            self.pool.prelaunched.clear()
            return
        if self.pool.prelaunched:
            self.pool.prelaunched.intersection_update(starting)
        n = policy.surplus_starting(
            waiting=len(self.pool.waiting.unbound) + self._resumed_waiting(),
            starting=len(starting),
            jobs_per_machine=self.cfg.jobs_per_machine,
            hedge=self.cfg.launch_hedge,
        )
        target = self._prelaunch_target() if n > 0 else 0
        if target > 0:
            # The pre-launch wants ``target`` machines alive for the jobs on their way: a
            # machine launched for a job that took a pre-launched one counts for it too.
            n = min(n, max(0, self._alive_or_coming() - target))
        surplus = [sid for sid in starting[::-1] if sid not in self.pool.prelaunched][:n]
        over = alive - self.cfg.max_machines - len(surplus)
        if over > 0:
            surplus += [sid for sid in starting[::-1] if sid not in surplus][:over]
        for sid in surplus:
            await self._stop(sid, "surplus")

    async def _stop_hedge_spares(self) -> None:
        """Stop the spares of hedged launches (``MachinePool.hedged``) that are Ready with no
        job waiting that they could serve: the job they were launched for took another
        machine (their boots ended within a poll, so no listing saw them Starting after
        it), and left to the idle timeout they would bill minutes for nothing
        (:func:`~conjure_actors.domain.machines_policy.hedge_spares_to_stop`). The warm pool
        keeps those it wants, and with pre-launch on, never fewer than its target are left
        alive. One that took a job is a plain machine from then on (its idle timeout)."""
        pool = self.pool
        if not pool.hedged:
            return
        state = self.ctx.state
        spares = []
        for sid in list(pool.hedged):
            m = state.machines.get(sid)
            if m is None or m.status in MACHINE_GONE or m.leases or m.jobs_served:
                pool.hedged.discard(sid)  # gone, or it took a job: no spare
                continue
            if (
                m.status != M_READY
                or sid in self._stopping
                or m.draining is not None
                or pool.waiting.wants(m.workflow_version)  # a job may take it (health...)
            ):
                continue
            spares.append(sid)
        if not spares:
            return
        idle = sum(
            1
            for m in state.machines.values()
            if m.status == M_READY
            and not m.leases
            and m.server_id not in self._stopping
            and m.draining is None
        )
        n = policy.hedge_spares_to_stop(spares=len(spares), idle=idle, warm_pool=self.cfg.warm_pool)
        target = self._prelaunch_target() if n > 0 else 0
        if target > 0:
            n = min(n, max(0, self._alive_or_coming() - target))
        for sid in spares[::-1][:n]:  # the latest launched first
            pool.hedged.discard(sid)
            await self._stop(sid, "surplus")

    def _resumed_waiting(self) -> int:
        """How many jobs of a resumed log have not asked for the machine they will need yet
        (``MachinePool.resumed``); those that ended meanwhile, or now re-attach to a
        machine still there, are dropped here."""
        resumed = self.pool.resumed
        if not resumed:
            return 0
        state = self.ctx.state
        for job_id in list(resumed):
            job = state.jobs.get(job_id)
            if job is None or not policy.awaits_machine(state, job):
                resumed.discard(job_id)
        return len(resumed)

    def _first_unasked(self) -> tuple[int, int] | None:
        """The queue place of the first job a restart re-queues that has not asked for a
        machine yet (``MachinePool.unasked``), None if none is left (or the wait for them
        is over): the jobs queued behind it wait for it. Those that asked, or ended, or
        now re-attach are dropped as they reach the top (O(log n) each, once)."""
        pool = self.pool
        heap = pool.unasked_heap
        if trio.current_time() >= pool.unasked_until:
            heap.clear()
            pool.unasked.clear()
            return None
        state = self.ctx.state
        while heap:
            key, job_id = heap[0]
            job = state.jobs.get(job_id)
            if job_id in pool.unasked and job is not None and policy.awaits_machine(state, job):
                return key
            heapq.heappop(heap)
            pool.unasked.discard(job_id)
        return None

    async def _serve_waiters(self) -> None:
        state = self.ctx.state
        queue = self.pool.waiting
        # Machines with a free slot now. Unbound requests are taken from the heap in serving
        # order only while one is left, so serving costs O(served log n), not O(n); the few
        # requests bound to one machine (recovery) are merged in by the same order.
        if not queue.unbound and not queue.bound:
            return  # nobody waits (the loop below would serve no one)
        views = self._free_views()
        if not views and not queue.bound:
            return
        if views and cost_policy.lease_refused(state, now=self.ctx.now()):
            # The spend reached the limit: the machines are about to be stopped. A waiting
            # job fails as one whose launch the budget refused, unpaid.
            self._fail_waiting("budget", self._budget_refusal())
            views = []
        bound = sorted(queue.bound.values(), key=_serving_key)
        bi = 0
        skipped: list[_Waiter] = []
        # Held (Context.hold_jobs): a job not bound to a machine waits; a re-attach goes on
        # (its prompt ran already on the machine it is bound to).
        held = self._jobs_held()
        # After a restart, the jobs queued behind one that has not asked yet wait for it.
        first_unasked = self._first_unasked() if self.pool.unasked_heap else None
        while True:
            # ``views`` empties as machines fill: then no waiter can be served (issue 16: the
            # queue is not walked for nothing).
            top = queue.peek() if views and not held else None
            if (
                first_unasked is not None
                and top is not None
                and (-top.priority, top.order) > first_unasked
            ):
                top = None  # it and every unbound request after it wait
            nb = bound[bi] if bi < len(bound) else None
            if nb is not None and (top is None or _serving_key(nb) < _serving_key(top)):
                w, bi = nb, bi + 1
            elif top is not None:
                queue.pop()
                w = top
            else:
                break
            if w.reply.done:
                queue.remove(w)
                continue
            # A re-attach takes the slot kept for it (counted taken in ``views`` already).
            kept = self._reserved_for(w) if self.pool.reserved else None
            sid = kept or policy.pick_machine(
                views, w.workflow_version, self.cfg.jobs_per_machine, only_server=w.only_server
            )
            if sid is not None and len(state.machines[sid].leases) < self._limit(sid):
                queue.remove(w)
                job = state.jobs.get(w.job_id)
                if job is None or job.status not in ACTIVE_STATUSES:
                    w.reply.fail(
                        LeaseFailedError(
                            f"job {w.job_id} is not active", retryable=False, reason="inactive"
                        )
                    )
                    continue
                await self.ctx.emit(decide.lease_machine(state, sid, w.job_id, at=self.ctx.now()))
                live = self.pool.live.setdefault(sid, _Live())
                w.reply.set(Lease(sid, live.client, live.lost, live.events))
                if kept is not None:
                    reserved = self.pool.reserved.get(sid, set())
                    reserved.discard(w.job_id)  # its slot: now a lease
                    if not reserved:
                        self.pool.reserved.pop(sid, None)
                    continue
                # Only the machine just leased changes: one more lease, or full (out).
                for i, v in enumerate(views):
                    if v.server_id == sid:
                        if v.leases + 1 < self._limit(sid):
                            views[i] = attrs.evolve(v, leases=v.leases + 1)
                        else:
                            del views[i]
                        break
            elif w.only_server is not None:
                m = state.machines.get(w.only_server)
                if m is None or m.status in MACHINE_GONE:
                    queue.remove(w)
                    w.reply.fail(
                        LeaseFailedError(
                            f"machine {w.only_server} is gone", retryable=True, reason="gone"
                        )
                    )
            else:
                skipped.append(w)  # no free machine of its version: it keeps its place
        for w in skipped:
            queue.push_back(w)

    def _demand(self) -> list[_Waiter]:
        """Waiting requests a new machine would serve: any machine, job still active (a job
        cancelled while its request was queued never causes a launch)."""
        jobs = self.ctx.state.jobs
        out = []
        for w in self.pool.waiting.unbound.values():
            if w.reply.done:
                continue
            job = jobs.get(w.job_id)
            if job is not None and job.status not in ACTIVE_STATUSES:
                continue
            out.append(w)
        return out

    def _launches_for_demand(self) -> tuple[int, list[_Waiter]]:
        """(launches needed, the demand). The demand is only gathered (a pass over the
        queue) when launches would be needed even if every unbound request counted: in a
        pool at ``max_machines``, or with enough machines starting, a lease costs no scan."""
        if (
            not self.pool.waiting.unbound
            or self._launches_needed(len(self.pool.waiting.unbound)) <= 0
        ):
            return 0, []
        demand = self._demand()
        return (self._launches_needed(len(demand)) if demand else 0), demand

    def _launches_needed(self, waiting: int) -> int:
        alive = [
            m
            for m in self.ctx.state.machines.values()
            if m.kind == "runcomfy"
            and m.status not in MACHINE_GONE
            and m.server_id not in self._stopping
        ]
        # Launches on their way: POSTs in flight, and this process's intents of unknown
        # outcome (a POST whose answer was lost may have started a machine, which shows
        # in a listing within its landing grace: launching another for the same demand
        # meanwhile would pay for two, past max_machines). An intent left by a crashed run
        # is not counted: most were never sent (it is logged before the POST).
        open_unknown = self.pool.unknown & set(self.ctx.state.launch_requests)
        in_flight = len(self._launching | open_unknown) + self._approving
        if len(alive) + in_flight >= self.cfg.max_machines:
            # At the cap: no launch, however many are starting (the usual case once the pool
            # is up, a few times per job: the counts below are not needed, issue 16).
            return 0
        # Machines that will take jobs soon: still starting, or Ready with the health check
        # in progress.
        starting = (
            sum(
                1
                for m in alive
                if m.status == M_STARTING or (m.status == M_READY and not m.healthy)
            )
            + in_flight
        )
        # A Ready, healthy machine (attached or not) whose socket is opening takes jobs once
        # that attempt is over: it is coming capacity, not missing (a job queued meanwhile
        # launched and billed a RunComfy machine for nothing). It is as sure as a hedged
        # launch's first Ready, so it counts as ``launch_hedge`` starting machines.
        machines = self.ctx.state.machines
        for server_id, live in self.pool.live.items():
            if not live.opening or server_id in self._stopping:
                continue
            m = machines.get(server_id)
            if m is not None and m.status == M_READY and m.healthy:
                starting += self.cfg.launch_hedge
        return policy.launches_needed(
            waiting=waiting,
            starting=starting,
            alive=len(alive) + in_flight,
            max_machines=self.cfg.max_machines,
            jobs_per_machine=self.cfg.jobs_per_machine,
            hedge=self.cfg.launch_hedge,
        )

    def _launch_for_demand(self) -> None:
        """Ask the CostActor to approve as many launches as the unmet demand needs (each
        approval comes back as ``LaunchApproved``)."""
        pool = self.pool
        if self.ctx.runcomfy is None:
            return
        if pool.unanswered:
            self._fail_held()
        if self._jobs_held():
            return  # the ticker comes back once the hold ends
        n, demand = self._launches_for_demand()
        if n <= 0:
            return
        try:
            self.ctx.table.rate(pool.server_type)
        except DomainError as exc:  # a server type the price table cannot bill
            self._stop_launching(f"cannot launch: {exc}")
        if pool.launching_allowed and policy.launches_exhausted(
            failed_in_a_row=pool.failed_in_a_row, max_launch_attempts=self.cfg.max_launch_attempts
        ):
            self._stop_launching(
                f"{pool.failed_in_a_row} launches in a row never became Ready "
                f"(the last: {pool.last_boot_failure or 'failed'}); "
                "not launching again for now (pool.max_launch_attempts)",
                relaunch=True,
            )
        if not pool.launching_allowed:
            self._fail_unservable(pool.refuse_reason or "launching stopped")
            return
        if trio.current_time() < pool.next_launch_at:
            return  # backing off after a failed launch; the poll timer comes back
        demand.sort(key=_serving_key)
        for k in range(n):
            w = demand[k % len(demand)]
            version = w.workflow_version or pool.default_version or ""
            self._approving += 1
            self.start_soon(self._approve_child, w.job_id, version, name="machine-approve")

    # ------------------------------------------------------------------ pre-launch

    def _arrived(self) -> None:
        """Count a lease request as an arrival (pre-launch on: the window's only)."""
        window = self.cfg.prelaunch_window
        if self.cfg.prelaunch_max <= 0:
            return
        arrivals = self.pool.arrivals
        now = trio.current_time()
        del arrivals[: bisect.bisect_right(arrivals, now - window)]
        arrivals.append(now)

    def _prelaunch_target(self) -> int:
        """The pre-launch's target for the arrival rate now (0: off, or nothing arrives)."""
        cfg = self.cfg
        if cfg.prelaunch_max <= 0:
            return 0
        rate = policy.arrival_rate(
            self.pool.arrivals, now=trio.current_time(), window=cfg.prelaunch_window
        )
        return policy.prelaunch_target(
            rate=rate,
            service_seconds=cfg.prelaunch_service,
            factor=cfg.prelaunch_factor,
            cap=cfg.prelaunch_max,
        )

    def _alive_or_coming(self) -> int:
        """RunComfy machines alive (Ready or Starting, not being stopped), and the launches
        on their way."""
        alive = sum(
            1
            for m in self.ctx.state.machines.values()
            if m.kind == "runcomfy"
            and m.status not in MACHINE_GONE
            and m.server_id not in self._stopping
        )
        return alive + len(self._launching) + self._approving

    def _prelaunches_now(self) -> int:
        """Machines to pre-launch now: the policy's target for the arrival rate, less the
        machines alive (Ready or Starting) and the launches on their way."""
        target = self._prelaunch_target()
        if target <= 0:
            return 0
        return policy.prelaunches_needed(
            target=target, alive=self._alive_or_coming(), max_machines=self.cfg.max_machines
        )

    def _prelaunch(self, job_id: str, version: str | None) -> None:
        """On an arrival: ask the CostActor to approve one pre-launch if the policy wants
        one (it comes back as ``LaunchApproved(prelaunch=True)``, whose launch then asks for
        the next). One at a time, and only while no other approval is in flight: the budget
        then sees every launch decided before it, so a pre-launch never takes what the
        budget did not permit."""
        pool = self.pool
        if (
            self.cfg.prelaunch_max <= 0
            or self._approving
            or self.ctx.runcomfy is None
            or not pool.launching_allowed
            or pool.shutdown is not None
            or trio.current_time() < pool.next_launch_at
            or self._held(version)
            or policy.launches_exhausted(
                failed_in_a_row=pool.failed_in_a_row,
                max_launch_attempts=self.cfg.max_launch_attempts,
            )
        ):
            return
        if self._prelaunches_now() > 0:
            self._approving += 1
            self.start_soon(
                self._approve_child,
                job_id,
                version or pool.default_version or "",
                True,
                name="machine-prelaunch",
            )

    async def _approve_child(self, job_id: str, version: str, prelaunch: bool = False) -> None:
        """Child: ask the CostActor whether a launch fits the budget; report it (``None``:
        no answer, as while the CostActor restarts; the poll timer asks again)."""
        approved: bool | None
        try:
            approved = bool(await self.pool.approve_launch(job_id, self.pool.server_type))
        except (AskTimeoutError, ActorStoppedError) as exc:
            log.warning("launch for job %s: the budget did not answer (%s)", job_id, exc)
            approved = None
        await self._tell(LaunchApproved(job_id, version, approved, prelaunch, self.incarnation))

    async def _on_approved(self, msg: LaunchApproved) -> None:
        unused = self.pool.approval_unused
        if msg.incarnation != self.incarnation:
            # Asked by an incarnation that crashed since (this one never counted it in
            # _approving, and counting it down would let _launches_needed pass
            # max_machines): not acted on. Its reservation is given back; the demand it
            # was for still waits, and this incarnation asks for it anew.
            log.info("launch for job %s: approval asked before a restart, unused", msg.job_id)
            if msg.approved and unused is not None:
                self.start_soon(self._approval_unused_child, unused, msg.job_id, name="unused")
            await self._assign()
            return
        if msg.approved and not msg.prelaunch:
            # Decided at send time: see _send_deferred.
            self._deferred.append(msg)
            await self._send_deferred()
            return
        await self._act_on_approved(msg)

    async def _act_on_approved(self, msg: LaunchApproved) -> None:
        unused = self.pool.approval_unused
        launching = len(self._launching)
        await self._act_on_approval(msg)
        if msg.approved and len(self._launching) == launching and unused is not None:
            # Approved but not launched (served or cancelled meanwhile, launching stopped):
            # the CostActor stops counting the lease it reserved for it.
            self.start_soon(self._approval_unused_child, unused, msg.job_id, name="unused")

    # A launch for demand is decided when it can be sent, not when it was asked for. The
    # account's rate limit (about one request a second) spaces the POSTs of a burst by
    # seconds, and the CostActor's approval comes first: a launch logged at once would wait
    # in the bucket while a Ready machine takes the jobs it was for, then start a machine
    # nobody uses (QA: four launches for a burst the warm machine drained in 1.8 s, one
    # sent after the last job had ended). So an approved launch waits for its turn: a token
    # of the account's bucket free for it (waited for once, then taken as it comes). At its
    # turn it asks _act_on_approval, which sends it only if the waiting jobs still need it,
    # and otherwise gives the approval back. Until then it counts in ``_approving`` (a
    # launch on its way), so no other launch is asked for the same demand. Launches are not
    # sent one answer at a time: that spaced a burst's machines by seconds each (10 machines
    # over 30 s; the pipeline benchmark lost a third of its speed). A launch the bucket
    # still holds when the demand goes is sent all the same, and its machine stopped while
    # Starting (``_stop_surplus``: unbilled).

    async def _send_deferred(self, *, turn: bool = False) -> None:
        """Act, in order, on the approved launches whose turn has come (see above);
        ``turn``: the wait for the bucket is over (it is not waited for twice)."""
        pool = self.pool
        if turn:
            self._turn_at = None
        while self._deferred:
            if pool.launching_allowed and pool.shutdown is None and not turn:
                wait = self._bucket_wait()
                if wait > 0:
                    if self._turn_at is None:
                        self._turn_at = trio.current_time() + wait
                        self.start_soon(self._turn_child, wait, name="machine-launch-turn")
                    return
            turn = False
            await self._act_on_approved(self._deferred.pop(0))

    def _bucket_wait(self) -> float:
        """Seconds until the account's rate limit lets one more request out, after the
        callers already waiting for it (0: now)."""
        bucket = getattr(self.ctx.runcomfy, "bucket", None)
        if not isinstance(bucket, TokenBucket):
            return 0.0
        stats = bucket.statistics()
        now = trio.current_time()
        start, tokens = now, stats.tokens
        if stats.paused_until is not None:
            start, tokens = stats.paused_until, 0.0
        short = stats.waiting + 1.0 - tokens
        return max(0.0, start - now) + (short / stats.rate if short > 1e-6 else 0.0)

    async def _turn_child(self, wait: float) -> None:
        """Child: tell the actor when the account's bucket should have a token again."""
        await trio.sleep(wait)
        await self._tell(LaunchTurn())

    async def _approval_unused_child(self, unused: ApprovalUnusedFn, job_id: str) -> None:
        """Child: tell the CostActor an approval went unused (if it cannot hear it, the
        reservation expires by itself)."""
        try:
            await unused(job_id)
        except ActorStoppedError as exc:
            log.warning("launch for job %s: approval unused, not told (%s)", job_id, exc)

    async def _act_on_approval(self, msg: LaunchApproved) -> None:
        self._approving -= 1
        pool = self.pool
        if msg.prelaunch:
            # Refused or unanswered: nothing waits on a pre-launch (the demand's own
            # launches fail the jobs the budget cannot serve).
            if msg.approved and pool.shutdown is None and self._prelaunches_now() > 0:
                await self._request_launch(msg.version, prelaunch=True)
                self._prelaunch(msg.job_id, msg.version)
            self._check_shutdown()
            return
        if msg.approved is None:
            self._check_shutdown()
            return
        if not msg.approved:
            self._fail_unservable("budget", self._budget_refusal())
            self._check_shutdown()
            return
        if not pool.launching_allowed or self.pool.shutdown is not None:
            self._fail_unservable(pool.refuse_reason or "launching stopped")
            self._check_shutdown()
            return
        if self._launches_for_demand()[0] > 0:  # not served, cancelled or covered meanwhile
            await self._request_launch(msg.version)
        self._prelaunch(msg.job_id, msg.version)  # it waited for this approval

    async def _request_launch(self, version: str, *, prelaunch: bool = False) -> None:
        """Log the launch intent, then ``POST /servers`` in a child."""
        pool = self.pool
        if not pool.launching_allowed or self._held(version):
            return
        key = self.ctx.ids().hex
        # Its lease, a few seconds shorter: the marker by which a listing tells its server
        # from another client's on the account (see policy.matches_intent).
        # Not one an open or given-up intent, or a machine listed that is not ours, uses:
        # two launches with one marker (both answers lost) would each match both servers,
        # and neither would be adopted, both billing unknown.
        duration = policy.launch_duration(
            int(self.cfg.lease_seconds),
            taken=[
                *(r.estimated_duration for r in self.ctx.state.launch_requests.values()),
                *(req.estimated_duration for req, _ in self.pool.given_up.values()),
                *self.pool.foreign_markers,
            ],
            draw=self.ctx.rng.random(),
        )
        try:
            intent = decide.request_launch(
                self.ctx.state,
                request_key=key,
                server_type=pool.server_type,
                workflow_version=version,
                estimated_duration=duration,
                table=self.ctx.table,
                max_jobs=self.cfg.jobs_per_machine,
                at=self.ctx.now(),
            )
        except DomainError as exc:  # e.g. a server type the price table cannot bill
            self._stop_launching(f"cannot launch: {exc}")
            self._fail_unservable(pool.refuse_reason)
            return
        self._launching.add(key)
        if prelaunch:
            pool.prelaunch_keys.add(key)
        await self.ctx.emit(intent)
        self.start_soon(self._launch_child, key, version, duration, name="machine-launch")

    async def _launch_child(self, key: str, version: str, duration: int) -> None:
        """Child: ``POST /servers``; report the answer."""
        try:
            server = await self.ctx.require_runcomfy().launch(
                version, self.pool.server_type, duration
            )
        except ClientError as exc:
            await self._tell(LaunchAnswered(key, error=exc))
            return
        await self._tell(LaunchAnswered(key, server=server))

    async def _on_launch_answered(self, msg: LaunchAnswered) -> None:
        self._launching.discard(msg.key)
        pool = self.pool
        prelaunched = msg.key in pool.prelaunch_keys
        pool.prelaunch_keys.discard(msg.key)
        exc = msg.error
        if exc is not None:
            if isinstance(exc, OutcomeUnknownError):
                # An unknown outcome stays an open intent: the next listing adopts what it
                # started, or closes it once its landing grace is over (from what the
                # answer proves: policy.landing_grace).
                grace = policy.landing_grace(exc.status)
                log.warning("%s", _unknown_launch_line(msg.key, exc.status, grace))
                pool.landing[msg.key] = trio.current_time() + grace
                pool.unknown.add(msg.key)
                if pool.failing_since is None:  # an outage, if no listing shows its machine
                    pool.failing_since = trio.current_time()
                self._poll()
                return
            await self.ctx.emit(
                ev.MachineLaunchFailed(request_key=msg.key, reason=str(exc), at=self.ctx.now())
            )
            # Back off before the next launch. A rate limit or an outage is waited out for
            # ``cloud_patience``. Give up at once when the cloud refuses the launch itself
            # (a wrong token, an unknown workflow version or server type: a 4xx, nothing
            # will ever launch), or after ``max_launch_attempts`` failures of another kind.
            now = trio.current_time()
            pool.launch_errors += 1
            pool.next_launch_at = now + min(60.0, 2.0**pool.launch_errors)
            refused = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
            if _passing(exc):
                if pool.failing_since is None:
                    pool.failing_since = now
                if now - pool.failing_since >= self.cfg.cloud_patience:
                    self._stop_launching(f"launch failed: {exc}", relaunch=True)
            else:
                self._launch_failed()
                if isinstance(exc, AuthError) or refused:
                    self._stop_launching(f"launch failed: {exc}", relaunch=True)
                elif policy.launches_exhausted(
                    failed_in_a_row=pool.failed_in_a_row,
                    max_launch_attempts=self.cfg.max_launch_attempts,
                ):
                    self._stop_launching(
                        f"launch failed {pool.failed_in_a_row} times in a row, last: {exc}",
                        relaunch=True,
                    )
            if not pool.launching_allowed:
                self._fail_unservable(pool.refuse_reason)
            self._check_shutdown()
            return
        server = msg.server
        pool.launch_errors, pool.failing_since = 0, None
        await self.ctx.emit(
            decide.machine_launched(
                self.ctx.state, request_key=msg.key, server_id=server.server_id, at=self.ctx.now()
            )
        )
        pool.live[server.server_id] = _Live(launched_at=trio.current_time(), launch_seen=True)
        if prelaunched:
            pool.prelaunched.add(server.server_id)
        elif self.cfg.launch_hedge > 1:
            pool.hedged.add(server.server_id)
        if self.pool.shutdown is not None:
            # The launch completed after the stop of every machine began: stop it too.
            await self._stop(server.server_id, self.pool.shutdown.reason)
        self._check_shutdown()
        await self._assign()

    def _budget_refusal(self) -> str:
        """Why the budget refuses a launch now (a job failed for it says so in its error),
        on the figures the CostActor decides with, in its notice's words. Read now, not at
        the refusal: a machine's stop landing since moves them, and the job's error must
        hold what is true when it fails."""
        state, now = self.ctx.state, self.ctx.now()
        limit = state.budget.limit_micros
        if limit is None:
            return "budget"
        spent = cost_policy.spent_micros(state, now)
        if state.budget.exceeded or spent >= limit:
            return (
                f"the budget cannot cover a launch: {format_usd(spent)} of the"
                f" {format_usd(limit)} budget spent (exceeded); {RAISE_BUDGET}"
            )
        figures = budget_left(
            needed=self.ctx.lease_micros(self.pool.server_type),
            spent=spent,
            committed=cost_policy.committed_micros(
                state, now, lease_micros=self.ctx.lease_micros()
            ),
            limit=limit,
        )
        return f"the budget cannot cover a launch: {figures}; {RAISE_BUDGET}"

    def _fail_unservable(self, reason: str, why: str | None = None) -> None:
        """Fail waiting requests when nothing alive, or on its way, can ever serve them
        (``reason``: the error's; ``why``: its words, if not ``reason`` itself)."""
        state = self.ctx.state
        alive = [
            m
            for m in state.machines.values()
            if m.status not in MACHINE_GONE and m.server_id not in self._stopping
        ]
        if alive or self._launching or self._approving:
            return  # they will be served by a machine that exists
        self._fail_waiting(reason, why)

    def _fail_waiting(self, reason: str, why: str | None = None) -> None:
        """Fail every waiting request not bound to one machine (see _fail_unservable)."""
        for w in list(self.pool.waiting):
            if w.only_server is None:
                self.pool.waiting.remove(w)
                w.reply.fail(
                    LeaseFailedError(
                        f"no machine: {why or reason}",  # (its job's line names the job)
                        retryable=False,
                        reason=reason,
                    )
                )

    # ------------------------------------------------------------------ stops

    async def _stop(self, server_id: str, reason: str) -> None:
        """Stop one RunComfy machine: the intent now, the ``DELETE`` in a child."""
        state = self.ctx.state
        m = state.machines.get(server_id)
        if m is None or m.status in MACHINE_GONE or m.kind != "runcomfy":
            return
        if server_id in self._stopping:
            return
        if m.status != "stopping":
            await self.ctx.emit(
                decide.stop_machine(state, server_id, reason=reason, at=self.ctx.now())
            )
        self._mark_lost(server_id)
        self._stopping.add(server_id)
        # Keep trying through rate limits and outages while the machine may bill: up to
        # its lease's end (RunComfy stops it then), never longer than ``stop_patience``.
        now = self.ctx.now()
        lease_end = m.estimated_stopping_at
        if lease_end is None:
            lease_end = now + self.cfg.ready_timeout + self.cfg.lease_seconds
        patience = max(1.0, min(self.cfg.stop_patience, lease_end - now))
        self.start_soon(
            self._stop_child,
            server_id,
            trio.current_time() + patience,
            m.service_ready_at is not None,
            name="machine-stop",
        )

    async def _stop_child(
        self, server_id: str, until: float, ready_logged: bool, record_if_gone: bool = False
    ) -> None:
        """Child: ``DELETE`` until it answers (or ``until``), then the final record (on a
        404 too with ``record_if_gone``: a lost machine listed without a Ready time)."""
        rc = self.ctx.require_runcomfy()
        delay = 1.0
        said = False
        while True:
            try:
                server = await rc.stop(server_id, missing_ok=True)
                break
            except ClientError as exc:
                if not _passing(exc) or trio.current_time() + delay > until:
                    await self._tell(StopAnswered(server_id, error=str(exc)))
                    return
                if not said:  # one line per stop; each retry is a debug line
                    said = True
                    log.warning("%s", _stop_retry_line(server_id, exc, until))
                log.debug("stop of server %s: %s; trying again in %g s", server_id, exc, delay)
            await trio.sleep(delay)
            delay = min(30.0, delay * 2)
        stopped_at = self.ctx.now()
        if server is None:
            ready_at = None
            if record_if_gone:
                # Listed Starting, gone (404) before the DELETE: it may have become Ready,
                # and billed, meanwhile; its final record says (if RunComfy still has it).
                ready_at = await self._final_ready_at(server_id, gone=True)
            await self._tell(
                StopAnswered(
                    server_id, found=False, stopped_at=stopped_at, server_ready_at=ready_at
                )
            )
            return
        ready_at = server.service_ready_at
        if ready_at is None and not ready_logged:
            # The DELETE's answer says it was not Ready; its final record says for sure
            # (it may have become Ready while the DELETE was on its way).
            ready_at = await self._final_ready_at(server_id, gone=False)
        await self._tell(
            StopAnswered(
                server_id,
                found=True,
                stopped_at=stopped_at,
                server_ready_at=ready_at,
                still_up=server.status not in policy.GONE_STATUSES,
            )
        )

    async def _final_ready_at(self, server_id: str, *, gone: bool) -> float | None:
        """Child: the Ready time of a stopped machine's final record (``GET``), or None.
        ``gone``: its DELETE answered 404; a record gone too leaves its bill unproven
        (a warning: it may have billed from a Ready time nobody can tell any more)."""
        try:
            return (await self.ctx.require_runcomfy().status(server_id)).service_ready_at
        except ServerNotFoundError:
            if gone:
                log.warning(
                    "server %s, found up after its loss without a Ready time, answered 404"
                    " to its DELETE and has no final record: billed without a Ready time"
                    " (RunComfy may have billed it if it became Ready before it went)",
                    server_id,
                )
        except ClientError as exc:
            log.info("final record of server %s: %s", server_id, exc)
        return None

    async def _on_stop_answered(self, msg: StopAnswered) -> None:
        self._stopping.discard(msg.server_id)
        state = self.ctx.state
        m = state.machines.get(msg.server_id)
        if m is not None and m.status not in MACHINE_GONE:
            if msg.error:
                log.warning(
                    "stop of server %s gave up: %s; it may still be billing until its lease"
                    " ends; the next listing tries again",
                    msg.server_id,
                    msg.error,
                )
            else:
                # A 404: gone by the first listing that left it out, if one did (a 200:
                # that listing missed it).
                missing = self.pool.missing_since.pop(msg.server_id, None)
                event = policy.bill_after_delete(
                    state,
                    msg.server_id,
                    found=msg.found,
                    answered_at=msg.stopped_at,
                    server_ready_at=msg.server_ready_at,
                    table=self.ctx.table,
                    at=self.ctx.now(),
                    missing_since=None if msg.found else missing,
                )
                if m.service_ready_at is None and event.service_ready_at is not None:
                    self._ready_seen()  # it did become Ready: not a stuck launch
                await self.ctx.emit(_still_up(event, msg))
                if msg.found:  # a 200 that did not take is seen in the next listings
                    self.pool.recheck[msg.server_id] = trio.current_time() + STOP_RECHECK
                    self.pool.unconfirmed.add(msg.server_id)
                self._note_taken(msg)
        elif (
            m is not None
            and m.status == M_STOPPED
            and not msg.error
            and msg.server_id in self.pool.recheck
        ):
            # The DELETE sent again to a machine still up after its stop's 200 (see
            # _recheck_stopped): RunComfy billed it until this answer, so its logged bill
            # is extended to it. Its recheck goes on: this 200 may not take either.
            again = policy.bill_after_stop_again(
                state,
                msg.server_id,
                found=msg.found,
                answered_at=msg.stopped_at,
                server_ready_at=(
                    msg.server_ready_at if msg.found else self.pool.recheck_ready.get(msg.server_id)
                ),
                table=self.ctx.table,
                at=self.ctx.now(),
            )
            if again is not None:
                await self.ctx.emit(_still_up(again, msg))
            self._note_taken(msg)
        elif m is not None and m.lost_reason is not None and msg.server_id in self.pool.found_up:
            # Taken for lost, found up and stopped (_stop_found_after_loss): billed from its
            # final record to this answer, which replaces the bill of its loss. A 404: it
            # went meanwhile, billed from the listing that showed it up (listed Starting:
            # from its final record's Ready time, _stop_child), to this answer (or that
            # listing's lease end) at the latest, like any machine found gone.
            if msg.error:
                # Still found up (still_running), still watched: the next listing that
                # shows it up sends the DELETE again, one that shows it gone forgets it.
                log.warning(
                    "stop of server %s, found up after its loss, gave up: %s; the next"
                    " listing tries again",
                    msg.server_id,
                    msg.error,
                )
            else:
                listed_ready, listed_end = self.pool.found_up.pop(msg.server_id)
                self.pool.lost_watch.pop(msg.server_id, None)
                await self._bill_found_up(
                    msg.server_id,
                    msg.stopped_at if msg.found else _found_gone_at(m, msg.stopped_at, listed_end),
                    # A 404: the listing's Ready time, else its final record's.
                    msg.server_ready_at if msg.found or listed_ready is None else listed_ready,
                    still_up=msg.found and msg.still_up,
                )
                if msg.found:  # a 200 that did not take is seen in the next listings
                    self.pool.recheck[msg.server_id] = trio.current_time() + STOP_RECHECK
                    self.pool.unconfirmed.add(msg.server_id)
                self._note_taken(msg)
        self._check_shutdown()
        await self._assign()

    def _note_taken(self, msg: StopAnswered) -> None:
        """Whether a DELETE's answer showed it taking (Deleting, Stopping, a 404) or not
        (a 200 still up): see ``pool.not_taken``."""
        if msg.found and msg.still_up:
            self.pool.not_taken.add(msg.server_id)
        elif not msg.error:
            self.pool.not_taken.discard(msg.server_id)

    def _ready_seen(self) -> None:
        self.pool.failed_in_a_row = 0

    def _launch_failed(self) -> None:
        """One more launch in a row ended without a Ready machine (a series whose last
        failure is ``policy.FAILURE_SERIES_GAP`` old starts anew)."""
        pool = self.pool
        now = trio.current_time()
        pool.failed_in_a_row = policy.launches_in_a_row(
            pool.failed_in_a_row, last_at=pool.failed_at, now=now
        )
        pool.failed_at = now

    async def _stop_all(self, reason: str, reply: Reply[list[str]] | None) -> None:
        """Stop launching and every machine we pay for; ``reply`` once none is left (or
        with the ones still billing once ``stop_patience`` has passed)."""
        self._stop_launching(reason)
        for w in self.pool.waiting:
            w.reply.fail(LeaseFailedError(f"no machine: {reason}", retryable=False, reason=reason))
        self.pool.waiting.clear()
        for live in self.pool.live.values():  # leases asked back while a socket reopens
            returns, live.returns = live.returns, []
            for _, asked in returns:
                asked.fail(
                    LeaseFailedError(f"no machine: {reason}", retryable=False, reason=reason)
                )
        first = self.pool.shutdown is None
        if self.pool.shutdown is None:
            self.pool.shutdown = _Shutdown(reason)
        if reply is not None:
            self.pool.shutdown.replies.append(reply)
        try:
            for sid in self.pool.still_running():
                await self._stop(sid, reason)
        except eventlog.EventLogError as exc:
            # The log refused a stop's intent (a disk full with no hold in progress): those
            # waiting hear it now, not after stop_patience while the machines bill (the
            # shutdown then stops them without a log); this actor fails as before.
            for waiting in self.pool.shutdown.replies:
                waiting.fail(exc)
            self.pool.shutdown.replies.clear()
            raise
        if set(self.ctx.state.launch_requests) - self._launching:
            self._poll()  # intents of unknown outcome: their servers appear in a listing
        if first or reply is not None:
            self.start_soon(self._deadline_child, name="machine-stop-deadline")
        await self._send_deferred()  # approved launches waiting for their turn: given back
        self._check_shutdown()

    async def _deadline_child(self) -> None:
        await trio.sleep(self.cfg.stop_patience)
        await self._tell(ShutdownDeadline())

    def _check_shutdown(self) -> None:
        """Answer the stop-all replies once nothing runs and nothing is on its way."""
        sd = self.pool.shutdown
        if sd is None or not sd.replies:
            return
        if self._launching or self._approving:
            return
        if self.ctx.runcomfy is not None and set(self.ctx.state.launch_requests):
            return  # open intents: the next listing adopts (then stops) or closes them
        if self.pool.still_running():
            return
        if self.pool.unconfirmed or self.pool.not_taken:
            # A DELETE's 200 not yet seen taking (or seen not taking, and left out of a
            # listing since: no proof it went): one more listing.
            self._poll()
            return
        for reply in sd.replies:
            reply.set([])
        sd.replies.clear()

    def _on_shutdown_deadline(self) -> None:
        sd = self.pool.shutdown
        if sd is None or not sd.replies:
            return
        left = self.pool.still_running() + sorted(self.pool.unconfirmed | self.pool.not_taken)
        intents = sorted(self.ctx.state.launch_requests)
        log.warning(
            "stopping every machine: gave up after %g s; still billing: %s%s",
            self.cfg.stop_patience,
            ", ".join(left) or "none",
            f"; launches of unknown outcome: {', '.join(intents)}" if intents else "",
        )
        for reply in sd.replies:
            reply.set(left + self.pool.launches_unanswered())
        sd.replies.clear()

    def _mark_lost(self, server_id: str) -> None:
        live = self.pool.live.get(server_id)
        if live is not None:
            live.lost.set()
            if live.events_scope is not None:
                live.events_scope.cancel()
            self._opened(server_id, live)  # a lease asked back sees it lost, and requeues

    def _opened(self, server_id: str, live: _Live) -> None:
        """The machine's socket attempt is over (or the machine is lost): no longer opening,
        and the jobs that asked for their lease back meanwhile get it, with the socket."""
        live.opening = False
        returns, live.returns = live.returns, []
        for _, reply in returns:
            reply.set(Lease(server_id, live.client, live.lost, live.events))

    async def _lose(self, server_id: str, reason: str, stopped_at: float) -> None:
        """A machine vanished or stopped by itself: lost, final bill, its jobs requeued
        (their WorkflowActors see ``Lease.lost`` and requeue themselves). One the log never
        saw Ready is billed by its launch's lease (``policy.lost_bill``), not $0."""
        state = self.ctx.state
        m = state.machines.get(server_id)
        if m is None or m.status in MACHINE_GONE:
            return
        bill = policy.lost_bill(
            state,
            server_id,
            gone_at=stopped_at,
            lease_seconds=self.cfg.lease_seconds,
            table=self.ctx.table,
            at=self.ctx.now(),
            seen_starting_at=self.pool.seen_starting.get(server_id),
        )
        lost = ev.MachineLost(server_id=server_id, reason=reason, at=self.ctx.now())
        await self.ctx.emit(lost, bill)
        self._mark_lost(server_id)

    # ------------------------------------------------------------------ given-up prompts

    def _watch_late_prompt(self, msg: WatchLatePrompt) -> None:
        """A job gave up on a prompt whose ``POST`` may still land: watch for it (once per
        prompt id; not on a machine that is gone: nothing runs there any more)."""
        live = self.pool.live.get(msg.server_id)
        if msg.prompt_id in self.pool.late or live is None or live.lost.is_set():
            return
        until = trio.current_time() + LATE_PROMPT_WINDOW
        self.pool.late[msg.prompt_id] = _LateWatch(msg.server_id, msg.job_id, until)
        self._start_late_watch(msg.prompt_id)

    def _start_late_watch(self, prompt_id: str) -> None:
        watch = self.pool.late[prompt_id]
        live = self.pool.live.get(watch.server_id)
        if live is None or live.client is None or live.lost.is_set():
            if watch.was is None:
                del self.pool.late[prompt_id]
            else:
                # A restart after the watch stopped the prompt, and its machine went before
                # a lookup confirmed it: the stop is logged, as sent, not confirmed.
                self.start_soon(self._tell, LateWatchEnded(prompt_id), name="machine-late-end")
            return
        self.start_soon(
            self._late_watch_child,
            prompt_id,
            watch,
            live.client,
            live.lost,
            name="machine-late-prompt",
        )

    async def _late_watch_child(
        self, prompt_id: str, watch: _LateWatch, client: ComfyUIClient, lost: LostSignal
    ) -> None:
        """Child: every ``LATE_PROMPT_EVERY`` s until the watch's end (or the machine's),
        look the prompt up; pending: ``DELETE`` it from the queue; running: ``/interrupt``
        it (targeted: another prompt running is not touched). It ends once a prompt it
        stopped is gone (looked up again: ``watch.confirmed``); the first stop gives it
        ``LATE_PROMPT_CONFIRM`` s for that, past its window if need be. A lookup that fails
        is tried again next time."""
        with trio.move_on_at(watch.until) as scope:
            lost.watch(scope, scope.cancel)
            try:
                while True:
                    await trio.sleep(LATE_PROMPT_EVERY)
                    if _followed(self.ctx.state, watch.job_id, prompt_id):
                        continue  # its job follows it again (re-attached after a restart)
                    try:
                        where = str(await client.find_prompt(prompt_id))
                        if where == "pending":
                            await client.delete_from_queue(prompt_id)
                        elif where == "running":
                            await client.interrupt(prompt_id)
                        elif watch.was is not None:
                            watch.confirmed = True  # gone since it was stopped
                            break
                        elif where == "done":
                            break  # it ran before it was seen: nothing to stop
                        else:
                            continue  # not arrived (yet)
                    except ClientError as exc:
                        log.info(
                            "late prompt %s on server %s: %s (again in %g s)",
                            prompt_id[:8],
                            watch.server_id,
                            exc,
                            LATE_PROMPT_EVERY,
                        )
                        continue
                    if watch.was is None:  # its first stop: confirmed by a later lookup
                        watch.was = where
                        watch.until = max(watch.until, trio.current_time() + LATE_PROMPT_CONFIRM)
                        scope.deadline = watch.until
            finally:
                lost.unwatch(scope)
        await self._tell(LateWatchEnded(prompt_id))

    async def _on_late_watch_ended(self, msg: LateWatchEnded) -> None:
        watch = self.pool.late.pop(msg.prompt_id, None)
        if watch is None:
            return
        if watch.was is None:
            log.info("late prompt %s: watch on %s over", msg.prompt_id[:8], watch.server_id)
            return
        log.warning(
            "prompt %s of job %s, given up, reached server %s late (%s): %s",
            msg.prompt_id[:8],
            watch.job_id,
            watch.server_id,
            watch.was,
            "stopped"
            if watch.confirmed
            else "stop sent, not confirmed (its machine went, or it still ran)",
        )
        await self.ctx.emit(
            ev.LatePromptStopped(
                server_id=watch.server_id,
                prompt_id=msg.prompt_id,
                job_id=watch.job_id,
                was=watch.was,
                confirmed=watch.confirmed,
                at=self.ctx.now(),
            )
        )

    # ------------------------------------------------------------------ observation

    def _poll(self) -> None:
        """Start ONE ``GET /servers`` in a child (or queue one after the one in flight)."""
        if self._polling or self._reconciling:
            self._poll_queued = True
            return
        state = self.ctx.state
        needed = self.ctx.runcomfy is not None and (
            bool(state.launch_requests)
            or bool(policy.paid_machines(state))
            or bool(self.pool.recheck)  # a stop's 200 to check in the next listings
            or bool(self.pool.lost_watch)  # a machine lost unlisted may show up after all
            or bool(self.pool.given_up)  # a given-up launch's server may land after all
        )
        waiters, self._poll_waiters = tuple(self._poll_waiters), []
        if not needed:
            for reply in waiters:
                reply.set(None)
            return
        self._polling = True
        self.start_soon(self._poll_child, waiters, name="machine-poll")

    async def _poll_child(self, waiters: tuple[Reply[None], ...]) -> None:
        """Child: list the account's servers; report the listing."""
        try:
            servers = await self.ctx.require_runcomfy().list_servers()
        except ClientError as exc:
            await self._tell(ServerPolled(None, str(exc), waiters))
            return
        await self._tell(ServerPolled(list(servers), "", waiters))

    async def _on_polled(self, msg: ServerPolled) -> None:
        self._polling = False
        try:
            if msg.servers is None:
                self._poll_failures += 1
                if self._poll_failures == POLL_FAILURES_SAID:
                    log.warning(
                        "listing RunComfy's servers failed %d times in a row (%s); machine"
                        " states are not updated until it answers again (retrying every %g s)",
                        self._poll_failures,
                        msg.error,
                        self.cfg.poll_interval,
                    )
                else:
                    log.debug("listing servers failed: %s", msg.error)
            else:
                if self._poll_failures >= POLL_FAILURES_SAID:
                    log.warning(
                        "listing RunComfy's servers works again (after %d failed listings)",
                        self._poll_failures,
                    )
                self._poll_failures = 0
                self.pool.polls += 1
                await self._apply_listing(msg.servers)
        finally:
            for reply in msg.waiters:
                reply.set(None)
        if self._poll_queued:
            self._poll_queued = False
            self._poll()
        if self.pool.shutdown is not None:
            for sid in self.pool.still_running():
                await self._stop(sid, self.pool.shutdown.reason)
        self._check_shutdown()
        await self._assign()

    async def _apply_listing(self, servers: list[Any], *, only_these: bool = False) -> None:
        """Update every machine from what ONE listing says about it (``only_these``: the
        machines of ``servers`` alone, as a lookup of each answered)."""
        state = self.ctx.state
        pool = self.pool
        by_id = {s.server_id: s for s in servers}
        now = self.ctx.now()
        tnow = trio.current_time()
        managed = policy.paid_machines(state)
        for m in managed:
            sid = m.server_id
            s = by_id.get(sid)
            if only_these and s is None:
                continue
            if s is not None:
                pool.unproven.pop(sid, None)
                pool.missing_since.pop(sid, None)
            elif sid in self._stopping:
                # Left out while its DELETE is on its way: if that answers 404, it was gone
                # by this listing at the latest (its bill ends here, not at the answer).
                pool.missing_since.setdefault(sid, now)
            live = pool.live.setdefault(sid, _Live(launched_at=tnow))
            since_launch = tnow - live.launched_at
            if s is None and m.launched_at is not None and not live.launch_seen:
                # Not listed, launched before this actor (re)started: its grace runs from
                # the launch the log has (``live`` is memory: a restart would grant it
                # anew), and never past the grace from the restart (a wall clock stepped
                # back since the launch would stretch it without bound). A machine this
                # actor launched is timed by trio's clock alone: a wall clock stepped
                # forward would end its grace at once.
                since_launch = max(since_launch, now - m.launched_at)
            obs = policy.observe(
                m,
                None if s is None else _seen(s),
                since_launch=since_launch,
                listed_before=live.seen or m.observed_status is not None,
                ready_timeout=self.cfg.ready_timeout,
                stop_in_flight=sid in self._stopping,
            )
            if s is not None:
                live.seen = True
                if s.is_ready or s.service_ready_at is not None:
                    pool.seen_starting.pop(sid, None)
                elif s.status not in policy.GONE_STATUSES:
                    pool.seen_starting[sid] = now
                if (
                    s.status != m.observed_status
                    and not s.is_ready
                    and sid not in self._stopping
                    and m.status not in MACHINE_GONE
                ):
                    await self.ctx.emit(
                        ev.MachineStatusObserved(server_id=sid, status=s.status, at=now)
                    )
            if obs is Observation.LOST:
                if s is None and self._confirm_loss(m, now):
                    continue  # a listing that leaves it out proves nothing: its lookup does
                await self._lose_observed(m, s, now, tnow)
                continue
            if s is None:
                continue  # not listed yet, right after its launch
            match obs:
                case Observation.READY:
                    live.client = pool.make_client(sid, s.url)
                    await self.ctx.emit(
                        decide.machine_ready(
                            state,
                            sid,
                            service_ready_at=s.service_ready_at,
                            estimated_stopping_at=s.estimated_stopping_at,
                            table=self.ctx.table,
                            at=now,
                        )
                    )
                    self._ready_seen()
                case Observation.STUCK:
                    self._launch_failed()  # a launch that never became Ready
                    pool.last_boot_failure = (
                        f"machine {sid} ended in status Error"
                        if s.status == "Error"
                        else f"machine {sid} still {s.status} after {self.cfg.ready_timeout:g} s"
                    )
                    await self._stop(sid, "not_ready")
                    continue
                case Observation.UNWELL:
                    # Listed, not Ready and not on its way out: it may bill on. Stop it
                    # (billed from the DELETE's answer); its jobs see it lost.
                    await self._stop(sid, f"not ready ({s.status})")
                    continue
                case Observation.STOP_AGAIN:
                    # Our DELETE failed (or never went out): a paid machine must not be left
                    # running until its lease ends. Stop it again.
                    await self._stop(sid, m.stop_reason or "retry")
                    continue
                case Observation.RENEWED:
                    await self.ctx.emit(
                        ev.LeaseRenewed(
                            server_id=sid, estimated_stopping_at=s.estimated_stopping_at, at=now
                        )
                    )
                case _:
                    pass
            m = state.machines[sid]
            if m.status == M_READY and s is not None:
                if live.client is None:
                    live.client = pool.make_client(sid, s.url)
                if not m.healthy:
                    self._start_health(sid)
        if only_these:
            return
        await self._recheck_stopped(by_id)
        await self._stop_found_after_loss(servers, tnow)
        await self._adopt_unknown(servers)
        await self._renew_and_reap(now)

    async def _lose_observed(
        self, m: Any, s: Any, now: float, tnow: float, *, proven: bool = False
    ) -> None:
        """``m`` is gone: absent (``s`` is None: its lookup answered 404, ``proven``, or
        failed too often) or listed on its way out by itself.

        When it went nobody says. Its lookup's 404 proves it absent: it went before the first
        listing that left it out (``missing_since``), billed to that listing, not to the
        lookup that confirmed it (seconds to a minute later: the client retries a 404 within
        its launch grace). So the bill is at most the time between the last listing that
        showed it and the first that did not (a poll interval) above the cloud's, never
        below it. Taken for lost unproven (its lookups failed, or none could be sent), it
        may still run and bill: billed to now, the budget's safe side."""
        sid = m.server_id
        self.pool.unproven.pop(sid, None)
        missing = self.pool.missing_since.pop(sid, now)
        end = min(now, missing) if s is None and proven else now
        if m.estimated_stopping_at is not None and end >= m.estimated_stopping_at:
            reason = "its lease ended"  # not renewed (the budget, or no work): no cloud fault
        elif s is not None:
            reason = f"stopped by itself ({s.status})"
        else:
            reason = "vanished (404)"
        await self._lose(sid, reason, policy.gone_at(m, end))
        if s is None:  # watched until it cannot bill any more: its lease's end
            self.pool.lost_watch[sid] = tnow + (
                max(0.0, m.estimated_stopping_at - now)
                if m.estimated_stopping_at is not None
                else self.cfg.ready_timeout + self.cfg.lease_seconds
            )

    def _confirm_loss(self, m: Any, now: float) -> bool:
        """A listing left ``m`` out (past its landing grace): True while a lookup
        (``GET /servers/{id}``) is to decide, sent now or in flight (a listing may miss a
        machine that runs and bills on: taken for lost, its bill would stop here). False:
        take it for lost as today, after LOSS_LOOKUPS failed lookups, or one past its lease
        end (it cannot bill on)."""
        sid = m.server_id
        self.pool.missing_since.setdefault(sid, now)
        if self.ctx.runcomfy is None:
            return False
        failed = self.pool.unproven.get(sid, 0)
        past_lease = m.estimated_stopping_at is not None and now >= m.estimated_stopping_at
        if failed >= LOSS_LOOKUPS or (failed and past_lease):
            return False
        if sid not in self._looking_up:
            self._looking_up.add(sid)
            self.start_soon(self._lookup_child, sid, name="machine-lookup")
        return True

    async def _lookup_child(self, sid: str) -> None:
        """Child: ``GET /servers/{id}`` of a machine a listing left out."""
        try:
            server = await self.ctx.require_runcomfy().status(sid)
        except ServerNotFoundError:
            await self._tell(LossChecked(sid))
            return
        except ClientError as exc:
            await self._tell(LossChecked(sid, error=str(exc) or type(exc).__name__))
            return
        await self._tell(LossChecked(sid, server))

    async def _on_loss_checked(self, msg: LossChecked) -> None:
        sid = msg.server_id
        self._looking_up.discard(sid)
        if sid in self._recheck_lookups:
            await self._on_recheck_looked_up(msg)
            self._check_shutdown()
            return
        m = self.ctx.state.machines.get(sid)
        if m is None or m.status in MACHINE_GONE:
            self.pool.unproven.pop(sid, None)
            self.pool.missing_since.pop(sid, None)
            return
        if sid in self._stopping:
            # Its stop's answer decides. The listing that left it out is kept for that
            # answer's bill (a 404: gone by then, see _on_stop_answered), unless this
            # lookup found it up after all (that listing missed it).
            self.pool.unproven.pop(sid, None)
            if msg.server is not None:
                self.pool.missing_since.pop(sid, None)
            return
        if msg.error:
            failed = self.pool.unproven[sid] = self.pool.unproven.get(sid, 0) + 1
            log.warning(
                "server %s, left out of a listing: its lookup failed (%d/%d), not taken"
                " for lost yet: %s",
                sid,
                failed,
                LOSS_LOOKUPS,
                msg.error,
            )
            return
        if msg.server is None:
            await self._lose_observed(m, None, self.ctx.now(), trio.current_time(), proven=True)
        else:
            # Up (the listing missed it), or going: as if that listing had shown it.
            await self._apply_listing([msg.server], only_these=True)
        self._check_shutdown()
        await self._assign()

    async def _recheck_stopped(self, by_id: dict[str, Any]) -> None:
        """A machine whose DELETE answered 200 yet is still listed up (not on its way
        out) is still billing: DELETE it again; that one's answer extends its logged bill
        (``MachineStoppedAgain``, see _on_stop_answered)."""
        tnow = trio.current_time()
        for sid, until in list(self.pool.recheck.items()):
            s = by_id.get(sid)
            if s is not None and sid in self._recheck_lookups:
                # Listed: the lookups that failed before say nothing of the next absence
                # (kept at 0, not dropped: one in flight is still answered as a recheck's).
                self._recheck_lookups[sid] = 0
            if s is None and self._look_up_recheck(sid):
                continue  # its lookup decides (_on_recheck_looked_up)
            if s is None or s.status in policy.GONE_STATUSES:
                self.pool.unconfirmed.discard(sid)  # seen going: the 200 took
                if sid not in self._stopping:
                    await self._bill_went_by_itself(sid)
                if s is not None:
                    self.pool.not_taken.discard(sid)
                elif tnow > until and sid in self.pool.not_taken:
                    # Left out of a listing after a DELETE that did not take: maybe
                    # missed by the listing while it bills on. Watched while its lease
                    # may run (a listing that shows it up sends the DELETE again).
                    m = self.ctx.state.machines.get(sid)
                    end = None if m is None else m.estimated_stopping_at
                    if end is not None and self.ctx.now() < end:
                        until = self.pool.recheck[sid] = tnow + STOP_RECHECK
                    else:
                        self.pool.not_taken.discard(sid)
            elif tnow > until:
                # Still listed up past its recheck: its DELETEs keep not taking and it
                # bills on (until its lease ends): the recheck goes on, never forgotten.
                until = self.pool.recheck[sid] = tnow + STOP_RECHECK
            if tnow > until or s is None:
                if tnow > until:
                    del self.pool.recheck[sid]
                    self.pool.unconfirmed.discard(sid)
                    self.pool.not_taken.discard(sid)
                    self.pool.recheck_ready.pop(sid, None)
                    self._recheck_lookups.pop(sid, None)
                continue
            if s.service_ready_at is not None:
                self.pool.recheck_ready[sid] = s.service_ready_at
            if s.status in policy.GONE_STATUSES or sid in self._stopping:
                continue
            self._stop_again(sid, s, until, tnow)

    def _stop_again(self, sid: str, s: Any, until: float, tnow: float) -> None:
        """DELETE again a stopped machine still up (listed, or found by its lookup)."""
        log.warning(
            "server %s: its DELETE answered 200 but it is %s: stopping it again"
            " (its bill runs on until that one answers)",
            sid,
            s.status,
        )
        self._stopping.add(sid)
        self.start_soon(
            self._stop_child,
            sid,
            tnow + max(1.0, min(self.cfg.stop_patience, until - tnow)),
            True,
            name="machine-stop-again",
        )

    def _look_up_recheck(self, sid: str) -> bool:
        """A stopped machine whose last DELETE did not take (``stop_still_up``) that a
        listing left out: True while ``GET /servers/{id}`` is to decide whether it went
        (sent now or in flight). A listing may miss a machine that runs and bills on:
        billed as gone then, it would run unwatched until its lease ends. False (as before:
        the absence is taken as its going) after LOSS_LOOKUPS failed lookups."""
        m = self.ctx.state.machines.get(sid)
        if (
            self.ctx.runcomfy is None
            or m is None
            or m.status != M_STOPPED
            or not m.stop_still_up
            or sid in self._stopping
            or self._recheck_lookups.get(sid, 0) >= LOSS_LOOKUPS
        ):
            return False
        if sid not in self._looking_up:
            self._looking_up.add(sid)
            self._recheck_lookups.setdefault(sid, 0)
            self.start_soon(self._lookup_child, sid, name="machine-lookup")
        return True

    async def _on_recheck_looked_up(self, msg: LossChecked) -> None:
        """The lookup of a stopped machine whose DELETE did not take, left out of a
        listing (``_look_up_recheck``): up -> DELETE it again; 404 or going -> it went by
        itself (billed to now, at most its lease end); an error -> the next listing asks
        again (a failed count, bounded)."""
        sid = msg.server_id
        until = self.pool.recheck.get(sid)
        if until is None:
            self._recheck_lookups.pop(sid, None)
            return
        if msg.error:
            self._recheck_lookups[sid] = self._recheck_lookups.get(sid, 0) + 1
            log.warning(
                "server %s, stopped, left out of a listing: lookup failed: %s", sid, msg.error
            )
            return
        self._recheck_lookups.pop(sid, None)
        s = msg.server
        if s is None or s.status in policy.GONE_STATUSES:
            # Proven gone (a 404 is, unlike a listing's absence): nothing left to wait for.
            self.pool.unconfirmed.discard(sid)
            self.pool.not_taken.discard(sid)
            await self._bill_went_by_itself(sid)
            return
        if s.service_ready_at is not None:
            self.pool.recheck_ready[sid] = s.service_ready_at
        if sid not in self._stopping:
            self._stop_again(sid, s, until, trio.current_time())

    async def _bill_went_by_itself(self, sid: str) -> None:
        """A stopped machine whose last 200 showed it still up (``stop_still_up``: the stop
        did not take), now listed gone or absent: it went by itself since (its lease ran
        out, or it vanished), and billed until then: at most now, at most its lease end."""
        m = self.ctx.state.machines.get(sid)
        if m is None or m.status != M_STOPPED or not m.stop_still_up:
            return
        again = policy.bill_after_stop_again(
            self.ctx.state,
            sid,
            found=False,
            answered_at=self.ctx.now(),
            server_ready_at=self.pool.recheck_ready.get(sid),
            table=self.ctx.table,
            at=self.ctx.now(),
        )
        if again is not None:
            await self.ctx.emit(again)

    async def _stop_found_after_loss(self, servers: list[Any], tnow: float) -> None:
        """A machine of ours taken for lost (no listing showed it: a listing that lags its
        launch past NOT_VISIBLE_GRACE, or one that missed it for a while) that a listing
        shows up after all bills until its lease ends: stop it (DELETE); its answer
        corrects the bill its loss wrote (_on_stop_answered). Listings go on for it
        until that stop answers or it cannot bill any more (``lost_watch``)."""
        pool = self.pool
        gone: list[str] = []
        for sid, until in list(pool.lost_watch.items()):
            if tnow > until:  # its lease is over: it cannot bill any more
                del pool.lost_watch[sid]
                if sid in pool.found_up and sid not in self._stopping:
                    gone.append(sid)  # its stop's answer (in flight) bills it otherwise
        state = self.ctx.state
        up: set[str] = set()
        for s in servers:
            sid = s.server_id
            m = state.machines.get(sid)
            if (
                m is None
                or m.kind != "runcomfy"
                or m.status not in MACHINE_GONE
                or m.lost_reason is None  # stopped by our DELETE: _recheck_stopped's case
                or s.status in policy.GONE_STATUSES
                or sid in pool.recheck
            ):
                continue
            up.add(sid)
            if sid in self._stopping:
                continue
            pool.found_up[sid] = (s.service_ready_at, s.estimated_stopping_at)
            log.warning(
                "server %s, taken for lost (%s), is listed %s: stopping it (it bills until"
                " its lease ends otherwise)",
                sid,
                m.lost_reason,
                s.status,
            )
            self._stopping.add(sid)
            self.start_soon(
                self._stop_child,
                sid,
                tnow + self.cfg.stop_patience,
                m.service_ready_at is not None,
                s.service_ready_at is None and m.service_ready_at is None,
                name="machine-stop-found",
            )
        gone += [k for k in pool.found_up if k not in up and k not in self._stopping]
        for sid in dict.fromkeys(gone):
            # Its stop gave up, and it is gone now (or its lease is over): billing ended,
            # after the listing that showed it up: billed as a 404 to its DELETE is.
            listed_ready, listed_end = pool.found_up.pop(sid)
            went = _found_gone_at(state.machines[sid], self.ctx.now(), listed_end)
            await self._bill_found_up(sid, went, listed_ready)

    async def _bill_found_up(
        self, sid: str, stopped_at: float, server_ready_at: float | None, *, still_up: bool = False
    ) -> None:
        """The bill of a lost machine found up, to ``stopped_at``: it replaces its loss's."""
        event = policy.machine_stopped(
            self.ctx.state,
            sid,
            stopped_at=stopped_at,
            server_ready_at=server_ready_at,
            table=self.ctx.table,
            at=self.ctx.now(),
        )
        await self.ctx.emit(msgspec.structs.replace(event, still_up=still_up))

    async def _adopt_unknown(self, servers: list[Any]) -> None:
        """Servers a logged launch intent may have started (crash, or unknown outcome).

        None while a launch is in flight: an unknown server may then be that launch's,
        whose answer has not arrived yet. A server is adopted only if it echoes the
        intent's ``estimated_duration`` (``policy.matches_intent``): another client's
        machine on the account is never adopted, hence never stopped, by this run (two
        servers that both match are not provably ours: neither is). An intent whose server
        is not listed is closed only after its landing grace (``pool.landing``): until
        then each listing looks again."""
        state = self.ctx.state
        now = self.ctx.now()
        seen = self.pool.first_listed
        self.pool.first_listed = {
            s.server_id: seen.get(s.server_id, now)
            for s in servers
            if s.server_id not in state.machines
        }
        self.pool.foreign_markers = {
            s.estimated_duration
            for s in servers
            if s.server_id not in state.machines and s.estimated_duration
        }
        for key in [k for k in self.pool.landing if k not in state.launch_requests]:
            del self.pool.landing[key]  # closed (adopted, launched, failed)
        self.pool.unknown &= set(state.launch_requests)
        self.pool.orphaned &= set(state.launch_requests)
        if self.pool.given_up and not self._launching:
            await self._adopt_landed_late(servers)
        if not state.launch_requests or self._launching:
            return
        unknown = [
            s
            for s in servers
            if s.server_id not in state.machines and s.status not in policy.GONE_STATUSES
        ]
        for key in sorted(state.launch_requests, key=lambda k: state.launch_requests[k].at):
            req = state.launch_requests[key]
            unknown = [s for s in unknown if s.server_id not in state.machines]
            by_id = {s.server_id: s for s in unknown}
            matches = [
                by_id[c.server_id]
                for c in policy.launch_candidates(
                    req,
                    [_listed(s) for s in unknown],
                    known=state.machines,
                    first_listed=self.pool.first_listed,
                )
            ]
            # Open intents that ask for the very same server (a log written before the
            # marker: every intent asked for the plain lease): up to that many matching
            # servers are all ours, one each.
            twins = sum(
                1
                for r in state.launch_requests.values()
                if (r.server_type, r.workflow_version, r.estimated_duration)
                == (req.server_type, req.workflow_version, req.estimated_duration)
            )
            ambiguous = tuple(s.server_id for s in matches) if len(matches) > twins else ()
            if ambiguous and self.pool.ambiguous.get(key) != ambiguous:
                # Said once (each listing looks again until the landing grace ends).
                log.warning(
                    "launch %s: servers %s all match it; adopting none (not provably ours)",
                    key,
                    ", ".join(ambiguous),
                )
            if ambiguous:
                self.pool.ambiguous[key] = ambiguous
            else:
                self.pool.ambiguous.pop(key, None)
            match = matches[0] if 0 < len(matches) <= twins else None
            if match is None:
                orphaned = key in self.pool.orphaned
                tnow = trio.current_time()
                grace = 0.0 if orphaned else policy.NOT_VISIBLE_GRACE
                until = self.pool.landing.setdefault(key, tnow + grace)
                if tnow < until:
                    continue  # its POST may still be landing: the next listings look again
                candidates = self.pool.ambiguous.pop(key, ())
                if orphaned:
                    reason = ORPHANED_LAUNCH
                elif candidates:
                    reason = policy.ambiguous_launch_reason(candidates)
                else:
                    reason = "no server found for this launch"
                await self.ctx.emit(
                    ev.MachineLaunchFailed(request_key=key, reason=reason, at=self.ctx.now())
                )
                if candidates:
                    # Listed already, named: one of them left alone later (the other
                    # stopped) is no more provably ours, so no landing late is watched for.
                    await self._name_candidates(candidates, by_id)
                else:
                    # Its POST may have started a server that the listings show later
                    # still (it would bill until its lease ends, unknown to the run).
                    self.pool.given_up[key] = (
                        req,
                        tnow + self.cfg.ready_timeout + self.cfg.lease_seconds,
                    )
                if not orphaned and key in self.pool.unknown:
                    self._unknown_launch_closed(tnow)
                continue
            if key in self.pool.unknown:  # the launch did start a machine: no outage
                self.pool.failing_since = None
            await self._adopt(
                match,
                request_key=key,
                server_type=req.server_type,
                workflow_version=req.workflow_version,
            )
        for s in unknown:
            if s.server_id not in state.machines and s.server_id not in self.pool.foreign:
                self.pool.foreign.add(s.server_id)
                log.info(
                    "server %s (%s, %s s) on the account is not this run's: left alone",
                    s.server_id,
                    s.server_type,
                    s.estimated_duration,
                )

    async def _name_candidates(self, candidates: Sequence[str], by_id: dict[str, Any]) -> None:
        """The servers a closed launch intent's marker matched, none adopted (not provably
        ours, one may be): logged (``MachineUnknownListed``) and kept for run and serve to
        name with the command that stops each (``pool.unknown_listed``), never stopped."""
        now = self.ctx.now()
        listed = [_listed(by_id[sid]) for sid in candidates if sid in by_id]
        named = {u.server_id for u in self.pool.unknown_listed}
        for u in policy.unknown_servers(self.ctx.state, listed, now=now, table=self.ctx.table):
            if u.server_id in named:
                continue
            self.pool.unknown_listed.append(u)
            await self.ctx.emit(_unknown_listed(u, now))

    async def _adopt_landed_late(self, servers: list[Any]) -> None:
        """A server of a launch intent closed for want of a server (``pool.given_up``)
        that a listing shows after all, echoing that intent's marker, and the only one to:
        adopt it (it bills until its lease ends otherwise; the pool then uses or stops
        it)."""
        state = self.ctx.state
        tnow = trio.current_time()
        unknown = [
            s
            for s in servers
            if s.server_id not in state.machines and s.status not in policy.GONE_STATUSES
        ]
        for key, (req, until) in list(self.pool.given_up.items()):
            if tnow > until:
                del self.pool.given_up[key]
                continue
            by_id = {s.server_id: s for s in unknown}
            matches = [
                by_id[c.server_id]
                for c in policy.launch_candidates(
                    req,
                    [_listed(s) for s in unknown],
                    known=state.machines,
                    first_listed=self.pool.first_listed,
                )
            ]
            if len(matches) != 1:
                continue
            del self.pool.given_up[key]
            log.warning(
                "server %s landed after its launch %s was given up: adopting it",
                matches[0].server_id,
                key,
            )
            await self._adopt(
                matches[0],
                request_key=None,
                server_type=req.server_type,
                workflow_version=req.workflow_version,
            )

    async def _adopt(
        self, s: Any, *, request_key: str | None, server_type: str, workflow_version: str | None
    ) -> None:
        """Own a server found alive again (recovery): ``MachineAdopted``, then health."""
        ready = s.is_ready and s.service_ready_at is not None
        await self.ctx.emit(
            ev.MachineAdopted(
                server_id=s.server_id,
                request_key=request_key,
                server_type=server_type,
                workflow_version=workflow_version,
                status=s.status,
                service_ready_at=s.service_ready_at if ready else None,
                estimated_stopping_at=s.estimated_stopping_at if ready else None,
                rate_micros_per_hour=self.ctx.table.rate(server_type) if ready else 0,
                price_table_version=self.ctx.table.version if ready else "",
                max_jobs=self._limit(s.server_id),
                at=self.ctx.now(),
            )
        )
        live = self.pool.live.setdefault(s.server_id, _Live(launched_at=trio.current_time()))
        live.lost = LostSignal()
        live.seen = True
        if ready:
            live.client = self.pool.make_client(s.server_id, s.url)
            self._start_health(s.server_id)

    async def _renew_and_reap(self, now: float) -> None:
        self.pool.reaped_at = trio.current_time()
        state = self.ctx.state
        ready = [
            m
            for m in state.machines.values()
            if m.kind == "runcomfy" and m.status == M_READY and m.server_id not in self._stopping
        ]
        # Idle (no lease, no compatible request waiting): stopped once idle_timeout has
        # passed, except for the warm pool, which is kept (and renewed) for the next job.
        # A machine with a slot kept for a re-attaching job (``_reserved``: a restart
        # dropped its lease while its prompt runs, and the job has not leased it again:
        # not healthy yet, its WebSocket still opening) is neither idle nor stopped for the
        # budget: the stop would kill that prompt. Its lease runs out, or the job leases it.
        kept = {m.server_id for m in ready if self._reserved(m.server_id)}
        # Before the recovery has listed the log's machines (``recovering``: a poll may
        # list them first while its own listing is rate-limited), and while jobs it
        # re-queues have not asked yet (``resumed``; for RESUMED_IDLE_HOLD at most: they
        # ask at once, and a job that never does must not keep machines billing), no idle
        # stop: one idle in the log is the machine such a job is about to take.
        hold_idle = self.pool.recovering or (
            trio.current_time() < self.pool.reconciled_at + RESUMED_IDLE_HOLD
            and self._resumed_waiting() > 0
        )
        # Jobs held back (``Context.hold_jobs``) do not keep a machine: it would bill idle
        # for as long as the hold lasts.
        held = self._jobs_held()
        idle = [
            (m.server_id, m.idle_since)
            for m in ready
            if not m.leases
            and m.idle_since is not None
            and m.server_id not in kept
            and not hold_idle
            and (held or not self.pool.waiting.wants(m.workflow_version))
        ]
        to_stop = set(
            policy.idle_to_stop(
                idle, now=now, idle_timeout=self.cfg.idle_timeout, warm_pool=self.cfg.warm_pool
            )
        )
        warm = {sid for sid, _ in idle} - to_stop if self.cfg.warm_pool else set()
        for m in ready:
            if m.draining is not None and not m.leases and m.server_id not in kept:
                # Draining, and the re-attaches it was kept for moved on (requeued, ended)
                # without leasing it again: no release will come to stop it.
                await self._stop(m.server_id, m.draining)
                continue
            if (
                not m.leases
                and m.server_id not in kept
                and policy.renewal_refused(
                    refused_end=self._renewal_refused.get(m.server_id),
                    estimated_stopping_at=m.estimated_stopping_at,
                )
            ):
                # The budget refused its renewal: it takes no new job, so idle it only
                # bills until its lease ends. Stopped now, whoever waits (but not under a
                # re-attaching job's prompt: ``kept``).
                await self._stop(m.server_id, "budget")
                continue
            compatible = self.pool.waiting.wants(m.workflow_version) or m.server_id in warm
            # Idle, and kept warm past its lease's end by the idle timeout the user asked
            # for: renewed like a busy one (its lease ran out mid-idle: a job arriving then
            # waited a whole boot). It is still stopped at its idle timeout.
            warm_idle = (
                not m.leases
                and m.idle_since is not None
                and m.server_id not in to_stop
                and m.estimated_stopping_at is not None
                and m.idle_since + self.cfg.idle_timeout > m.estimated_stopping_at
            )
            if (
                policy.should_renew(
                    now=now,
                    estimated_stopping_at=m.estimated_stopping_at,
                    renew_margin=self.cfg.renew_margin,
                    work_remains=bool(m.leases) or compatible or warm_idle,
                )
                and self.pool.launching_allowed
                and m.server_id not in self._renewing
                and m.service_ready_at is not None
            ):
                self._renewing.add(m.server_id)
                seconds = policy.renewed_duration(
                    now=now,
                    service_ready_at=m.service_ready_at,
                    lease_seconds=self.cfg.lease_seconds,
                )
                if warm_idle and not (m.leases or compatible) and m.idle_since is not None:
                    # Kept only for its idle timeout: renewed to just past it, not a whole
                    # lease (a crash meanwhile would leave it billing to that lease's end).
                    seconds = min(
                        seconds,
                        policy.renewed_duration(
                            now=m.idle_since + self.cfg.idle_timeout,
                            service_ready_at=m.service_ready_at,
                            lease_seconds=self.cfg.renew_margin,
                        ),
                    )
                self.start_soon(
                    self._renew_child,
                    m.server_id,
                    seconds,
                    m.service_ready_at + seconds,
                    name="machine-renew",
                )
            if m.server_id in to_stop:
                await self._stop(m.server_id, "idle")

    async def _renew_child(self, server_id: str, seconds: int, fallback_until: float) -> None:
        """Child: ask the CostActor, then ``update-estimated-duration``; report it."""
        try:
            granted = await self.pool.approve_renewal(server_id, self.cfg.lease_seconds)
        except (AskTimeoutError, ActorStoppedError) as exc:
            log.warning("renewal of server %s: the budget did not answer (%s)", server_id, exc)
            await self._tell(RenewAnswered(server_id, None))  # asked again at the next poll
            return
        if granted is None or granted <= 0:
            await self._tell(RenewAnswered(server_id, None, refused=True))
            return
        if granted < self.cfg.lease_seconds:
            # What the budget still covers (a busy machine): renewed to then, not further.
            ready_at = fallback_until - seconds
            seconds = min(
                seconds,
                policy.renewed_duration(
                    now=self.ctx.now(), service_ready_at=ready_at, lease_seconds=granted
                ),
            )
            fallback_until = ready_at + seconds
        try:
            server = await self.ctx.require_runcomfy().extend(server_id, seconds)
        except ServerNotFoundError:
            await self._tell(RenewAnswered(server_id, None, gone=True))
            return
        except ClientError as exc:
            log.warning("lease renewal of server %s failed: %s", server_id, exc)
            await self._tell(RenewAnswered(server_id, None))
            return
        await self._tell(RenewAnswered(server_id, server.estimated_stopping_at or fallback_until))

    async def _on_renewed(self, msg: RenewAnswered) -> None:
        self._renewing.discard(msg.server_id)
        if msg.gone:
            self._poll()
            return
        m = self.ctx.state.machines.get(msg.server_id)
        if m is None or m.status != M_READY:
            self._renewal_refused.pop(msg.server_id, None)
            return
        if msg.refused and m.estimated_stopping_at is not None:
            # Its lease runs out where it ends now: no new job on it (the CostActor said
            # once, BudgetLimitReached, that the budget stopped renewals).
            self._renewal_refused[msg.server_id] = m.estimated_stopping_at
        else:
            self._renewal_refused.pop(msg.server_id, None)
        if msg.until is not None:
            await self.ctx.emit(
                ev.LeaseRenewed(
                    server_id=msg.server_id, estimated_stopping_at=msg.until, at=self.ctx.now()
                )
            )
        await self._assign()  # a job held back while the renewal was asked may go on it

    # ------------------------------------------------------------------ health, WebSocket

    def _start_health(self, server_id: str) -> None:
        live = self.pool.live.get(server_id)
        if live is None or server_id in self._health or live.client is None:
            return
        self._health.add(server_id)
        self.start_soon(self._health_child, server_id, live.client, name="machine-health")

    async def _health_child(self, server_id: str, client: ComfyUIClient) -> None:
        """Child: ``/system_stats`` before the first prompt, then the machine's WebSocket."""
        failure: ClientError | None = None
        for attempt in range(HEALTH_ATTEMPTS):
            try:
                await client.system_stats()
            except ClientError as exc:
                failure = exc
                log.info("health check %d of server %s failed: %s", attempt + 1, server_id, exc)
                await trio.sleep(min(30.0, 1.0 * 2**attempt))
                continue
            events, scope = await self._open_events(client)
            await self._tell(HealthAnswered(server_id, True, events, scope))
            return
        await self._tell(HealthAnswered(server_id, False, what=_unanswered_words(failure)))

    async def _open_events(self, client: ComfyUIClient) -> tuple[Any, trio.CancelScope | None]:
        """Open the machine's shared WebSocket (followers fall back to polling without it):
        it runs in the actor's nursery, within a scope the actor cancels when it is lost."""
        if not hasattr(client, "events"):
            return None, None
        events = client.events()
        scope = trio.CancelScope()
        first_attempt = trio.Event()

        async def run() -> None:
            try:
                with scope:
                    await events.run(task_status=_FirstAttempt(first_attempt))
            finally:
                first_attempt.set()  # lost (scope cancelled) before its first attempt

        self._sockets.add(scope)
        self.nursery.start_soon(run)
        # The bound stops this wait, not the socket: it goes on trying (and reconnecting).
        with trio.move_on_after(30):
            await first_attempt.wait()
        return events, scope

    async def _open_events_child(self, server_id: str, client: ComfyUIClient) -> None:
        events, scope = await self._open_events(client)
        await self._tell(HealthAnswered(server_id, True, events, scope))

    async def _on_health(self, msg: HealthAnswered) -> None:
        stale = msg.scope is not None and msg.scope not in self._sockets
        if stale:  # opened by an earlier incarnation: that socket's task ended with it
            msg = HealthAnswered(msg.server_id, msg.healthy)
        elif msg.scope is not None:
            self._sockets.discard(msg.scope)
        self._health.discard(msg.server_id)
        live = self.pool.live.get(msg.server_id)
        opened = live is not None and not stale
        if opened:
            assert live is not None
            live.opening = False
        elif (
            live is not None
            and msg.healthy
            and live.events is None
            and not live.opening
            and live.client is not None
            and msg.server_id not in self._stopping
        ):
            # Its socket ended with the incarnation that opened it: open it again (and
            # lease nothing on it until then).
            live.opening = True
            self.start_soon(self._open_events_child, msg.server_id, live.client)
        m = self.ctx.state.machines.get(msg.server_id)
        gone = m is None or m.status in MACHINE_GONE or msg.server_id in self._stopping
        if msg.events is not None and live is not None and live.events is None and not gone:
            live.events, live.events_scope = msg.events, msg.scope
        elif msg.scope is not None:
            msg.scope.cancel()
        if opened:
            assert live is not None
            self._opened(msg.server_id, live)
        if gone or m is None:
            return
        if not msg.healthy:
            if m.kind == "runcomfy":
                await self._stop(msg.server_id, "unhealthy")
                self._unanswered(m, msg.what)
            return
        if m.kind == "runcomfy" and m.workflow_version is not None:
            self.pool.unanswered.pop(m.workflow_version, None)  # its ComfyUI answers
        if not m.healthy:
            await self.ctx.emit(ev.MachineHealthy(server_id=msg.server_id, at=self.ctx.now()))
        await self._assign()

    # A workflow version whose ComfyUI never answers (issue H10): RunComfy says Ready and
    # bills, every ComfyUI request fails, and the machine is stopped as unhealthy after its
    # health check's ~44 s. It was Ready, so max_launch_attempts (boots that never became
    # Ready) did not count it, and the pool launched the next one at once, in silence, until
    # the job's total_timeout: ~47 paid machines for one job. Such a stop is a failed launch
    # of its version (policy.unanswered_counts), said once on the terminal; at the limit the
    # version's waiting jobs fail with one line and the version is held for
    # policy.UNANSWERED_HOLD (its jobs fail at once, no launch), other versions unaffected.

    def _unanswered(self, m: Any, what: str) -> None:
        """Machine ``m`` (stopping) was Ready but its ComfyUI never answered (``what``)."""
        pool = self.pool
        if not policy.unanswered_counts(kind=m.kind, jobs_served=m.jobs_served):
            return
        version = m.workflow_version or ""
        limit = self.cfg.max_launch_attempts
        before = pool.unanswered.get(version)
        series = policy.unanswered_stop(
            before, what=what, now=trio.current_time(), max_launch_attempts=limit
        )
        pool.unanswered[version] = series
        ready_at = m.service_ready_at if m.service_ready_at is not None else self.ctx.now()
        head = (
            f"machine {m.server_id}: Ready but its ComfyUI does not answer ({what} on"
            f" /system_stats); stopped after {max(0.0, self.ctx.now() - ready_at):.0f} s"
        )
        if series.held_at is None:
            more = (
                f", launching another ({series.count + 1} of {limit})"
                if self._waits_for(version)
                else f" ({series.count} of {limit} in a row for workflow version {version})"
            )
            log.warning("%s%s", head, more)
            return
        if before is None or before.held_at != series.held_at:  # it reached the limit now
            log.warning(
                "%s: %d in a row; workflow version %s is not launched again for %s",
                head,
                series.count,
                version,
                _minutes(policy.UNANSWERED_HOLD),
            )
        else:
            log.warning("%s (workflow version %s is held: not launched)", head, version)
        self._fail_held()

    def _waits_for(self, version: str) -> bool:
        """Whether a job waits that a launch of ``version`` would be for."""
        default = self.pool.default_version or ""
        return any(
            (w.workflow_version or default) == version
            for w in self.pool.waiting.unbound.values()
            if not w.reply.done
        )

    def _held(self, version: str | None) -> bool:
        """Whether ``version`` is held (see _unanswered): launch nothing for it."""
        unanswered = self.pool.unanswered
        if not unanswered:
            return False
        key = version or self.pool.default_version or ""
        return policy.version_held(unanswered.get(key), now=trio.current_time())

    def _fail_held(self) -> None:
        """Fail the waiting jobs of held versions (one line each: why, and what to look at);
        forget the series whose hold is over (a job of that version launches anew)."""
        pool = self.pool
        now = trio.current_time()
        for version, run in list(pool.unanswered.items()):
            if run.held_at is not None and not policy.version_held(run, now=now):
                del pool.unanswered[version]  # its hold is over: a new series may launch
        if not any(run.held_at is not None for run in pool.unanswered.values()):
            return
        default = pool.default_version or ""
        for w in list(pool.waiting.unbound.values()):
            version = w.workflow_version or default
            series = pool.unanswered.get(version)
            if series is None or series.held_at is None:
                continue
            pool.waiting.remove(w)
            left = series.held_at + policy.UNANSWERED_HOLD - now
            w.reply.fail(
                LeaseFailedError(
                    f"no machine: {series.count} machines of workflow version {version} were"
                    f" Ready but their ComfyUI never answered ({series.what} on /system_stats):"
                    " is the workflow version's ComfyUI starting? see its logs on RunComfy"
                    f" (not launched again for {_minutes(left)})",
                    retryable=False,
                    reason="unanswered",
                )
            )

    # ------------------------------------------------------------------ attached ComfyUIs

    def _attached_up(self, server_id: str | None) -> bool:
        """Whether ``server_id`` is an attached ComfyUI taken for up (checked at each poll)."""
        m = self.ctx.state.machines.get(server_id) if server_id is not None else None
        return (
            m is not None
            and m.kind != "runcomfy"
            and m.status not in MACHINE_GONE
            and m.healthy
            and (live := self.pool.live.get(m.server_id)) is not None
            and live.client is not None
        )

    def _check_attached(self, only: str | None = None) -> None:
        """Ask every attached ComfyUI (not launched, not paid for: it may go away at any
        time, with nothing of the cloud to say so) ``/system_stats``, one at a time each
        (``only``: that one, now)."""
        for m in self.ctx.state.machines.values():
            sid = m.server_id
            if only is not None and sid != only:
                continue
            if m.kind == "runcomfy" or m.status in MACHINE_GONE or sid in self._attached_checks:
                continue
            live = self.pool.live.get(sid)
            if live is None or live.client is None:
                continue
            self._attached_checks.add(sid)
            self.start_soon(self._attached_child, sid, live.client, name="machine-attached")

    async def _attached_child(self, server_id: str, client: ComfyUIClient) -> None:
        answered = False
        with trio.move_on_after(ATTACHED_CHECK_TIMEOUT):
            try:
                await client.system_stats()
                answered = True
            except ClientError as exc:
                log.info("health check of %s failed: %s", server_id, type(exc).__name__)
        await self._tell(AttachedChecked(server_id, answered))

    async def _on_attached_checked(self, msg: AttachedChecked) -> None:
        word = self._attached_word.pop(msg.server_id, [])
        try:
            await self._judge_attached(msg, corroborated=bool(word))
        finally:
            for reply in word:  # the jobs judge their failure on what is known now
                reply.set(None)

    async def _judge_attached(self, msg: AttachedChecked, *, corroborated: bool) -> None:
        """An attached ComfyUI that stopped answering is unhealthy (said once): its jobs
        wait for it in their place (each asks it again; a job without a prompt there is
        queued again, one with a prompt there keeps it, to look it up and follow it, or
        download its outputs, once it answers: ``WorkflowActor._reattach_attached``) and
        every job waits, up to its timeouts, for it to answer again; then it is healthy
        (said once) and serves them in their order."""
        sid = msg.server_id
        self._attached_checks.discard(sid)
        m = self.ctx.state.machines.get(sid)
        live = self.pool.live.get(sid)
        if m is None or live is None or m.kind == "runcomfy" or m.status in MACHINE_GONE:
            return
        if msg.answered:
            self._attached_misses.pop(sid, None)
            if self._attached_shaky[sid] > 1:
                self._attached_shaky[sid] -= 1
            else:
                self._attached_shaky.pop(sid, None)
            if not m.healthy and not live.opening:
                log.warning(
                    "%s answers again: the jobs waiting for it go on", attached_name(m.kind, sid)
                )
                self._attached_shaky[sid] = ATTACHED_MISSES
                await self.ctx.emit(ev.MachineHealthy(server_id=sid, at=self.ctx.now()))
                await self._assign()
            return
        self._attached_misses[sid] += 1
        misses = self._attached_misses[sid]
        # One failed check is not enough on its own (a slow answer, a blip): it takes
        # ATTACHED_MISSES in a row (a poll apart, unless a job's failure asked for one),
        # during which jobs are still sent there, and fail, and use their attempts up in
        # retries against a dead ComfyUI (a job failed for good that way). So when a job's
        # own request to it failed too (after its client's retries) and this check, made
        # then, failed as well, two independent failures agree: it is taken for down now,
        # before the job's failure is counted (it waits, or re-attaches, in its place).
        # Not if it came back less than ATTACHED_MISSES answered checks ago: a ComfyUI that
        # answers on and off takes the slow way then, rather than going down and up again
        # at every job's failure (each an event, a terminal line, its jobs moved).
        fast = corroborated and self._attached_shaky[sid] == 0
        if not m.healthy or (misses < ATTACHED_MISSES and not fast):
            return
        log.warning(
            "%s does not answer: its jobs wait for it, in their place (up to their timeouts)",
            attached_name(m.kind, sid),
        )
        reason = (
            f"/system_stats failed {misses} times in a row"
            if misses >= ATTACHED_MISSES
            else "/system_stats failed, and a job's request to it failed too"
        )
        await self.ctx.emit(ev.MachineUnhealthy(server_id=sid, reason=reason, at=self.ctx.now()))
        jobs = list(m.leases)
        # Its jobs see their lease lost and ask again (bound to it, to re-attach, or queued
        # again); the ComfyUI stays, with a new signal for the leases it gives once it
        # answers.
        lost, live.lost = live.lost, LostSignal()
        lost.set()
        # Only cut off (not restarted), it may still run their prompts when it answers
        # again: watched, and stopped there if their job no longer follows them (it
        # re-attaches to them, unless it ended meanwhile, e.g. timed out).
        for job_id in jobs:
            job = self.ctx.state.jobs.get(job_id)
            if job is not None and job.prompt_id is not None:
                self._watch_late_prompt(WatchLatePrompt(sid, job.prompt_id, job_id))

    # ------------------------------------------------------------------ recovery

    def _reconcile(self, reply: Reply[None]) -> None:
        """Recovery: every machine the log says may exist is listed and adopted or closed;
        launch intents without outcome are matched to unknown servers (or closed)."""
        rc = self.ctx.runcomfy
        state = self.ctx.state
        # The jobs the log re-queues once this is over: until they ask, they are the demand
        # of the machines still Starting (adopted, or in the log), never their surplus.
        self.pool.resumed = {
            job.job_id
            for job in state.jobs.values()
            if policy.awaits_machine(state, job) and not self.pool.waiting.of_job(job.job_id)
        }
        doubtful = policy.paid_machines(state)
        if rc is not None:
            self._watch_logged_losses()
        if rc is None:
            self.pool.unreconciled.clear()  # nothing of the log to list
            self.pool.recovering = False
            self._hold_for_unasked()
            reply.set(None)
            return
        # Listed even when the log holds nothing that may bill: a log that lost its last
        # records (cut short, salvaged) does not know the machine its run launched last,
        # which bills on; the listing names every server the log does not know.
        look_only = (
            not doubtful
            and not state.launch_requests
            and not self.pool.lost_watch
            and not self._stopped_in_lease()
            and not any(m.stop_still_up and m.status == M_STOPPED for m in state.machines.values())
        )
        if look_only:
            self.pool.unreconciled.clear()
            self.pool.recovering = False
        self._reconciling = True
        self.start_soon(self._reconcile_child, reply, look_only, name="machine-reconcile")

    def _stopped_in_lease(self) -> list[Any]:
        """Machines the log says stopped whose lease had not ended yet: if a DELETE's 200
        did not take, RunComfy still bills them (it stops a machine at its lease's end)."""
        now = self.ctx.now()
        lease = self.cfg.lease_seconds

        def lease_end(m: Any) -> float:
            if m.estimated_stopping_at is not None:
                return float(m.estimated_stopping_at)
            # Never Ready in the log: a 200 that did not take lets it become Ready after
            # the stop, and RunComfy's lease runs from Ready (as _watch_logged_losses).
            launched = m.launched_at if m.launched_at is not None else m.stopped_at
            return float(max(m.stopped_at, launched + self.cfg.ready_timeout) + lease)

        return [
            m
            for m in self.ctx.state.machines.values()
            if m.kind == "runcomfy"
            and m.status == M_STOPPED
            and m.lost_reason is None  # a loss's own watch: _watch_logged_losses
            and m.stopped_at is not None
            and lease_end(m) > now
        ]

    def _watch_logged_losses(self) -> None:
        """``lost_watch`` is memory only: after a restart the log's losses that may still
        bill (their lease's end, or for one never seen Ready its launch + ready_timeout +
        lease_seconds, not passed) are watched again, so a listing that shows one up
        stops it (_stop_found_after_loss)."""
        now, tnow = self.ctx.now(), trio.current_time()
        for m in self.ctx.state.machines.values():
            if m.kind != "runcomfy" or m.status not in MACHINE_GONE or m.lost_reason is None:
                continue
            end = m.estimated_stopping_at
            if end is None:
                launched = m.launched_at if m.launched_at is not None else now
                end = launched + self.cfg.ready_timeout + self.cfg.lease_seconds
            if end > now:
                self.pool.lost_watch.setdefault(m.server_id, tnow + (end - now))

    async def _reconcile_child(self, reply: Reply[None], look_only: bool = False) -> None:
        try:
            servers = await list_servers_patiently(
                self.ctx.runcomfy, self.cfg.cloud_patience, what="recovery"
            )
        except ClientError as exc:
            await self._tell(Reconciled(None, reply, exc, look_only))
            return
        servers = list(servers) + await self._look_up_unlisted(servers)
        await self._tell(Reconciled(servers, reply, look_only=look_only))

    async def _name_unknown(self, servers: list[Any]) -> None:
        """The servers the recovery's listing shows up that the log does not know
        (``policy.unknown_servers``): logged (``MachineUnknownListed``) and kept for run
        and serve to name; never adopted nor stopped."""
        now = self.ctx.now()
        self.pool.unknown_listed = policy.unknown_servers(
            self.ctx.state, [_listed(s) for s in servers], now=now, table=self.ctx.table
        )
        for u in self.pool.unknown_listed:
            await self.ctx.emit(_unknown_listed(u, now))

    async def _look_up_unlisted(self, servers: list[Any]) -> list[Any]:
        """The machines of the log the recovery's listing left out (past their landing
        grace) that ``GET /servers/{id}`` finds up: a listing may miss a running machine,
        and one taken for "gone while we were down" would be billed short. A 404 or an
        error adds nothing (gone, or not proven: lost as before)."""
        listed = {s.server_id for s in servers}
        now = self.ctx.now()
        rc = self.ctx.require_runcomfy()
        found: list[Any] = []

        async def look_up(sid: str) -> None:
            try:
                server = await rc.status(sid)
            except ClientError:
                return  # gone (404), or not proven: lost as before
            found.append(server)

        # Together, under one patience (each GET may take minutes of retries): the
        # start-up of a resumed run waits for them. One unanswered is lost as before.
        with trio.move_on_after(RECOVERY_LOOKUP_PATIENCE):
            async with trio.open_nursery() as nursery:
                for m in policy.paid_machines(self.ctx.state):
                    if m.server_id not in listed and not _may_be_landing(m, now):
                        nursery.start_soon(look_up, m.server_id)
        return found

    async def _on_reconciled(self, msg: Reconciled) -> None:
        self._reconciling = False
        if msg.servers is None:
            assert msg.error is not None
            if msg.look_only:
                # Nothing of the log was at stake: the resume goes on, unknown servers unnamed.
                log.warning(
                    "could not list RunComfy's machines to look for ones this log does not"
                    " know: %s",
                    msg.error,
                )
                self._hold_for_unasked()
                msg.reply.set(None)
            else:
                msg.reply.fail(msg.error)
            return
        if msg.look_only:
            await self._name_unknown(msg.servers)
            msg.reply.set(None)
            await self._after_reconcile()
            return
        state = self.ctx.state
        by_id = {s.server_id: s for s in msg.servers}
        now = self.ctx.now()
        self.pool.unreconciled.clear()  # listed now: judged on what the cloud says
        self.pool.recovering = False
        self.pool.reconciled_at = trio.current_time()
        doubtful = policy.paid_machines(state)
        for m in doubtful:
            s = by_id.get(m.server_id)
            if s is None and _may_be_landing(m, now):
                # Launched moments before the restart and not listed yet (RunComfy's listing
                # lags): not gone. The listings that follow give it the rest of its grace
                # from the logged launch (_apply_listing), then see it, or lose it.
                continue
            if s is None or s.status in policy.GONE_STATUSES:
                # A stop in flight at the crash: its bill's end is a bound (gone_at says
                # which), said on the terminal beside what it most likely cost.
                in_flight = m.status == "stopping"
                gone = policy.gone_at(m, now, stop_in_flight=in_flight)
                await self._lose(m.server_id, LOST_WHILE_DOWN, gone)
                if in_flight:
                    self._tell_unanswered_stop(m.server_id, now)
                else:
                    self._tell_unknown_end(m.server_id, now)
                continue
            stopping = m.status == "stopping"
            await self._adopt(
                s,
                # A salvaged log may have lost its launch record: that launch intent, still
                # open, is this machine's (else it waits for a server of its own, then fails).
                request_key=policy.launch_of(
                    state, m, _listed(s), unknown=[_listed(u) for u in msg.servers]
                ),
                server_type=m.server_type or self.pool.server_type,
                workflow_version=m.workflow_version,
            )
            if stopping:
                await self._stop(m.server_id, m.stop_reason or "resume")
            else:
                # Draining when the last run went down: stopped now unless a job's prompt
                # still runs there (its slot kept for its re-attach), then once it ends.
                await self._stop_if_drained(m.server_id)
        # A machine the log says stopped but listed up: its DELETE answered 200 and did not
        # take, and the run went down before a listing could see it (the recheck is not in
        # the log). It bills on: recheck it as a stop's 200 is rechecked (DELETE it again,
        # and extend its bill to that answer).
        tnow = trio.current_time()
        for m in self._stopped_in_lease():
            s = by_id.get(m.server_id)
            if s is not None and s.status not in policy.GONE_STATUSES:
                self.pool.recheck[m.server_id] = tnow + STOP_RECHECK
                self.pool.unconfirmed.add(m.server_id)
        # One whose last 200 did not take (logged still_up) and that went while we were
        # down: it billed until it went (at most its lease end), not to that 200.
        for m in list(state.machines.values()):
            s = by_id.get(m.server_id)
            if m.stop_still_up and (s is None or s.status in policy.GONE_STATUSES):
                end = m.estimated_stopping_at
                if s is None and end is not None and now < end:
                    # Left out of this listing: no proof it went (a listing misses a
                    # machine now and then), and it may bill on: watched as after a 200
                    # seen not taking (DELETE again once listed up).
                    self.pool.recheck[m.server_id] = tnow + STOP_RECHECK
                    self.pool.not_taken.add(m.server_id)
                    # Not billed as gone yet: that would end its stop_still_up, and with
                    # it the lookup (_look_up_recheck) that tells whether it went.
                    continue
                await self._bill_went_by_itself(m.server_id)
        if self.pool.recheck:
            await self._recheck_stopped(by_id)
        self._watch_logged_losses()  # the ones just lost too: not listed may be a lag
        await self._stop_found_after_loss(msg.servers, trio.current_time())
        await self._adopt_unknown(msg.servers)
        await self._name_unknown(msg.servers)
        msg.reply.set(None)
        await self._after_reconcile()

    def _tell_unanswered_stop(self, server_id: str, now: float) -> None:
        """One line on the terminal for a machine whose stop was in flight when the run
        went down and that the resume found gone: its bill is a bound (what it most likely
        cost beside it), as ``cost_policy.unanswered_stops`` says."""
        for u in cost_policy.unanswered_stops(self.ctx.state):
            if u.server_id == server_id:
                log.warning("%s", cost_policy.unanswered_stop_line(u, now=now))

    def _tell_unknown_end(self, server_id: str, now: float) -> None:
        """One line on the terminal for a machine the resume found gone with no stop of it
        in the log (one stopped without logging it, on a full disk): its bill is the most it
        can have cost, as ``cost_policy.unknown_ends`` says."""
        for u in cost_policy.unknown_ends(self.ctx.state):
            if u.server_id == server_id:
                log.warning("%s", cost_policy.unknown_end_line(u, now=now))

    def _hold_for_unasked(self) -> None:
        """The recovery is over, its jobs about to ask: see ``MachinePool.unasked``."""
        state, pool = self.ctx.state, self.pool
        pool.unasked = {
            job.job_id
            for job in state.jobs.values()
            if job.status != RETRYING
            and policy.awaits_machine(state, job)
            and not pool.waiting.of_job(job.job_id)
        }
        pool.unasked_heap = [(queue_key(state.jobs[j]), j) for j in pool.unasked]
        heapq.heapify(pool.unasked_heap)
        pool.unasked_until = trio.current_time() + RESUMED_IDLE_HOLD

    async def _after_reconcile(self) -> None:
        """The polls and leases that waited for the recovery's listing."""
        self._hold_for_unasked()
        if self._poll_queued:
            self._poll_queued = False
            self._poll()
        await self._assign()
