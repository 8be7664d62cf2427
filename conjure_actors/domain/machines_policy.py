"""The machine pool's policies: pure functions the MachineActor decides with.

Nothing here does I/O or reads a clock: the actor passes ``now`` and the facts its child
tasks reported (what a listing said, what a launch or a ``DELETE`` answered), and gets back
what to do (events to emit, or a decision it acts on). Each rule is tested on its own.

- *reuse first* (:func:`pick_machine`): a waiting job takes a Ready, healthy machine that
  runs the same workflow version and has a free slot, least loaded first;
- *launch only for unmet demand* (:func:`launches_needed`): waiting jobs minus the slots
  machines still starting will offer, capped by ``max_machines``;
- *short leases* (:func:`should_renew`, :func:`renewed_duration`): renew only while work
  remains and less than ``renew_margin`` is left, so a crashed runtime overspends by at
  most one lease; a machine whose renewal the budget refused takes no new job and stops
  once idle (:func:`renewal_refused`, :func:`lease_takes_job`);
- *idle shutdown* (:func:`idle_expired`), keeping a warm pool (:func:`idle_to_stop`);
- *stop what starts for nobody* (:func:`surplus_starting`): a machine still Starting
  beyond what the waiting jobs need (they were taken by a Ready machine meanwhile, or
  cancelled) is stopped while Starting, which RunComfy does not bill (billing starts at
  Ready), instead of billing from Ready until the idle timeout;
- *hedged launches* (``hedge`` in :func:`launches_needed` and :func:`surplus_starting`): a
  job that needs a machine launches ``hedge`` of them and takes the first Ready; the others
  are stopped while still Starting by the rule above, so a slow start-up rarely delays a job;
  one Ready already when the job is taken (two boots ended within a poll) is stopped as soon
  as nothing waits for it, unless the warm pool keeps it (:func:`hedge_spares_to_stop`);
- *predictive pre-launch* (:func:`arrival_rate`, :func:`prelaunch_target`,
  :func:`prelaunches_needed`): from the rate at which jobs arrived over a sliding window,
  keep ``ceil(rate x service time x factor)`` machines (at most a cap) Ready or Starting,
  so machines start before the jobs that will need them arrive (Little's law: that many
  machines are busy on average); a pre-launched machine nobody takes stops by the idle
  timeout like any other;
- *what a listing means for one machine* (:func:`observe`): Ready, lost, stuck, renewed...;
- *give up on launches that never become Ready* (:func:`launches_exhausted`,
  :func:`launches_in_a_row`: a series whose last failure is :data:`FAILURE_SERIES_GAP` old
  is over);
- *give up on a workflow version whose ComfyUI never answers* (:class:`Unanswered`,
  :func:`unanswered_stop`, :func:`version_held`): machines of it Ready (billed) but stopped
  as unhealthy before serving a job count as failed launches, per version; after
  ``max_launch_attempts`` of them in a row its jobs fail and it is not launched again for
  :data:`UNANSWERED_HOLD`; a series whose last stop is :data:`FAILURE_SERIES_GAP` old
  is over (a later one is a new failure, not the same one going on);
- *how long a launch of unknown outcome may still land* (:func:`landing_grace`): from what
  its answer proves (a 5xx in hand, or no answer at all);
- *the final bill* (:func:`machine_stopped`): billed from the SERVER's Ready time as its
  final record (the ``DELETE``'s answer) says, even when no poll ever saw it Ready; what
  the ``DELETE``'s answer (found or 404) means for it (:func:`bill_after_delete`);
- *the bill of a lost machine* (:func:`lost_bill`): one the log never saw Ready is billed
  by the lease it was launched with, never $0, from the last look that showed it Starting
  (:func:`unseen_ready_seconds`);
- *the machines we pay for* (:func:`paid_machines`): RunComfy machines not stopped or lost;
- *a prompt's slot is its job's* (:func:`prompt_machine`, :func:`reserved_slots`): after a
  restart, a machine the log shows with a job's submitted prompt on it is taken by that job
  (reserved for its re-attach) though the adoption dropped its lease;
- *drain a machine that may run a prompt nobody follows* (:func:`drain_machine`): it takes
  no new job and is stopped once the jobs on it end, as the log says (a resumed run too);
- *a restart's jobs are demand before they ask* (:func:`awaits_machine`): the recovery
  adopts the machines still Starting before the jobs the log re-queues ask for a lease;
  those jobs count as waiting for them, so none is stopped as surplus meanwhile;
- *name what the log does not know, stop none of it* (:func:`unknown_servers`,
  :func:`unknown_server_line`): servers the account lists up that the log does not know
  (another client's, or one launched after the last record of a log cut short) are named
  with their bill and the command that stops them, never stopped by a guess;
- *a salvaged machine answers its launch* (:func:`launch_of`): a machine the log knows from
  its Ready only (its launch record lost) closes the open launch intent it answers;
- *which servers may be a launch in flight's* (:func:`launch_candidates`,
  :func:`ambiguous_launch_reason`): the marker, and nothing the log knows or that was up
  before the launch was asked for; of several, none is adopted, each is named.
"""

from __future__ import annotations

import bisect
import datetime
import enum
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Final

import attrs

from conjure_actors.domain import events as ev
from conjure_actors.domain.errors import CommandRejectedError
from conjure_actors.domain.prices import PriceTable, billed_seconds, cost_micros, format_usd
from conjure_actors.domain.state import (
    INTERRUPTED,
    M_READY,
    M_STARTING,
    M_STOPPED,
    M_STOPPING,
    MACHINE_GONE,
    RESUMABLE_STATUSES,
    RUNNING,
    Job,
    LaunchRequest,
    Machine,
    State,
)

