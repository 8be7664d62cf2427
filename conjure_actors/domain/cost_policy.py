"""The ledger's policies: pure functions the CostActor decides with.

Spending is computed from the log's facts only (each machine's rate and server-side
``service_ready_at``, each stopped machine's final bill), so the ledger a replay rebuilds is
the one the user saw. The *commitment* adds what RunComfy will bill even if we stop deciding
now: the rest of every Ready machine's lease, and one lease per machine starting or being
launched. Budget rule:

- a launch (or a lease renewal) is approved only if ``spent + committed + one lease`` stays
  within the limit: since RunComfy stops a machine by itself when its lease ends, even a
  crashed runtime cannot spend more than the limit plus one lease;
- a warning once spending reaches ``warn_fraction`` of the limit (``budget.warn_fraction``);
- at 100% the budget is exceeded: every machine is stopped, and no waiting job is leased a
  machine (:func:`lease_refused`).

Spending between two events is known in advance (each running machine's rate, its lease's
end): :func:`budget_due_at` says when the next budget event falls due, so the CostActor looks
then, not at a fixed period that would see the limit up to that period late.

A bill is the most RunComfy can have billed when nobody tells when a machine stopped: one a
resume finds gone while its stop was in flight (:func:`unanswered_stops`) is billed to when
it was found gone, or its lease's end, and says so beside the figure it most likely cost;
one a resume finds gone with no stop of it in the log (:func:`unknown_ends`: a stop made
without logging it, on a full disk) likewise. :func:`at_most_bills` names them all.
"""

from __future__ import annotations

import enum
import math

import attrs

from conjure_actors.domain import events as ev
from conjure_actors.domain.machines_policy import STOP_SETTLE, clock_time, earliest_lease_end
from conjure_actors.domain.prices import cost_micros, format_usd, machine_cost_micros
from conjure_actors.domain.state import (
    LOST_WHILE_DOWN,
    M_READY,
    M_STARTING,
    M_STOPPED,
    M_STOPPING,
    MACHINE_GONE,
    Budget,
    State,
    machine_cost_at,
)

__all__ = [
    "BudgetLevel",
    "RefusalsTold",
    "Reservation",
    "StartBudget",
    "UnansweredStop",
    "UnknownEnd",
    "accruals",
    "at_most_bills",
    "budget_due_at",
    "budget_events",
    "budget_level",
    "budget_micros",
    "check_launch",
    "check_renewal",
    "committed_micros",
    "launch_allowed",
    "lease_cost_micros",
    "lease_refused",
    "limit_reached",
    "renewal_estimate",
    "request_keys",
    "reserved_micros",
    "settle_reservations",
    "spent_micros",
    "start_budget",
    "unanswered_stop_line",
    "unanswered_stops",
    "unknown_end_line",
    "unknown_ends",
]


class BudgetLevel(enum.Enum):
    """Where spending stands against the limit."""

    OK = "ok"
    WARN = "warn"
    EXCEEDED = "exceeded"


def budget_micros(usd: float | None) -> int | None:
    """A budget in USD (user input: a flag, the config, ``PUT /api/conjure/budget``) as the
    integer micro-USD the ledger compares with, rounded to the nearest micro; ``None`` is no
    limit. The one conversion every path uses, so a resume never sees a "changed" budget."""
    if usd is None:
        return None
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"not a budget: {usd!r}")
    return round(usd * 1_000_000)


class StartBudget(enum.Enum):
    """What a start does with the budget it was configured with (:func:`start_budget`)."""

    NONE = "none"
    """None configured: the log's budget is kept."""
    KEEP = "keep"
    """The same as the log's last start's: the log's budget (set at run time) is kept."""
    SET = "set"
    """Another than the log's last start's, or none recorded: set (``BudgetSet`` with
    ``from_start``, also when it is the log's budget already: that records it)."""


