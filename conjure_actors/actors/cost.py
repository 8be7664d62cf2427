"""The ledger: what the CostActor does (accrue, estimate, approve launches, enforce budgets).

Spending is computed from the log's facts only (each ready machine's rate and server-side
``service_ready_at``, each stopped machine's final bill), so the ledger a replay rebuilds is
the one the user saw. Accruals are cumulative (``CostAccrued.amount_micros`` is the machine's
cost so far, never a delta), so rounding never drifts.

Budget rule: a launch (or a lease renewal) is approved only if ``spent + committed + one
lease`` stays within the limit, where *committed* is what ready machines will cost until
their leases end plus one lease per machine still starting. Because RunComfy stops a machine
by itself at the end of its lease, even a crashed runtime cannot spend more than the limit
plus one lease. A warning is logged at 80%; at 100% every machine is stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from conjure_actors.actors.context import Context
from conjure_actors.actors.policy import (
    Billable,
    committed_micros,
    launch_allowed,
    lease_cost_micros,
    spent_micros,
)
from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.errors import DomainError
from conjure_actors.domain.state import M_READY, M_STARTING, M_STOPPING, MACHINE_GONE

log = logging.getLogger("conjure_actors.actors.cost")

OnExceeded = Callable[[str], Awaitable[None]]


class Ledger:
    """The CostActor's logic."""

    def __init__(self, ctx: Context, *, on_exceeded: OnExceeded) -> None:
        self.ctx = ctx
        self._on_exceeded = on_exceeded
        self.exceeded_handled = False

    # ------------------------------------------------------------------ figures

    def _billables(self) -> tuple[list[Billable], int]:
        ready: list[Billable] = []
        stopped_total = 0
        for m in self.ctx.state.machines.values():
            if m.status in MACHINE_GONE:
                stopped_total += m.cost_micros
            elif m.service_ready_at is not None and m.status in (M_READY, M_STOPPING):
                ready.append(
                    Billable(m.rate_micros_per_hour, m.service_ready_at, m.estimated_stopping_at)
                )
        return ready, stopped_total

    def spent(self) -> int:
        """Cost so far (stopped machines' bills plus ready machines up to now)."""
        ready, stopped_total = self._billables()
        return spent_micros(ready, self.ctx.now(), stopped_total)

    def committed(self) -> int:
        """What RunComfy will bill even if we stop deciding now: the rest of each lease,
        and one lease for each machine starting or being launched."""
        ready, _ = self._billables()
        total = committed_micros(ready, self.ctx.now())
        state = self.ctx.state
        lease = self.lease_estimate(self.ctx.config.runcomfy.server_type)
        starting = sum(
            1 for m in state.machines.values() if m.kind == "runcomfy" and m.status == M_STARTING
        )
        return total + lease * (starting + len(state.launch_requests))

    def lease_estimate(self, server_type: str) -> int:
        rate = self.ctx.table.rate(server_type)
        return lease_cost_micros(rate, self.ctx.config.pool.lease_seconds)

    def remaining(self) -> int | None:
        limit = self.ctx.state.budget.limit_micros
        if limit is None:
            return None
        return limit - self.spent() - self.committed()

    # ------------------------------------------------------------------ decisions

    async def approve_launch(self, job_id: str, server_type: str) -> bool:
        """May the pool launch a machine for ``job_id``? Logs ``LaunchRefused`` when not."""
        state = self.ctx.state
        estimate = self.lease_estimate(server_type)
        limit = state.budget.limit_micros
        if limit is None:
            return True
        spent, committed = self.spent(), self.committed()
        if not state.budget.exceeded and launch_allowed(
            limit=limit, spent=spent, committed=committed, estimate=estimate
        ):
            return True
        await self.ctx.emit(
            ev.LaunchRefused(
                job_id=job_id,
                estimate_micros=estimate,
                remaining_micros=limit - spent - committed,
                at=self.ctx.now(),
            )
        )
        return False

    async def approve_renewal(self, server_id: str, seconds: float) -> bool:
        """May the pool extend ``server_id``'s lease by ``seconds``?"""
        state = self.ctx.state
        limit = state.budget.limit_micros
        if limit is None:
            return True
        m = state.machines.get(server_id)
        if m is None or state.budget.exceeded:
            return False
        estimate = lease_cost_micros(m.rate_micros_per_hour, seconds)
        return launch_allowed(
            limit=limit, spent=self.spent(), committed=self.committed(), estimate=estimate
        )

    async def set_budget(self, usd: float | None) -> None:
        limit = None if usd is None else round(usd * 1_000_000)
        await self.ctx.emit(ev.BudgetSet(limit_micros=limit, at=self.ctx.now()))
        self.exceeded_handled = False
        await self.accrue()

    async def accrue(self) -> None:
        """Accrue every ready machine's cost up to now, then apply the budget rule."""
        now = self.ctx.now()
        state = self.ctx.state
        events = []
        for m in state.machines.values():
            if m.kind != "runcomfy" or m.status not in (M_READY, M_STOPPING):
                continue
            if m.service_ready_at is None:
                continue
            until = now if m.estimated_stopping_at is None else min(now, m.estimated_stopping_at)
            if m.accrued_until is not None and until <= m.accrued_until:
                continue
            try:
                events.append(decide.accrue_cost(state, m.server_id, until=until, at=now))
            except DomainError:
                continue
        await self.ctx.emit(*events)
        await self.check_budget()

    async def check_budget(self) -> None:
        state = self.ctx.state
        due = decide.budget_check(state, at=self.ctx.now())
        if due:
            await self.ctx.emit(*due)
        if state.budget.exceeded and not self.exceeded_handled:
            self.exceeded_handled = True
            log.warning("budget exceeded: stopping every machine")
            await self._on_exceeded("budget exceeded")