__all__ = [
    "FAILURE_SERIES_GAP",
    "GATEWAY_TIMEOUT",
    "GONE_STATUSES",
    "LAUNCH_LAND_GRACE",
    "LAUNCH_MARKER_SHARE",
    "LAUNCH_MARKER_SPREAD",
    "LAUNCH_TIE_SKEW",
    "NOT_VISIBLE_GRACE",
    "STOP_SETTLE",
    "UNANSWERED_HOLD",
    "Listed",
    "MachineView",
    "Observation",
    "Seen",
    "Unanswered",
    "UnknownServer",
    "ambiguous_launch_reason",
    "arrival_rate",
    "awaits_machine",
    "bill_after_delete",
    "clock_time",
    "drain_machine",
    "earliest_lease_end",
    "gone_at",
    "hedge_spares_to_stop",
    "idle_expired",
    "idle_to_stop",
    "landing_grace",
    "launch_candidates",
    "launch_duration",
    "launch_of",
    "launches_exhausted",
    "launches_in_a_row",
    "launches_needed",
    "lease_takes_job",
    "lost_bill",
    "machine_stopped",
    "matches_intent",
    "observe",
    "paid_machines",
    "pick_machine",
    "prelaunch_target",
    "prelaunches_needed",
    "prompt_machine",
    "renewal_refused",
    "renewed_duration",
    "reserved_slots",
    "series_over",
    "should_renew",
    "surplus_starting",
    "unanswered_counts",
    "unanswered_from_log",
    "unanswered_stop",
    "unknown_server_line",
    "unknown_servers",
    "unseen_ready_seconds",
    "version_held",
]

GONE_STATUSES = frozenset({"Deleting", "Stopping"})
"""RunComfy statuses of a machine on its way out (billing has ended)."""

NOT_VISIBLE_GRACE = 60.0
"""Seconds after a launch during which a 404 means "not listed yet", not "gone"."""

LAUNCH_LAND_GRACE = 180.0
"""Seconds after a ``POST /servers`` went unanswered during which a listing that does not
show its server leaves the launch intent open. The POST answers with the server at once,
but one whose answer we lost (a timeout after the client's 30 s request timeout, a
connection dropped after it was sent, a gateway's 504) may still be creating it on
RunComfy's side, and RunComfy has been seen to answer 404 for a server right after its
launch (``NOT_VISIBLE_GRACE``, 60 s): 30 s + 60 s, doubled for margin (a slow API). A
launch that was answered, if not readably, waits less (:func:`landing_grace`)."""

GATEWAY_TIMEOUT = 504
"""The one 5xx that is no answer from the service: a gateway that gave up waiting for it."""


def landing_grace(answered_status: int | None) -> float:
    """Seconds a launch whose outcome is unknown stays open while listings do not show its
    server (it counts against ``max_machines`` and as the machine its jobs will get
    meanwhile), from what its answer proves. ``answered_status``: the HTTP status RunComfy
    answered the ``POST /servers`` with (a 5xx, or a 2xx that could not be read); ``None``:
    no answer (a timeout, a connection lost after the request was sent).

    No answer, or a gateway's timeout (504): RunComfy may still be creating the server,
    :data:`LAUNCH_LAND_GRACE`. An answer (a 500, 502 or 503 in milliseconds):
    RunComfy is done with the request, so a server it started exists already and only the
    listing's lag (:data:`NOT_VISIBLE_GRACE`) can hide it; waiting the 180 s a lost answer
    needs stalled every queued job for three minutes after one 5xx. A server that shows up
    after all once the intent is closed is adopted, and stopped while Starting (unbilled)
    if no job needs it (:func:`surplus_starting`)."""
    if answered_status is None or answered_status == GATEWAY_TIMEOUT:
        return LAUNCH_LAND_GRACE
    return NOT_VISIBLE_GRACE


@attrs.frozen
class MachineView:
    """What the lease policy needs to know about one machine."""

    server_id: str
    ready: bool
    healthy: bool
    workflow_version: str | None
    leases: int
    stopping: bool = False


def pick_machine(
    machines: Iterable[MachineView],
    workflow_version: str | None,
    jobs_per_machine: int,
    *,
    only_server: str | None = None,
) -> str | None:
    """The machine a waiting job should take now, or ``None``.

    A job with ``workflow_version=None`` runs anywhere (a ComfyUI the user runs); otherwise
    the machine must run that version. Least loaded first, then by id for determinism.
    """
    best: MachineView | None = None
    for m in machines:
        if only_server is not None and m.server_id != only_server:
            continue
        if not (m.ready and m.healthy) or m.stopping or m.leases >= jobs_per_machine:
            continue
        if workflow_version is not None and m.workflow_version not in (None, workflow_version):
            continue
        if best is None or (m.leases, m.server_id) < (best.leases, best.server_id):
            best = m
    return best.server_id if best is not None else None