def start_budget(budget: Budget, configured: int | None) -> StartBudget:
    """A start on a log, configured with the budget ``configured`` (micro-USD; None: no
    ``--budget``), and the log's ``budget``: keep the log's, or set the configured one?

    A restart by a supervisor passes the flags it always passes: a budget changed at run
    time (``PUT /api/conjure/budget``) must outlive it. So the configured budget wins only
    when the operator changed it since the log's last start given one (the log records that
    one: :attr:`Budget.start_micros`); a log that does not record it (written before it
    was) keeps the rule of its time: the configured one wins."""
    if configured is None:
        return StartBudget.NONE
    if budget.start_micros is not None and budget.start_micros == configured:
        return StartBudget.KEEP
    return StartBudget.SET


def lease_cost_micros(rate_micros_per_hour: int, lease_seconds: float) -> int:
    """The cost of one lease: what a launch commits to at most."""
    return cost_micros(rate_micros_per_hour, int(-(-lease_seconds // 1)))


def spent_micros(state: State, now: float) -> int:
    """Cost so far: every machine's final bill, or its cost up to ``now`` while it runs."""
    return sum(machine_cost_at(m, now) for m in state.machines.values())


def committed_micros(state: State, now: float, *, lease_micros: int) -> int:
    """What RunComfy will bill beyond ``now`` even if we stop deciding: the rest of each
    Ready machine's lease, plus ``lease_micros`` per machine starting or being launched."""
    total = 0
    starting = len(state.launch_requests)
    for m in state.machines.values():
        if m.kind != "runcomfy":
            continue
        if m.status == M_STARTING:
            starting += 1
            continue
        billing = m.status in (M_READY, M_STOPPING) or m.stop_still_up  # (did not take)
        if not billing or m.service_ready_at is None:
            continue
        end = m.estimated_stopping_at
        if end is None or end <= now:
            continue
        full = machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, end)
        so_far = machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, now)
        total += full - so_far
    return total + lease_micros * starting


@attrs.frozen
class Reservation:
    """A launch approved for ``job_id`` whose ``MachineLaunchRequested`` is not yet seen:
    its ``estimate`` counts as committed until then, or until ``expires_at`` (a lost reply
    never blocks launches for good)."""

    job_id: str
    estimate: int
    expires_at: float


def request_keys(state: State) -> set[str]:
    """Every launch request the state knows: open ones and those a machine came from."""
    keys = set(state.launch_requests)
    keys.update(m.request_key for m in state.machines.values() if m.request_key is not None)
    return keys


def settle_reservations(
    reservations: list[Reservation], *, new_launches: int, now: float
) -> list[Reservation]:
    """The reservations still pending: each of ``new_launches`` launches logged since the
    last look uses the oldest approval (the pool launches in the order it was approved),
    then those expired at ``now`` go."""
    return [r for r in reservations[max(0, new_launches) :] if r.expires_at > now]


def reserved_micros(reservations: list[Reservation]) -> int:
    """What the pending approvals commit."""
    return sum(r.estimate for r in reservations)


def launch_allowed(*, limit: int | None, spent: int, committed: int, estimate: int) -> bool:
    """May we commit ``estimate`` more micros? Always, without a limit."""
    if limit is None:
        return True
    return spent + committed + estimate <= limit


def budget_level(*, spent: int, limit: int | None, warn_fraction: float) -> BudgetLevel:
    """``EXCEEDED`` at or over the limit, ``WARN`` at ``warn_fraction`` of it, else ``OK``."""
    if limit is None:
        return BudgetLevel.OK
    if spent >= limit:
        return BudgetLevel.EXCEEDED
    if spent >= warn_fraction * limit:
        return BudgetLevel.WARN
    return BudgetLevel.OK


def check_launch(
    state: State,
    job_id: str,
    *,
    estimate: int,
    lease_micros: int,
    now: float,
    at: float,
    reserved: int = 0,
) -> ev.LaunchRefused | None:
    """``None`` if a launch committing ``estimate`` fits the budget, else the refusal.
    ``reserved``: the estimates of launches approved but not yet in ``state`` (an approval
    is answered before the pool logs its launch); they count as committed."""
    limit = state.budget.limit_micros
    if limit is None:
        return None
    spent = spent_micros(state, now)
    committed = committed_micros(state, now, lease_micros=lease_micros) + reserved
    if not state.budget.exceeded and launch_allowed(
        limit=limit, spent=spent, committed=committed, estimate=estimate
    ):
        return None
    return ev.LaunchRefused(
        job_id=job_id,
        estimate_micros=estimate,
        remaining_micros=limit - spent - committed,
        at=at,
    )


def renewal_estimate(state: State, server_id: str, *, seconds: float, now: float) -> int:
    """What renewing ``server_id``'s lease to run ``seconds`` from ``now`` commits more.

    The time past the lease's current end: the rest of the lease is already committed
    (:func:`committed_micros`), so counting a whole lease on top would refuse, near the
    budget, a renewal that fits (and the machine's job would lose it when the lease runs
    out). A machine not Ready in its lease: a whole lease of ``seconds``."""
    m = state.machines.get(server_id)
    if m is None:
        return 0
    end = m.estimated_stopping_at
    if m.status == M_READY and m.service_ready_at is not None and end is not None and end > now:
        rate, ready = m.rate_micros_per_hour, m.service_ready_at
        until = now + math.ceil(seconds)
        extra = machine_cost_micros(rate, ready, until) - machine_cost_micros(rate, ready, end)
        return max(0, extra)
    return lease_cost_micros(m.rate_micros_per_hour, seconds)


@attrs.define
class RefusalsTold:
    """The jobs whose refused launch was logged, on the figures it was refused on.

    The pool asks for a launch again while a job waits (at every poll, and on other news);
    a refusal is news only for a job not yet told on the same figures (what a lease needs,
    what is left after spent and committed, the limit). While machines run in their leases
    the figures hold (what one spends, its lease's rest no longer commits); they move when
    a machine starts, stops, or is renewed, or the budget is set."""

    figures: tuple[int, int, int | None] | None = None
    jobs: set[str] = attrs.Factory(set)

    def is_news(self, refused: ev.LaunchRefused, limit: int | None) -> bool:
        """Is ``refused`` (under ``limit``) to be logged? Remembers it if so."""
        figures = (refused.estimate_micros, refused.remaining_micros, limit)
        if figures != self.figures:
            self.figures, self.jobs = figures, set()
        if refused.job_id in self.jobs:
            return False
        self.jobs.add(refused.job_id)
        return True

    def forget(self) -> None:
        """A launch was granted, or the budget set: the next refusal is news."""
        self.figures, self.jobs = None, set()


def check_renewal(
    state: State,
    server_id: str,
    *,
    seconds: float,
    lease_micros: int,
    now: float,
    reserved: int = 0,
) -> bool:
    """May ``server_id``'s lease be renewed to run ``seconds`` from ``now``? (what it adds:
    :func:`renewal_estimate`; ``reserved``: as for :func:`check_launch`.)"""
    limit = state.budget.limit_micros
    if limit is None:
        return True
    if server_id not in state.machines or state.budget.exceeded:
        return False
    return launch_allowed(
        limit=limit,
        spent=spent_micros(state, now),
        committed=committed_micros(state, now, lease_micros=lease_micros) + reserved,
        estimate=renewal_estimate(state, server_id, seconds=seconds, now=now),
    )


def starting_over_budget(
    state: State, *, lease_micros: int, now: float, reserved: int = 0
) -> list[str]:
    """The machines still Starting (unbilled: RunComfy bills from Ready, so free to stop)
    whose first lease the budget no longer covers, after a change of it: the most recently
    launched first, as many as it takes for what is spent and committed (each Starting one:
    a lease) to fit the limit again. None without a limit or once it is exceeded (then
    every machine stops)."""
    limit = state.budget.limit_micros
    if limit is None or state.budget.exceeded:
        return []
    over = (
        spent_micros(state, now)
        + committed_micros(state, now, lease_micros=lease_micros)
        + reserved
        - limit
    )
    stop: list[str] = []
    for m in reversed(list(state.machines.values())):
        if over <= 0:
            break
        if m.kind == "runcomfy" and m.status == M_STARTING:
            stop.append(m.server_id)
            over -= lease_micros
    return stop


MIN_PARTIAL_RENEWAL = 10
"""Seconds past a busy machine's lease end a partial renewal must reach at least to be
asked for (less is not worth an extend call: its job would lose it all the same)."""


def partial_renewal(
    state: State,
    server_id: str,
    *,
    seconds: float,
    lease_micros: int,
    now: float,
    reserved: int = 0,
    minimum: int = MIN_PARTIAL_RENEWAL,
) -> int:
    """When a whole renewal does not fit: the whole seconds from ``now`` (fewer than
    ``seconds``) that ``server_id``'s lease may still be renewed to within the budget, so
    the job on it can finish before the budget's own stop; ``0`` if none (a machine with no
    job on it, not Ready in a lease, the budget exceeded or unlimited, or less than
    ``minimum`` seconds past its lease's end would fit). The most that fits: the excess
    rule still stops it at the limit."""
    limit = state.budget.limit_micros
    m = state.machines.get(server_id)
    if limit is None or state.budget.exceeded or m is None or not m.leases:
        return 0
    end = m.estimated_stopping_at
    if m.status != M_READY or m.service_ready_at is None or end is None or end <= now:
        return 0
    left = (
        limit
        - spent_micros(state, now)
        - committed_micros(state, now, lease_micros=lease_micros)
        - reserved
    )
    low, high = math.ceil(end - now), math.ceil(seconds) - 1  # whole seconds from now
    if left <= 0 or high < low + minimum:
        return 0

    def fits(s: int) -> bool:
        return renewal_estimate(state, server_id, seconds=s, now=now) <= left

    if not fits(low + minimum):
        return 0
    low += minimum
    while low < high:  # the largest that fits (what it adds grows with the seconds)
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def limit_reached(
    *,
    what: str,
    needed: int,
    spent: int,
    committed: int,
    limit: int,
    at: float,
    server_id: str | None = None,
) -> ev.BudgetLimitReached:
    """The notice of a refused launch (``what="launch"``) or renewal (of ``server_id``):
    ``needed`` did not fit in ``limit`` beyond ``spent`` and ``committed`` (the figures it
    was refused on: the same the refusal's own event holds)."""
    return ev.BudgetLimitReached(
        what=what,
        spent_micros=spent,
        committed_micros=committed,
        limit_micros=limit,
        needed_micros=needed,
        server_id=server_id,
        at=at,
    )


def budget_events(
    state: State, *, now: float, warn_fraction: float, at: float
) -> list[ev.BudgetWarning | ev.BudgetExceeded]:
    """The budget events now due, each once: a warning at ``warn_fraction``, exceeded at
    100% (spending counted up to ``now``, not only what was accrued)."""
    limit = state.budget.limit_micros
    if limit is None:
        return []
    spent = spent_micros(state, now)
    level = budget_level(spent=spent, limit=limit, warn_fraction=warn_fraction)
    out: list[ev.BudgetWarning | ev.BudgetExceeded] = []
    if level is not BudgetLevel.OK and not state.budget.warned:
        out.append(ev.BudgetWarning(spent_micros=spent, limit_micros=limit, at=at))
    if level is BudgetLevel.EXCEEDED and not state.budget.exceeded:
        out.append(ev.BudgetExceeded(spent_micros=spent, limit_micros=limit, at=at))
    return out


DUE_PRECISION = 0.001
"""Seconds: :func:`budget_due_at` is at most this late after the spend's own crossing."""
DUE_HORIZON = 7 * 24 * 3600.0
"""Seconds: a crossing further ahead than this is not planned (the periodic accrual and
any change of the machines re-plan long before)."""


def budget_due_at(state: State, *, now: float, warn_fraction: float) -> float | None:
    """When the next budget event (:func:`budget_events`) falls due if the machines go on as
    the state has them: the first time from ``now`` at which the spend reaches the warning
    (not yet warned) or else the limit (not yet exceeded); ``now`` if it already has;
    ``None`` if it never will (no limit, already exceeded, nothing billing, or the leases
    end first). Each running machine bills at its rate to its lease's end (the billing
    rule: whole seconds from its Ready time), so the spend is a known non-decreasing step
    function of time; the answer is its crossing, at most ``DUE_PRECISION`` after it.
    The warning is due at its own crossing, before the excess's, never skipped for it."""
    limit = state.budget.limit_micros
    if limit is None or state.budget.exceeded:
        return None
    target = BudgetLevel.EXCEEDED if state.budget.warned else BudgetLevel.WARN
    fixed, running = 0, []
    for m in state.machines.values():
        gone = m.status in MACHINE_GONE and not m.stop_still_up
        if m.service_ready_at is None or gone:
            fixed += m.cost_micros
        else:
            running.append(m)

    def reached(t: float) -> bool:
        spent = fixed + sum(machine_cost_at(m, t) for m in running)
        level = budget_level(spent=spent, limit=limit, warn_fraction=warn_fraction)
        return level is BudgetLevel.EXCEEDED or level is target

    if reached(now):
        return now
    ends = [m.estimated_stopping_at for m in running]
    if any(end is None for end in ends):
        horizon = now + DUE_HORIZON  # (a machine bills with no end known)
    else:
        last = max((end for end in ends if end is not None), default=now)
        if last <= now:
            return None  # nothing bills on past now
        horizon = min(now + DUE_HORIZON, last)
    if not reached(horizon):
        return None
    lo, hi = now, horizon  # not reached at lo, reached at hi
    while hi - lo > DUE_PRECISION:
        mid = (lo + hi) / 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return hi


def lease_refused(state: State, *, now: float) -> bool:
    """May a waiting job no longer be leased a Ready machine? Once the spend reached the
    limit (the budget exceeded, or about to be said so): the machine is about to be stopped.
    A lease on a machine in its paid lease commits nothing more (its renewal is asked for on
    its own), so short of the limit it is not refused, as a launch would be."""
    limit = state.budget.limit_micros
    if limit is None:
        return False
    return state.budget.exceeded or spent_micros(state, now) >= limit


def accruals(state: State, *, now: float, at: float) -> list[ev.CostAccrued]:
    """A cumulative accrual up to ``now`` (or the lease's end) for every billing machine
    whose cost moved since its last accrual."""
    out = []
    for m in state.machines.values():
        if m.kind != "runcomfy" or m.status not in (M_READY, M_STOPPING):
            continue
        if m.service_ready_at is None:
            continue
        until = now if m.estimated_stopping_at is None else min(now, m.estimated_stopping_at)
        if m.accrued_until is not None and until <= m.accrued_until:
            continue
        out.append(
            ev.CostAccrued(
                server_id=m.server_id,
                amount_micros=machine_cost_micros(
                    m.rate_micros_per_hour, m.service_ready_at, until
                ),
                until=until,
                rate_micros_per_hour=m.rate_micros_per_hour,
                price_table_version=m.price_table_version,
                at=at,
            )
        )
    return out


@attrs.frozen
class UnansweredStop:
    """A machine whose stop was decided (``MachineStopping``) before the process went down,
    with no answer of it in the log, that the resume found gone: billed to ``billed_until``
    (``cost_micros``), as :func:`~conjure_actors.domain.machines_policy.gone_at` says, which
    ``upto`` names: ``lease_end`` (found gone after it: whether its ``DELETE`` left nobody
    can tell, so the most it can have cost), ``settle`` (found gone before it: stopped by
    its ``DELETE``, answered within ``STOP_SETTLE`` of the decision) or ``found_gone`` (the
    resume came sooner than that). ``at_decision_micros``: what it had cost at the decision,
    about its bill if the ``DELETE`` took at once (None: never seen Ready, nobody knows from
    when it billed)."""

    server_id: str
    decided_at: float
    billed_until: float
    upto: str
    cost_micros: int
    at_decision_micros: int | None


def unanswered_stops(state: State) -> list[UnansweredStop]:
    """The machines of ``state`` billed as :class:`UnansweredStop` says, in log order."""
    found: list[UnansweredStop] = []
    for m in state.machines.values():
        decided, until = m.stop_requested_at, m.stopped_at
        if (
            m.kind != "runcomfy"
            or m.status != M_STOPPED
            or m.lost_reason != LOST_WHILE_DOWN
            or decided is None
            or until is None
        ):
            continue
        lease_end = earliest_lease_end(m)
        if lease_end is not None and until >= lease_end:
            upto = "lease_end"
        elif until >= decided + STOP_SETTLE:
            upto = "settle"
        else:
            upto = "found_gone"
        at_decision = None
        if m.service_ready_at is not None:
            at_decision = machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, decided)
        found.append(
            UnansweredStop(
                server_id=m.server_id,
                decided_at=decided,
                billed_until=until,
                upto=upto,
                cost_micros=m.cost_micros,
                at_decision_micros=at_decision,
            )
        )
    return found


