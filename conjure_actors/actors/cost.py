"""The CostActor: the ledger (accrue, approve launches and renewals, enforce budgets).

It handles one message at a time and is the only writer of the cost events (``CostAccrued``,
``BudgetSet``, ``BudgetWarning``, ``BudgetExceeded``, ``LaunchRefused``,
``BudgetLimitReached``). Every decision is
a pure function of :mod:`conjure_actors.domain.cost_policy`; the only thing that waits, the
accrual timer, is a child task that reports ``AccrueNow`` to the actor and never emits.

The timer wakes when the next budget event falls due (:func:`~conjure_actors.domain.
cost_policy.budget_due_at`: the warning's crossing, then the limit's, from the running
machines' rates), and at the latest ``interval`` after its last wake. It plans again whenever
a machine's or the budget's event lands (a machine Ready, renewed or stopped, the budget set,
an accrual), so the excess is seen when the spend reaches the limit, not up to an interval
later (when a launch or a lease could still go out on a spent budget).

:class:`Ledger` is what outlives a restart of the actor: the run's context, whether the
budget's excess was already acted upon, what refusals the user was told of
(``BudgetLimitReached``: a launch refused, a machine's renewal refused, each once until the
budget is set again or one of its kind is granted; once more in a resumed run), and the
launches approved but not yet logged.

An approval is answered before the pool logs its ``MachineLaunchRequested``, so two asks
close together would both be judged on the same committed figure and both approved while
only one fits. Each approval therefore *reserves* its estimate (in memory: after a crash of
the run no approval is in flight) until its launch shows in the State, the pool tells
``LaunchApprovalUnused``, or ``APPROVAL_TTL`` seconds pass (a lost reply).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from conjure_actors.actors.context import Context
from conjure_actors.actors.messages import (
    AccrueNow,
    ApproveLaunch,
    ApproveRenewal,
    LaunchApprovalUnused,
    SetBudget,
)
from conjure_actors.domain import cost_policy
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.domain.describe import describe
from conjure_actors.runtime import Actor

log = logging.getLogger("conjure_actors.actors.cost")

# Seconds at most between accruals (the budget's own times: sooner); the fold counts a
# crashed run's time up to this past its last record (st.ACCRUE_INTERVAL).
ACCRUE_INTERVAL = st.ACCRUE_INTERVAL
MIN_WAKE = 0.01  # seconds at least between two budget wakes of the timer (no busy loop)
APPROVAL_TTL = 60.0  # seconds (trio clock) an approval counts without its launch logged

OnExceeded = Callable[[str], Awaitable[None]]
OnRefusing = Callable[[str | None, str], None]
OnOverBudget = Callable[[list[str]], Awaitable[None]]
BUDGET_EXCEEDED = "budget exceeded"  # the reason every machine is stopped for
LAUNCH = "launch"  # Ledger.told's key for launches (a renewal's: RENEWAL + server id)
RENEWAL = "renewal "
# The events that move when the next budget event falls due: a machine's (Ready, renewed,
# stopped, lost, adopted: its billing) and the ledger's own (the budget set, an accrual, a
# warning, an excess).
REPLAN_ON = (
    ev.MachineReady,
    ev.LeaseRenewed,
    ev.MachineStopping,
    ev.MachineStopped,
    ev.MachineStoppedAgain,
    ev.MachineLost,
    ev.MachineAdopted,
    ev.CostAccrued,
    ev.BudgetSet,
    ev.BudgetWarning,
    ev.BudgetExceeded,
)
_REPLAN_TYPES: Final = frozenset(REPLAN_ON)


class LaunchWaitsOver:
    """No job waits for a launch any more (told by the Conjure that watches its episode of
    refused launches end): a refusal of the next launch is news again (said, and serve's
    health degraded again), not one of a refusal told before."""


class Ledger:
    """The CostActor's long-lived memory, and the read-only figures of the bill."""

    def __init__(
        self,
        ctx: Context,
        *,
        on_exceeded: OnExceeded,
        on_lifted: OnExceeded | None = None,
        on_refusing: OnRefusing | None = None,
        on_over_budget: OnOverBudget | None = None,
    ) -> None:
        self.ctx = ctx
        self.on_exceeded = on_exceeded
        self.on_lifted = on_lifted  # the budget was raised past the spend after an excess
        # Told the launch refusal's line when the budget starts refusing launches, and
        # None (with why) once one is granted or the budget is set again (serve's health
        # says it; the Conjure also ends it once no job waits: LaunchWaitsOver).
        self.on_refusing = on_refusing
        # Told the machines still Starting to stop (unbilled) when a change of the budget
        # leaves no room for their first lease.
        self.on_over_budget = on_over_budget
        self.exceeded_handled = False
        # What a BudgetLimitReached told refused (LAUNCH, "renewal <server id>") since the
        # budget was last set and that kind was last granted.
        self.told: set[str] = set()
        # The refused launches logged (LaunchRefused) on the figures of the last one: the
        # pool asks again at every poll (and on other news) while a job waits; a refusal
        # is logged once per job, and again only once the figures changed.
        self.refusals = cost_policy.RefusalsTold()
        self.reservations: list[cost_policy.Reservation] = []
        self.seen_requests: set[str] | None = None  # launch requests known at the last look

    def refusing(self, line: str | None, why: str = "") -> None:
        """Launches are refused by the budget (``line``: the notice's words) or no longer
        (``None``, ``why``)."""
        if self.on_refusing is not None:
            self.on_refusing(line, why)

    def reserved(self) -> int:
        """What the approvals still pending commit, after settling them against the State
        (each launch logged since the last look uses one) and dropping the expired."""
        keys = cost_policy.request_keys(self.ctx.state)
        new = 0 if self.seen_requests is None else len(keys - self.seen_requests)
        self.seen_requests = keys
        self.reservations = cost_policy.settle_reservations(
            self.reservations, new_launches=new, now=trio.current_time()
        )
        return cost_policy.reserved_micros(self.reservations)

    def reserve(self, job_id: str, estimate: int) -> None:
        """Count an approval for ``job_id`` as committed until its launch is logged."""
        expires_at = trio.current_time() + APPROVAL_TTL
        self.reservations.append(cost_policy.Reservation(job_id, estimate, expires_at))

    def release(self, job_id: str) -> None:
        """The pool did not use an approval for ``job_id``: its oldest reservation goes."""
        for i, r in enumerate(self.reservations):
            if r.job_id == job_id:
                del self.reservations[i]
                return

    def lease_estimate(self, server_type: str) -> int:
        """What one lease of ``server_type`` commits to."""
        return self.ctx.lease_micros(server_type)

    def spent(self) -> int:
        """Cost so far (stopped machines' bills plus running machines up to now)."""
        return cost_policy.spent_micros(self.ctx.state, self.ctx.now())

    def committed(self) -> int:
        """What RunComfy will bill even if we stop deciding now."""
        lease = self.lease_estimate(self.ctx.config.runcomfy.server_type)
        return cost_policy.committed_micros(self.ctx.state, self.ctx.now(), lease_micros=lease)