def launches_needed(
    *,
    waiting: int,
    starting: int,
    alive: int,
    max_machines: int,
    jobs_per_machine: int,
    hedge: int = 1,
) -> int:
    """How many machines to launch now for ``waiting`` jobs that no Ready machine can take.

    ``starting`` machines will each offer ``jobs_per_machine`` slots; ``alive`` counts every
    machine not stopped (starting, ready, stopping), against ``max_machines``. With
    ``hedge`` > 1, each machine needed is launched ``hedge`` times (the first Ready wins).
    """
    wanted = -(-waiting // jobs_per_machine) * hedge - starting  # ceil
    if wanted <= 0:
        return 0
    return max(0, min(wanted, max_machines - alive))


def surplus_starting(*, waiting: int, starting: int, jobs_per_machine: int, hedge: int) -> int:
    """How many machines still Starting to stop: those beyond ``hedge`` per machine the
    ``waiting`` jobs (the ones no Ready machine could take) need.

    A machine is Starting for minutes, and RunComfy bills nothing before Ready, so one no
    waiting job needs any more (its jobs were taken by a Ready machine that freed up, or
    cancelled) is stopped now, for nothing, rather than billed from its Ready time until
    the idle timeout. The machines kept are enough for every job still waiting: a job
    that waits is never left without the machine it caused (they take the first Ready in
    serving order, so which machine is whose does not matter). ``hedge`` 1 included: the
    surplus of a hedged launch is the same rule, with ``hedge`` machines per one needed."""
    return max(0, starting - -(-waiting // jobs_per_machine) * max(1, hedge))


def hedge_spares_to_stop(*, spares: int, idle: int, warm_pool: int) -> int:
    """How many of a hedged launch's ``spares`` (machines launched for a job another machine
    took, Ready now, that never served a job, with no job waiting that they could serve) to
    stop now: all of them, except those the warm pool keeps (``idle``: the Ready machines
    without a job, spares included; ``warm_pool`` of them stay).

    The spare of a hedge is stopped while Starting (:func:`surplus_starting`), unbilled; one
    whose boot ended within a poll interval of the first one's is Ready already when the
    job is taken. Billed from its Ready time, it would bill until the idle timeout for
    nothing: stopped at once, it bills the seconds since its Ready. A machine that served a
    job is no spare: it keeps its idle timeout."""
    return max(0, min(spares, idle - max(0, warm_pool)))


def arrival_rate(arrivals: Sequence[float], *, now: float, window: float) -> float:
    """Arrivals per second over the ``window`` seconds up to ``now``: those in
    ``(now - window, now]`` (``arrivals`` in ascending order); 0 without a window."""
    if window <= 0:
        return 0.0
    first = bisect.bisect_right(arrivals, now - window)
    last = bisect.bisect_right(arrivals, now)
    return max(0, last - first) / window


def prelaunch_target(*, rate: float, service_seconds: float, factor: float, cap: int) -> int:
    """How many machines should be Ready or Starting for jobs arriving at ``rate`` per
    second, each keeping a machine ``service_seconds`` (Little's law: ``rate x service``
    machines are busy on average), times ``factor`` for headroom; at most ``cap``, and none
    when nothing arrives."""
    if rate <= 0 or service_seconds <= 0 or factor <= 0 or cap <= 0:
        return 0
    return min(cap, math.ceil(rate * service_seconds * factor))


def prelaunches_needed(*, target: int, alive: int, max_machines: int) -> int:
    """How many machines to launch now so that the ``alive`` ones (Ready or Starting, and
    launches on their way) reach ``target``, never past ``max_machines``."""
    return max(0, min(target, max_machines) - alive)


LAUNCH_MARKER_SPREAD = 60
"""How many distinct ``estimated_duration`` values a launch picks from at least (the lease,
up to 59 s shorter): the one field of a server we choose that RunComfy echoes back (its
object has no name or tag of ours), so a launch intent recognises its own server among the
account's (another run, the web UI) by it."""

LAUNCH_MARKER_SHARE = 5
"""Percent of a lease its marker may take off when that is more than
:data:`LAUNCH_MARKER_SPREAD` (a lease of over 20 minutes draws from more values: a one-hour
lease from 179, so two runs on one account draw the same three times less often): the
lease stays within that share of its configured length, shorter only (a lease is the bound
a crashed run overspends by, never longer)."""


def launch_duration(lease: int, *, taken: Iterable[int], draw: float) -> int:
    """The ``estimated_duration`` of a new launch: ``lease`` minus 1 s up to the larger of
    59 s and :data:`LAUNCH_MARKER_SHARE` % of it (less 1 s), picked by ``draw`` (uniform in [0, 1),
    drawn by the caller: the domain draws nothing), never longer than the lease (the
    budget's bound holds), and not one an open intent uses. Never the lease itself: the
    round figure another client on the account most likely asks for would make its machine
    look like ours. (Only the intent's own value is matched, so a log written with any
    spread resumes alike.)"""
    spread = max(1, min(max(LAUNCH_MARKER_SPREAD, lease * LAUNCH_MARKER_SHARE // 100), lease // 2))
    used = set(taken)
    free = [lease - k for k in range(1, spread) if lease - k not in used] or [lease]
    return free[min(len(free) - 1, int(draw * len(free)))]


def matches_intent(
    req: LaunchRequest,
    *,
    server_type: str | None,
    workflow_version_id: str | None,
    estimated_duration: int | None,
) -> bool:
    """May a server the log does not know be the one launch intent ``req`` started? Its
    type and workflow version (when listed) must match, and its ``estimated_duration``
    must be the one the intent asked for (:func:`launch_duration`): a server that does not
    echo it is not provably ours, and is never adopted (nor stopped)."""
    return (
        server_type in (None, req.server_type)
        and workflow_version_id in (None, req.workflow_version)
        and estimated_duration is not None
        and estimated_duration == req.estimated_duration
    )


def launches_exhausted(*, failed_in_a_row: int, max_launch_attempts: int) -> bool:
    """True once ``max_launch_attempts`` launches in a row ended without a Ready machine
    (refused, or stuck Starting past ``ready_timeout``): launching again would loop."""
    return failed_in_a_row >= max_launch_attempts


UNANSWERED_HOLD = 600.0
"""Seconds a workflow version is held after ``max_launch_attempts`` of its machines in a row
were Ready but their ComfyUI never answered: its jobs queued meanwhile fail at once, with
no launch; the first one queued after that starts a new series. A time, not "the next job
launches again" (as after boots that never became Ready): a client that resubmits a failed
job at once (the Comfy API's clients, a script's retry loop) would pay a new series of
paid machines per resubmission; held, one version costs at most ``max_launch_attempts``
machines per ten minutes, and a fix made on RunComfy meanwhile (a rebuilt version, a
missing node installed) is tried again without a restart of ``serve``."""


FAILURE_SERIES_GAP = 1800.0
"""Seconds after the last failure of a series of failed launches "in a row" (boots that never
became Ready: :func:`launches_in_a_row`; a version's machines whose ComfyUI never answered:
:func:`unanswered_stop`) after which the series is over and the next failure starts a new
one. The failures of one cause come minutes apart (the next launch goes at once, Ready or
given up within ``ready_timeout``, a health check's ~44 s); two a day apart, with nothing
launched between them, are two failures (a RunComfy incident that passed), and must not
add up to ``max_launch_attempts``: two on Monday made Tuesday's first one fail the waiting
jobs (found by review of issue H10's fix)."""


def launches_in_a_row(
    failed_in_a_row: int, *, last_at: float | None, now: float, gap: float = FAILURE_SERIES_GAP
) -> int:
    """Failed launches in a row after one more at ``now``; ``last_at``: when the one before
    failed (None: none did). A series whose last failure is ``gap`` old starts anew."""
    if last_at is not None and now >= last_at + gap:
        failed_in_a_row = 0
    return failed_in_a_row + 1


@attrs.frozen
class Unanswered:
    """One workflow version's machines that were Ready but whose ComfyUI never answered,
    in a row: ``count`` of them, the last one's failure in words (``what``: "HTTP 503",
    "no connection"...), when (the actor's trio time) the series reached
    ``max_launch_attempts`` (``held_at``; None: not yet), and when its last machine was
    stopped (``last_at``: a series :data:`FAILURE_SERIES_GAP` old is over)."""

    count: int = 0
    what: str = ""
    held_at: float | None = None
    last_at: float | None = None


def unanswered_counts(*, kind: str, jobs_served: int) -> bool:
    """Whether a machine stopped because its ComfyUI did not answer its health check counts
    as a failed launch of its workflow version: a RunComfy machine (billed from Ready) that
    never served a job. One that served jobs had a ComfyUI that answered (it died since:
    not the version's fault); an attached ComfyUI is nobody's launch."""
    return kind == "runcomfy" and jobs_served == 0


def unanswered_stop(
    series: Unanswered | None,
    *,
    what: str,
    now: float,
    max_launch_attempts: int,
    hold: float = UNANSWERED_HOLD,
    gap: float = FAILURE_SERIES_GAP,
) -> Unanswered:
    """The series after one more such machine. ``series``: None, one whose hold is over, or
    one not held whose last machine stopped ``gap`` seconds ago or more, starts anew; one
    still held stays held from when it was (a machine launched before the hold does not lift
    it). It is held from the stop that reaches ``max_launch_attempts``."""
    if series is None or series_over(series, now=now, hold=hold, gap=gap):
        series = Unanswered()
    count = series.count + 1
    held_at = series.held_at
    if held_at is None and launches_exhausted(
        failed_in_a_row=count, max_launch_attempts=max_launch_attempts
    ):
        held_at = now
    return Unanswered(count=count, what=what, held_at=held_at, last_at=now)


def series_over(
    series: Unanswered,
    *,
    now: float,
    hold: float = UNANSWERED_HOLD,
    gap: float = FAILURE_SERIES_GAP,
) -> bool:
    """Whether ``series`` is over at ``now``: its hold ran out, or (not held) its last
    machine stopped ``gap`` seconds ago or more. The next such machine starts a new one."""
    if series.held_at is not None:
        return now >= series.held_at + hold
    return series.last_at is not None and now >= series.last_at + gap


def unanswered_from_log(
    state: State, *, max_launch_attempts: int, hold: float = UNANSWERED_HOLD
) -> dict[str, Unanswered]:
    """Each workflow version's series as the log leaves it, for a restart (the pool keeps it
    in memory: a serve restarted on a version held would otherwise pay for up to
    ``max_launch_attempts`` more machines). Its RunComfy machines in the order their stops
    were decided: one stopped ``unhealthy`` that never served a job nor answered a health
    check is one more of the series (:func:`unanswered_stop`, on the log's clock); one that
    answered or served ends it. ``held_at`` is on the log's clock: the caller moves it to
    its own. The words of the failure are not in the log (``what`` stays empty)."""
    machines: dict[str, list[Machine]] = {}
    for m in state.machines.values():
        if m.kind != "runcomfy" or m.workflow_version is None:
            continue
        machines.setdefault(m.workflow_version, []).append(m)
    out: dict[str, Unanswered] = {}
    for version, ms in machines.items():
        series: Unanswered | None = None
        stops = sorted(
            (m for m in ms if m.stop_requested_at is not None or m.healthy or m.jobs_served),
            key=lambda m: m.stop_requested_at if m.stop_requested_at is not None else math.inf,
        )
        for m in stops:
            if m.stop_reason == "unhealthy" and not m.jobs_served and not m.healthy:
                at = m.stop_requested_at if m.stop_requested_at is not None else 0.0
                series = unanswered_stop(
                    series, what="", now=at, max_launch_attempts=max_launch_attempts, hold=hold
                )
            else:
                series = None  # its ComfyUI answered: the version starts
        if series is not None:
            out[version] = series
    return out


def version_held(series: Unanswered | None, *, now: float, hold: float = UNANSWERED_HOLD) -> bool:
    """True while a version whose series reached the limit must not be launched (its jobs
    fail at once): ``hold`` seconds from the stop that reached it. A machine of the version
    that answers ends the series (the caller drops it), hold or not."""
    return series is not None and series.held_at is not None and now < series.held_at + hold


def should_renew(
    *, now: float, estimated_stopping_at: float | None, renew_margin: float, work_remains: bool
) -> bool:
    """Renew a lease when work remains and less than ``renew_margin`` seconds are left."""
    if not work_remains or estimated_stopping_at is None:
        return False
    return estimated_stopping_at - now <= renew_margin


def renewed_duration(*, now: float, service_ready_at: float, lease_seconds: float) -> int:
    """The new total ``estimated_duration`` (seconds from Ready) for a renewal that keeps the
    machine until ``now + lease_seconds``."""
    return max(1, int(-(-(now + lease_seconds - service_ready_at) // 1)))


def renewal_refused(*, refused_end: float | None, estimated_stopping_at: float | None) -> bool:
    """True while the budget's refusal to renew a machine's lease stands: ``refused_end``,
    the lease end the refused renewal was for, is still the machine's (a renewal since, or
    the budget raised and a renewal approved, moves it)."""
    return refused_end is not None and refused_end == estimated_stopping_at


def lease_takes_job(
    *,
    now: float,
    estimated_stopping_at: float | None,
    renew_margin: float,
    refused_end: float | None,
    renewing: bool,
) -> bool:
    """May a machine take a NEW job, as far as its lease goes?

    Not while the budget's refusal to renew its lease stands (:func:`renewal_refused`): the
    lease runs out with the job on it, RunComfy stops the machine, and the time paid for
    the job is thrown away. Not while less than ``renew_margin`` is left and a renewal the
    budget may refuse is being asked (``renewing``): the answer decides, in a moment."""
    if renewal_refused(refused_end=refused_end, estimated_stopping_at=estimated_stopping_at):
        return False
    if not renewing or estimated_stopping_at is None:
        return True
    return estimated_stopping_at - now >= renew_margin


def idle_expired(*, now: float, idle_since: float | None, idle_timeout: float) -> bool:
    """True when a machine has had no lease for ``idle_timeout`` seconds."""
    return idle_since is not None and now - idle_since >= idle_timeout


def idle_to_stop(
    idle: Sequence[tuple[str, float]], *, now: float, idle_timeout: float, warm_pool: int
) -> list[str]:
    """Which idle machines (``(server_id, idle_since)``, Ready and without work) to stop:
    those idle for ``idle_timeout``, except that ``warm_pool`` idle machines stay (the most
    recently idle, whose lease has longest to run); the longest idle go first."""
    ordered = sorted(idle, key=lambda m: (m[1], m[0]))
    expired = [
        sid
        for sid, since in ordered
        if idle_expired(now=now, idle_since=since, idle_timeout=idle_timeout)
    ]
    keep = max(0, warm_pool - (len(ordered) - len(expired)))
    return expired[: max(0, len(expired) - keep)]


def paid_machines(state: State) -> list[Machine]:
    """The RunComfy machines we pay for that are not stopped or lost, in the log's order
    (what a poll watches, a recovery reconciles and a shutdown stops)."""
    return [
        m for m in state.machines.values() if m.kind == "runcomfy" and m.status not in MACHINE_GONE
    ]


def prompt_machine(job: Job) -> str | None:
    """The machine the log places ``job``'s submitted prompt on, while the job may still
    follow it there (re-attach): running or interrupted, its prompt submitted and not
    rejected. ``None`` otherwise (a resumed job without one is queued for a new attempt)."""
    if job.status not in (RUNNING, INTERRUPTED) or job.server_id is None:
        return None
    if job.prompt_id is None or job.execution in (None, "rejected"):
        return None
    return job.server_id


def reserved_slots(state: State) -> dict[str, set[str]]:
    """Machine -> the jobs whose submitted prompt the log places on it (:func:`prompt_machine`),
    for a restart: the adoption (or attachment) of the machine drops its leases, yet each
    such prompt still fills one of its ``max_jobs`` slots, and its job re-attaches to it.
    Those slots are the re-attaching jobs', not free for another job, until each job leases
    the machine again or moves on. (A job the replayed log still shows leasing the machine
    is listed too: the adoption that follows drops that lease.) Stopped or lost: none."""
    out: dict[str, set[str]] = {}
    for job in state.jobs.values():
        sid = prompt_machine(job)
        if sid is None:
            continue
        m = state.machines.get(sid)
        if m is None or m.status in MACHINE_GONE:
            continue
        out.setdefault(sid, set()).add(job.job_id)
    return out


def awaits_machine(state: State, job: Job) -> bool:
    """Whether ``job``, as the log leaves it, will ask the pool for a new machine once its
    run resumes: unfinished, and not re-attaching to its submitted prompt on a machine that
    is still there (:func:`prompt_machine`; a job whose machine went is queued again).

    A restart adopts the machines still Starting before the resumed jobs ask for a lease
    (they are queued once the recovery's listing is over): until they do, they are the
    demand those machines were launched for, not a reason to stop them as surplus."""
    if job.status not in RESUMABLE_STATUSES:
        return False
    sid = prompt_machine(job)
    if sid is None:
        return True
    m = state.machines.get(sid)
    return m is None or m.status in MACHINE_GONE


def drain_machine(
    state: State, server_id: str, *, reason: str, at: float
) -> ev.MachineDraining | None:
    """The decision that machine ``server_id`` takes no new job and is stopped (``reason``)
    once the jobs on it end. None: it drains already, is stopping or gone, or is no RunComfy
    machine (an attached ComfyUI is not ours to stop)."""
    m = state.machines.get(server_id)
    if (
        m is None
        or m.kind != "runcomfy"
        or m.draining is not None
        or m.status in MACHINE_GONE
        or m.status == M_STOPPING
    ):
        return None
    return ev.MachineDraining(server_id=server_id, reason=reason, at=at)


# ------------------------------------------------------------------------- observation


@attrs.frozen
class Seen:
    """What one listing entry said about a server (the facts, no URL)."""

    status: str
    ready: bool
    service_ready_at: float | None = None
    estimated_stopping_at: float | None = None


class Observation(enum.Enum):
    """What a listing means for one machine the log knows."""

    NOTHING = "nothing"
    NOT_VISIBLE_YET = "not_visible_yet"  # a 404 right after its launch
    LOST = "lost"  # absent (404), or it stopped by itself
    READY = "ready"  # Starting -> Ready: log MachineReady
    STUCK = "stuck"  # Error, or not Ready within ready_timeout: stop it
    UNWELL = "unwell"  # was Ready, now listed neither Ready nor on its way out: stop it
    STOP_AGAIN = "stop_again"  # we stop it, yet it still runs: DELETE again
    RENEWED = "renewed"  # its lease end moved


def observe(
    m: Machine,
    seen: Seen | None,
    *,
    since_launch: float,
    listed_before: bool,
    ready_timeout: float,
    stop_in_flight: bool,
) -> Observation:
    """What to do about machine ``m`` given its listing entry ``seen`` (``None``: absent).

    ``since_launch``: seconds since we launched (or adopted) it; ``listed_before``: a listing
    showed it already (from then on, absent means gone).
    """
    if stop_in_flight:
        return Observation.NOTHING
    if seen is None:
        if m.status == M_STARTING and not listed_before and since_launch < NOT_VISIBLE_GRACE:
            return Observation.NOT_VISIBLE_YET
        return Observation.LOST
    if m.status == M_STARTING:
        if seen.ready and seen.service_ready_at is not None:
            return Observation.READY
        if seen.status == "Error" or since_launch >= ready_timeout:
            return Observation.STUCK
        return Observation.NOTHING
    if m.status == M_STOPPING:
        return Observation.NOTHING if seen.status in GONE_STATUSES else Observation.STOP_AGAIN
    if m.status == M_READY:
        if not seen.ready:
            # Deleting/Stopping: it stopped by itself (billing ended). Any other status
            # (Error, Initializing, an unknown string: an open string) is a machine still
            # there, so maybe still billing: it must be stopped, not forgotten.
            return Observation.LOST if seen.status in GONE_STATUSES else Observation.UNWELL
        if seen.estimated_stopping_at is not None and (
            m.estimated_stopping_at is None
            or abs(seen.estimated_stopping_at - m.estimated_stopping_at) > 1e-6
        ):
            return Observation.RENEWED
    return Observation.NOTHING


STOP_SETTLE: Final = 30.0
"""Seconds after a stop's decision (``MachineStopping``, written just before its ``DELETE``
is sent) within which a ``DELETE`` that stopped the machine at its first attempt was
answered, billing ending there: one request's timeout (the RunComfy client's; the
account's rate limit holds stops decided together a second apart, well within it). What
:func:`gone_at` bills a machine a resume finds gone before its lease's end, with its stop
unanswered in the log."""


def gone_at(m: Machine, now: float, *, stop_in_flight: bool = False) -> float:
    """When billing ended at the latest for a machine found gone at ``now`` (nobody says: a
    gone machine is a 404): ``now``, or its lease's end if that came first (RunComfy stops
    it then).

    ``stop_in_flight``: a resume finds gone a machine whose stop the log shows decided
    before the crash, and not answered. ``MachineStopping`` is written before the
    ``DELETE`` is sent, and billing ended at that ``DELETE``'s answer, after the decision
    (a bill to the decision was under the cloud's by that wait).

    - Found gone before its lease's end, it was stopped, by that ``DELETE``: billed to
      :data:`STOP_SETTLE` past the decision (or to ``now``, if sooner). Not to ``now``: that
      would add the time the run was down, minutes to most of a lease, to every such bill
      for the rare one that went otherwise (a ``DELETE`` retried through 429s for longer,
      or answered 429 and never sent again, and a machine that went by itself before the
      resume); nothing in the log or the listing tells those apart.
    - Found gone only after its lease's end, nothing tells that the ``DELETE`` left: it
      waits for the account's rate limit (a second a request: the third of three stops
      decided together leaves two seconds after the decision), or a 429 answered it and
      the process died before sending it again. It may have billed to its lease's end,
      and is billed so: the budget's safe side, though it most likely cost what it had by
      the decision (``cost_policy.unanswered_stops`` says both).

    Never seen Ready, its lease ends at the earliest its launch's duration after the launch
    (:func:`earliest_lease_end`)."""
    until = now
    if m.estimated_stopping_at is not None:
        until = min(until, m.estimated_stopping_at)
    if not stop_in_flight or m.status != M_STOPPING or m.stop_requested_at is None:
        return until
    lease_end = earliest_lease_end(m)
    if lease_end is None or now < lease_end:
        until = min(until, m.stop_requested_at + STOP_SETTLE)
    return until


def earliest_lease_end(m: Machine) -> float | None:
    """When ``m``'s lease ends (RunComfy stops it then), at the earliest: its
    ``estimated_stopping_at``, or, never seen Ready, its launch's duration after the launch
    (it bills from Ready, later); None if the log does not tell."""
    if m.estimated_stopping_at is not None:
        return m.estimated_stopping_at
    if m.launched_at is not None and m.launch_duration is not None:
        return m.launched_at + m.launch_duration
    return None


# ------------------------------------------------------------------------------ billing


def machine_stopped(
    state: State,
    server_id: str,
    *,
    stopped_at: float,
    server_ready_at: float | None,
    table: PriceTable,
    at: float,
) -> ev.MachineStopped:
    """The final bill of a machine whose ``DELETE`` returned 200 at ``stopped_at``.

    ``server_ready_at`` is the server's own Ready time from its final record (``None``: it
    never became Ready). It wins over the logged one: a machine stopped while the log still
    said Starting, or that became Ready between two polls, was billed from that moment.
    Without a final record (``server_ready_at`` unknown), pass the logged one.
    """
    m = state.machines.get(server_id)
    if m is None:
        raise CommandRejectedError(f"no machine {server_id}")
    if m.status == M_STOPPED and m.lost_reason is None:
        # A machine we took for lost (and billed to that moment) that a listing showed up
        # after all, then stopped: this bill, from its final record, corrects that one.
        raise CommandRejectedError(f"machine {server_id} is already stopped")
    ready_at = server_ready_at if server_ready_at is not None else m.service_ready_at
    rate = m.rate_micros_per_hour
    version = m.price_table_version
    if ready_at is not None and not rate:
        if m.server_type is None:
            raise CommandRejectedError(f"machine {server_id} has no server type to price")
        rate, version = table.rate(m.server_type), table.version
    seconds = billed_seconds(ready_at, stopped_at)
    return ev.MachineStopped(
        server_id=server_id,
        stopped_at=stopped_at,
        billed_seconds=seconds,
        cost_micros=cost_micros(rate, seconds),
        service_ready_at=ready_at,
        rate_micros_per_hour=rate if ready_at is not None else 0,
        price_table_version=version if ready_at is not None else "",
        at=at,
    )


def unseen_ready_seconds(
    m: Machine, gone_at: float, *, lease_seconds: float, seen_starting_at: float | None = None
) -> int:
    """The seconds to bill a machine the log never saw Ready, found gone at ``gone_at``.

    It may have become Ready at any moment after the last look that showed it Starting
    (``seen_starting_at``: a listing or a lookup of the runtime that watched it; RunComfy
    bills nothing before Ready, so nothing before that look), then billed until RunComfy
    stopped it at the end of its lease (the ``estimated_duration`` its launch asked for:
    nobody renews a lease it never saw) or until it vanished, before ``gone_at``. The most
    that is: its lease, and no more than the time from that look to ``gone_at``. Without
    such a look (gone while the runtime was down: nobody looked since the launch), from its
    launch. A lease that ran out is billed exactly; one that vanished sooner, or never
    became Ready, over by at most the time between two looks (the budget's safe side).
    ``lease_seconds`` (the configured lease, which bounds every launch's duration) stands
    in for a machine whose launch duration the log lacks."""
    lease = m.launch_duration if m.launch_duration is not None else math.ceil(lease_seconds)
    since = m.launched_at
    if seen_starting_at is not None and (since is None or seen_starting_at > since):
        since = seen_starting_at
    if since is None:
        return lease
    return min(lease, billed_seconds(since, gone_at))


def lost_bill(
    state: State,
    server_id: str,
    *,
    gone_at: float,
    lease_seconds: float,
    table: PriceTable,
    at: float,
    seen_starting_at: float | None = None,
) -> ev.MachineStopped:
    """The final bill of a machine lost (vanished, stopped by itself, gone while the
    runtime was down: no ``DELETE`` of ours answered) and gone by ``gone_at``
    (:func:`gone_at`). Seen Ready: from its Ready time to ``gone_at``. Never seen Ready:
    it may have billed all the same (:func:`unseen_ready_seconds`, from the last look
    that showed it Starting, ``seen_starting_at``), so it is priced by the table, with no
    Ready time (``service_ready_at`` None: nobody knows it)."""
    m = state.machines.get(server_id)
    if m is None:
        raise CommandRejectedError(f"no machine {server_id}")
    if m.service_ready_at is not None or m.server_type is None:
        return machine_stopped(
            state, server_id, stopped_at=gone_at, server_ready_at=None, table=table, at=at
        )
    seconds = unseen_ready_seconds(
        m, gone_at, lease_seconds=lease_seconds, seen_starting_at=seen_starting_at
    )
    rate = m.rate_micros_per_hour or table.rate(m.server_type)
    version = m.price_table_version or table.version
    return ev.MachineStopped(
        server_id=server_id,
        stopped_at=gone_at,
        billed_seconds=seconds,
        cost_micros=cost_micros(rate, seconds),
        rate_micros_per_hour=rate,
        price_table_version=version,
        at=at,
    )


def bill_after_stop_again(
    state: State,
    server_id: str,
    *,
    found: bool,
    answered_at: float,
    server_ready_at: float | None,
    table: PriceTable,
    at: float,
) -> ev.MachineStoppedAgain | None:
    """The bill of a machine logged stopped that was still up, once a ``DELETE`` sent again
    answered at ``answered_at`` (``found`` False: 404, gone at :func:`gone_at`): from its
    Ready time (the logged one; else ``server_ready_at``, that answer's) to then. None when
    that ends no later than the logged stop (nothing to extend) or the machine is not
    logged stopped."""
    m = state.machines.get(server_id)
    if m is None or m.status != M_STOPPED or m.stopped_at is None:
        return None
    stopped_at = answered_at if found else gone_at(m, answered_at)
    if stopped_at <= m.stopped_at:
        return None
    ready_at, rate, version = m.service_ready_at, m.rate_micros_per_hour, m.price_table_version
    new_ready = ready_at is None and server_ready_at is not None
    if new_ready:
        if m.server_type is None:
            return None  # nothing to price it by (never the case for a machine we launched)
        ready_at = server_ready_at
        rate, version = table.rate(m.server_type), table.version
    seconds = billed_seconds(ready_at, stopped_at)
    return ev.MachineStoppedAgain(
        server_id=server_id,
        stopped_at=stopped_at,
        billed_seconds=seconds,
        cost_micros=cost_micros(rate, seconds) if ready_at is not None else 0,
        found=found,
        service_ready_at=ready_at if new_ready else None,
        rate_micros_per_hour=rate if new_ready else 0,
        price_table_version=version if new_ready else "",
        at=at,
    )


def bill_after_delete(
    state: State,
    server_id: str,
    *,
    found: bool,
    answered_at: float,
    server_ready_at: float | None,
    table: PriceTable,
    at: float,
    missing_since: float | None = None,
) -> ev.MachineStopped:
    """The final bill once the stop's ``DELETE`` answered at ``answered_at``.

    ``found``: the server was there and billing ended then, from ``server_ready_at`` (its
    final record; ``None``: the logged Ready time). Not found (404): it was gone before the
    ``DELETE`` arrived, at a moment nobody tells (:func:`gone_at`), billed from the logged
    Ready time to the first listing that left it out (``missing_since``, the log's clock)
    when there is one, as a machine that vanished is (its lookup's 404 proves it absent
    then too), else to the answer. The answer may come long after (the ``DELETE`` retried
    through rate limits or an outage): billed to it, a vanished machine was billed for
    time the cloud did not bill.
    """
    m = state.machines.get(server_id)
    if m is None:
        raise CommandRejectedError(f"no machine {server_id}")
    gone = answered_at if missing_since is None else min(answered_at, missing_since)
    return machine_stopped(
        state,
        server_id,
        stopped_at=answered_at if found else gone_at(m, gone),
        server_ready_at=server_ready_at if found else None,
        table=table,
        at=at,
    )


# ------------------------------------------------------------------- the account's others


@attrs.frozen
class Listed:
    """What one listing entry said about a server, as the recovery judges it (no URL)."""

    server_id: str
    status: str
    server_type: str | None = None
    workflow_version_id: str | None = None
    estimated_duration: int | None = None
    service_ready_at: float | None = None
    estimated_stopping_at: float | None = None


@attrs.frozen
class UnknownServer:
    """A server the account lists up (it may bill) that the log does not know.

    ``cost_micros``: what it has cost so far by the price table (None: not Ready yet, so
    not billed, or a server type the table has no price for)."""

    server_id: str
    status: str
    server_type: str | None
    service_ready_at: float | None
    estimated_stopping_at: float | None
    cost_micros: int | None


def unknown_servers(
    state: State, listed: Iterable[Listed], *, now: float, table: PriceTable
) -> list[UnknownServer]:
    """The listed servers a recovery names as unknown: not a machine of the log (in any
    status: one it stopped has its own recheck), not on its way out (billing has ended),
    and not one an open launch intent of the log may still adopt (it echoes that intent's
    marker: the listings that follow decide, see ``matches_intent``).

    They are another client's, or one the crashed run launched after the log's last
    record (a log cut short, or salvaged, lost that launch): nothing on the server tells
    them apart (its object carries no name of ours, and the marker of a launch, its
    ``estimated_duration``, is drawn from a range every run of this program with the same
    lease uses), so a recovery names them and never stops them: stopping another
    client's machine would end its work, while ours bills at most until its lease ends
    (nobody renews it)."""
    found: list[UnknownServer] = []
    for s in listed:
        if s.server_id in state.machines or s.status in GONE_STATUSES:
            continue
        if any(
            launch_candidates(req, [s], known=state.machines, first_listed={})
            for req in state.launch_requests.values()
        ):
            continue
        cost: int | None = None
        if s.service_ready_at is not None and s.server_type in table.hourly_micros:
            cost = cost_micros(
                table.hourly_micros[s.server_type], billed_seconds(s.service_ready_at, now)
            )
        found.append(
            UnknownServer(
                server_id=s.server_id,
                status=s.status,
                server_type=s.server_type,
                service_ready_at=s.service_ready_at,
                estimated_stopping_at=s.estimated_stopping_at,
                cost_micros=cost,
            )
        )
    return found


def clock_time(at: float, now: float) -> str:
    """``15:12:24 UTC`` (with its date when not ``now``'s day)."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    same_day = moment.date() == datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    return moment.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC")


def unknown_server_line(u: UnknownServer, *, now: float) -> str:
    """The one line that names an unknown server (:func:`unknown_servers`): what it is,
    what it has cost, whose it may be, and the command that stops it."""
    kind = f" ({u.server_type})" if u.server_type else ""
    if u.service_ready_at is not None:
        billed = "cost not known" if u.cost_micros is None else f"{format_usd(u.cost_micros)}"
        how = f"{u.status} since {clock_time(u.service_ready_at, now)}, {billed} so far"
        if u.estimated_stopping_at is not None:
            how += f", billing until {clock_time(u.estimated_stopping_at, now)} unless stopped"
    else:
        how = f"{u.status}, not billed until Ready"
    return (
        f"RunComfy lists a machine this log does not know: {u.server_id}{kind}, {how}:"
        " another client's, or one the run launched after the log's last record (a log cut"
        " short loses it); if it is not another client's,"
        f" `python -m conjure_actors machine down --server-id {u.server_id}` stops it"
    )


LAUNCH_TIE_SKEW: Final = 60.0
"""Seconds a server's Ready time (its clock) may read before the launch intent's time (ours)
and still be that launch's machine: the two clocks differ a little."""


def launch_of(
    state: State, m: Machine, seen: Listed | None, *, unknown: Iterable[Listed] = ()
) -> str | None:
    """The open launch intent whose machine ``m`` is, for a machine of the log whose launch
    record the log lost (``m.request_key`` None: a salvaged log keeps its Ready, not its
    ``MachineLaunched``): adopting it closes that intent, instead of the intent waiting for
    a server of its own until its landing grace ends and failing then.

    An intent is ``m``'s when its server type and workflow version match ``m``'s (as the
    log or ``seen``, its listing entry, says) and it was logged before ``m`` was Ready;
    of several, the one whose marker (``estimated_duration``) ``m`` echoes (in its
    listing, or in its logged Ready: its lease end minus its Ready time, before any
    renewal). One intent matching without a marker is ``m``'s unless an ``unknown``
    listed server echoes that intent's marker (that one is its server)."""
    if m.request_key is not None or not state.launch_requests:
        return None
    server_type = m.server_type or (seen.server_type if seen is not None else None)
    version = m.workflow_version or (seen.workflow_version_id if seen is not None else None)
    ready_at = m.service_ready_at
    if ready_at is None and seen is not None:
        ready_at = seen.service_ready_at
    candidates = [
        req
        for req in state.launch_requests.values()
        if server_type in (None, req.server_type)
        and version in (None, req.workflow_version)
        and (ready_at is None or req.at <= ready_at + LAUNCH_TIE_SKEW)
    ]
    marks = set()
    if seen is not None and seen.estimated_duration is not None:
        marks.add(seen.estimated_duration)
    if m.service_ready_at is not None and m.estimated_stopping_at is not None:
        marks.add(round(m.estimated_stopping_at - m.service_ready_at))
    marked = [req for req in candidates if req.estimated_duration in marks]
    if len(marked) == 1:
        return marked[0].request_key
    if marked or len(candidates) != 1:
        return None
    req = candidates[0]
    others = [
        s
        for s in unknown
        if s.server_id not in state.machines
        and matches_intent(
            req,
            server_type=s.server_type,
            workflow_version_id=s.workflow_version_id,
            estimated_duration=s.estimated_duration,
        )
    ]
    return None if others else req.request_key


def launch_candidates(
    req: LaunchRequest,
    listed: Iterable[Listed],
    *,
    known: Container[str],
    first_listed: Mapping[str, float],
) -> list[Listed]:
    """The listed servers that may be the one launch intent ``req`` started (a launch in
    flight: its answer lost, or the log ended before it): those that echo its marker
    (:func:`matches_intent`), less every server that provably is not its:

    - one the log knows (``known``: its machines, in any status): it is another launch's;
    - one on its way out (``GONE_STATUSES``): it bills no more, nothing to adopt;
    - one a listing showed before the intent was logged (``first_listed``: server id ->
      when, the log's clock): no POST of that intent had been sent yet;
    - one Ready before the intent was logged (its ``service_ready_at``, RunComfy's clock,
      more than :data:`LAUNCH_TIE_SKEW` before ``req.at``): a machine is Ready minutes
      after its launch, never before it.

    In listing order. One candidate is adopted for the intent; of several, none is (see
    :func:`ambiguous_launch_reason`): adopting another client's machine would use it and
    stop it under that client."""
    return [
        s
        for s in listed
        if s.server_id not in known
        and s.status not in GONE_STATUSES
        and matches_intent(
            req,
            server_type=s.server_type,
            workflow_version_id=s.workflow_version_id,
            estimated_duration=s.estimated_duration,
        )
        and first_listed.get(s.server_id, req.at) >= req.at
        and (s.service_ready_at is None or s.service_ready_at >= req.at - LAUNCH_TIE_SKEW)
    ]


def ambiguous_launch_reason(server_ids: Sequence[str]) -> str:
    """Why a launch intent whose marker several servers echo (:func:`launch_candidates`)
    is closed with none adopted, naming each and the command that stops the one that is
    this run's (it bills until its lease ends otherwise)."""
    ids = " or ".join(server_ids)
    return (
        f"{len(server_ids)} servers matched; not provably ours: {ids} may be this launch's"
        " machine, billing until its lease ends unless stopped:"
        " `python -m conjure_actors machine down --server-id ID` stops the one that is"
        " yours (`status` lists them)"
    )