@attrs.frozen
class UnknownEnd:
    """A machine a resume found gone with no stop of it in the log (no ``MachineStopping``):
    nothing tells when it went between its last record and that look. A stop made without
    logging it (``serve`` or ``run`` stopping its machines on a full disk: the exit line
    says which) ended its bill sooner; one made elsewhere, or none (its lease ran out), at
    another time. Billed to ``billed_until``, when it was found gone or its lease's end if
    that came first (``cost_micros``; ``machines_policy.gone_at``): the most it can have
    cost. ``upto``: ``lease_end`` or ``found_gone``."""

    server_id: str
    billed_until: float
    upto: str
    cost_micros: int


def unknown_ends(state: State) -> list[UnknownEnd]:
    """The machines of ``state`` billed as :class:`UnknownEnd` says, in log order."""
    found: list[UnknownEnd] = []
    for m in state.machines.values():
        until = m.stopped_at
        if (
            m.kind != "runcomfy"
            or m.status != M_STOPPED
            or m.lost_reason != LOST_WHILE_DOWN
            or m.stop_requested_at is not None  # an unanswered stop: unanswered_stops
            or until is None
        ):
            continue
        lease_end = earliest_lease_end(m)
        upto = "lease_end" if lease_end is not None and until >= lease_end else "found_gone"
        found.append(UnknownEnd(m.server_id, until, upto, m.cost_micros))
    return found