class CostActor(Actor):
    """The ledger as an actor (see the module docstring)."""

    def __init__(self, ledger: Ledger, interval: float = ACCRUE_INTERVAL) -> None:
        self.ledger = ledger
        self.ctx = ledger.ctx
        self.interval = interval

    async def on_start(self) -> None:
        self.start_soon(self._timer, name="cost-accrual-timer")

    async def _timer(self) -> None:
        """Child task: tell the actor to accrue when the next budget event falls due, or
        ``interval`` after the last accrual it asked for; plan again at every event of a
        machine or of the ledger (it reads the state, it never emits)."""
        replan = trio.Event()

        def on_records(records: list[Any]) -> None:
            # Called for every batch of the run: a set lookup per record, no generator
            # (events are final classes, issue 16).
            if replan.is_set():
                return
            for record in records:
                if type(record.event) in _REPLAN_TYPES:
                    replan.set()
                    return

        with self.ctx.journal.listen(on_records):
            tick = trio.current_time() + self.interval
            last_wake = -math.inf
            while True:
                wake_at = tick
                due = cost_policy.budget_due_at(
                    self.ctx.state,
                    now=self.ctx.now(),
                    warn_fraction=self.ctx.config.budget.warn_fraction,
                )
                if due is not None:
                    at = trio.current_time() + max(0.0, due - self.ctx.now())
                    wake_at = min(tick, max(at, last_wake + MIN_WAKE))
                with trio.move_on_at(wake_at):
                    await replan.wait()
                if replan.is_set():
                    replan = trio.Event()
                    continue
                last_wake = trio.current_time()
                tick = last_wake + self.interval
                await self.ref.tell(AccrueNow())

    async def receive(self, msg: Any) -> Any:
        match msg:
            case ApproveLaunch():
                return await self._approve_launch(msg.job_id, msg.server_type)
            case ApproveRenewal():
                return await self._approve_renewal(msg.server_id, msg.seconds)
            case LaunchApprovalUnused():
                self.ledger.release(msg.job_id)
                return None
            case SetBudget():
                limit = cost_policy.budget_micros(msg.usd)
                unchanged = limit == self.ctx.state.budget.limit_micros
                await self.ctx.emit(
                    ev.BudgetSet(limit_micros=limit, at=self.ctx.now(), from_start=msg.from_start)
                )
                if msg.from_start and unchanged:
                    return None  # a start's budget recorded: the one in force is the same
                self.ledger.told.clear()
                self.ledger.refusals.forget()
                # The next ask says again if it still refuses.
                self.ledger.refusing(
                    None, "launches are no longer refused: the budget was set again"
                )
                handled, self.ledger.exceeded_handled = self.ledger.exceeded_handled, False
                await self._accrue()
                lifted = self.ledger.on_lifted
                if handled and not self.ctx.state.budget.exceeded and lifted is not None:
                    await lifted(BUDGET_EXCEEDED)
                await self._rejudge_starting()
                return None
            case AccrueNow():
                await self._accrue()
                return None
            case LaunchWaitsOver():
                self.ledger.told.discard(LAUNCH)
                return None
            case _:
                log.warning("CostActor: unknown message %s", type(msg).__name__)
                return None

    async def _rejudge_starting(self) -> None:
        """After a change of the budget: the machines still Starting whose first lease it
        no longer covers are stopped before they turn Ready (RunComfy bills from Ready),
        as if their launch had been refused; the jobs waiting for them then ask a launch,
        which the budget refuses (``BudgetRefused``), unpaid."""
        over = self.ledger.on_over_budget
        if over is None:
            return
        lease = self.ledger.lease_estimate(self.ctx.config.runcomfy.server_type)
        stop = cost_policy.starting_over_budget(
            self.ctx.state, lease_micros=lease, now=self.ctx.now(), reserved=self.ledger.reserved()
        )
        if stop:
            log.warning(
                "budget: stopping %d machine(s) still starting (not billed yet): the budget"
                " set no longer covers their first lease",
                len(stop),
            )
            await over(stop)

    async def _approve_launch(self, job_id: str, server_type: str) -> bool:
        """May the pool launch a machine for ``job_id``? Logs ``LaunchRefused`` when not."""
        estimate = self.ledger.lease_estimate(server_type)
        lease = self.ledger.lease_estimate(self.ctx.config.runcomfy.server_type)
        now = self.ctx.now()
        refused = cost_policy.check_launch(
            self.ctx.state,
            job_id,
            estimate=estimate,
            lease_micros=lease,
            now=now,
            at=now,
            reserved=self.ledger.reserved(),
        )
        if refused is None:
            self.ledger.reserve(job_id, estimate)
            if LAUNCH in self.ledger.told:
                self.ledger.refusing(None, "launches are no longer refused: a launch was granted")
            self.ledger.told.discard(LAUNCH)  # a launch fits again: a refusal is news
            self.ledger.refusals.forget()
            return True
        # The notice's figures are the refusal's: read before the emit (while it awaits,
        # a machine's stop may land in the State and move what is spent).
        limit = self.ctx.state.budget.limit_micros
        spent = cost_policy.spent_micros(self.ctx.state, now)
        if self.ledger.refusals.is_news(refused, limit):
            await self.ctx.emit(refused)
        if limit is not None:
            await self._tell_limit_reached(
                LAUNCH,
                cost_policy.limit_reached(
                    what="launch",
                    needed=estimate,
                    spent=spent,
                    committed=limit - spent - refused.remaining_micros,
                    limit=limit,
                    at=now,
                ),
            )
        return False

    async def _approve_renewal(self, server_id: str, seconds: float) -> float | None:
        """May the pool renew ``server_id``'s lease to run ``seconds`` more from now? The
        seconds granted (``seconds``; fewer, for a machine running a job when the whole
        renewal does not fit: what the budget still covers), or ``None``."""
        state = self.ctx.state
        lease = self.ledger.lease_estimate(self.ctx.config.runcomfy.server_type)
        now = self.ctx.now()
        reserved = self.ledger.reserved()
        key = RENEWAL + server_id
        approved = cost_policy.check_renewal(
            state, server_id, seconds=seconds, lease_micros=lease, now=now, reserved=reserved
        )
        if approved:
            self.ledger.told.discard(key)  # renewed: a later refusal is news
            return seconds
        # A busy machine is renewed for what the budget still covers: its job may finish
        # (at its lease's end it would lose all its work, the budget left unused); the
        # excess still stops it at the limit.
        partial = cost_policy.partial_renewal(
            state, server_id, seconds=seconds, lease_micros=lease, now=now, reserved=reserved
        )
        if partial > 0:
            self.ledger.told.discard(key)
            log.warning(
                "budget: lease renewal of machine %s cut to %d s (a whole one does not fit):"
                " its job runs on until then, or until the budget's stop",
                server_id,
                partial,
            )
            return float(partial)
        limit = state.budget.limit_micros
        if limit is not None:
            await self._tell_limit_reached(
                key,
                cost_policy.limit_reached(
                    what="renewal",
                    needed=cost_policy.renewal_estimate(state, server_id, seconds=seconds, now=now),
                    spent=cost_policy.spent_micros(state, now),
                    committed=cost_policy.committed_micros(state, now, lease_micros=lease)
                    + reserved,
                    limit=limit,
                    at=now,
                    server_id=server_id,
                ),
            )
        return None

    async def _tell_limit_reached(self, key: str, notice: ev.BudgetLimitReached) -> None:
        """A launch or a renewal was just refused: say so (``BudgetLimitReached``: the
        run's line, the replay's timeline) the first time since the budget was set or since
        one of that kind (``key``: launches; one machine's renewals) was last granted, not
        at every ask the pool repeats meanwhile. Not once the budget is exceeded:
        ``BudgetExceeded`` says that, and every machine stops."""
        if key in self.ledger.told or self.ctx.state.budget.exceeded:
            return
        if key == LAUNCH:  # said before its event lands: whoever reads that sees it
            self.ledger.refusing(describe(notice)[1])
        await self.ctx.emit(notice)
        told = self.ledger.told
        told.add(key)
        # A machine gone is refused nothing more: its key goes (a long serve would keep one
        # per machine ever refused a renewal, until the budget is set again).
        machines = self.ctx.state.machines
        for gone in [
            k
            for k in told
            if k != LAUNCH
            and (m := machines.get(k.removeprefix(RENEWAL))) is not None
            and m.status in st.MACHINE_GONE
        ]:
            told.discard(gone)

    async def _accrue(self) -> None:
        """Accrue every billing machine up to now, then apply the budget rule."""
        now = self.ctx.now()
        await self.ctx.emit(*cost_policy.accruals(self.ctx.state, now=now, at=now))
        due = cost_policy.budget_events(
            self.ctx.state,
            now=now,
            warn_fraction=self.ctx.config.budget.warn_fraction,
            at=now,
        )
        await self.ctx.emit(*due)
        if self.ctx.state.budget.exceeded and not self.ledger.exceeded_handled:
            log.warning("budget exceeded: stopping every machine")
            await self.ledger.on_exceeded(BUDGET_EXCEEDED)
            # Handled once it went through: if it raised, this actor crashes and the
            # restarted one (the ledger outlives it) acts on the excess at its next accrual.
            self.ledger.exceeded_handled = True