def at_most_bills(state: State) -> set[str]:
    """The machines whose bill is the most they can have cost, not their exact bill (a
    total over them is an upper bound: say "at most"): a stop unanswered when the run went
    down, found gone after its lease's end (:func:`unanswered_stops`), and every machine
    found gone with no stop of it in the log (:func:`unknown_ends`)."""
    bounds = {u.server_id for u in unanswered_stops(state) if u.upto == "lease_end"}
    bounds.update(u.server_id for u in unknown_ends(state))
    return bounds


def unknown_end_line(u: UnknownEnd, *, now: float) -> str:
    """The one line that tells an :class:`UnknownEnd`: what it is billed, up to when, and
    why that is a bound; RunComfy's bill is the exact one."""
    to = "its lease's end" if u.upto == "lease_end" else "when this start found it gone"
    return (
        f"machine {u.server_id}: RunComfy no longer has it, and the log does not say when it"
        f" went (stopped without logging it, as on a full disk, it cost less):"
        f" billed at most {format_usd(u.cost_micros)}, to {to} at"
        f" {clock_time(u.billed_until, now)}; RunComfy's bill is exact"
    )


def unanswered_stop_line(u: UnansweredStop, *, now: float) -> str:
    """The one line that tells an :class:`UnansweredStop`: what it is billed, up to when and
    why, and what it most likely cost; RunComfy's own bill is the exact one."""
    head = (
        f"machine {u.server_id}: its stop, decided at {clock_time(u.decided_at, now)}, was"
        " not answered before the run went down, and RunComfy no longer has the machine"
    )
    usd = format_usd(u.cost_micros)
    if u.upto == "lease_end":
        likely = (
            ""
            if u.at_decision_micros is None
            else f"; if it did, about {format_usd(u.at_decision_micros)}"
        )
        why = (
            f"billed at most {usd}, to its lease's end, when RunComfy stops it by itself"
            " (it went before this resume, but whether its DELETE left nobody can tell from"
            f" the log{likely})"
        )
    elif u.upto == "settle":
        why = (
            f"billed {usd}, to {STOP_SETTLE:g} s after that decision (it went before its"
            " lease's end: stopped by that DELETE, answered within a request's timeout)"
        )
    else:
        why = f"billed {usd}, to when this resume found it gone"
    return f"{head}: {why}; RunComfy's bill is exact"
