"""Two launch approvals in flight together never commit more than the budget."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.actors.messages import ApproveLaunch, LaunchApprovalUnused, SetBudget
from conjure_actors.domain import cost_policy
from conjure_actors.domain import events as ev

LEASE_SECONDS = 600.0


def _lease_micros(rig: Rig) -> int:
    rate = rig.ctx.table.rate(rig.ctx.config.runcomfy.server_type)
    return cost_policy.lease_cost_micros(rate, LEASE_SECONDS)


def set_budget(rig: Rig, leases: float = 1.5) -> SetBudget:
    """A budget for ``leases`` leases of the rig's server type (1.5: exactly one fits)."""
    return SetBudget(_lease_micros(rig) * leases / 1_000_000)


async def _approve(rig: Rig, job_id: str) -> bool:
    server_type = rig.ctx.config.runcomfy.server_type
    return bool(await rig.cost.ask(ApproveLaunch(job_id, server_type), timeout=60))


async def test_two_asks_before_any_launch_approve_only_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two ApproveLaunch asks before either launch is logged: one approved, one refused."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        answers = [await _approve(rig, "a"), await _approve(rig, "b")]
        assert answers == [True, False]
        assert rig.state.budget.launches_refused == 1


async def test_two_jobs_at_once_launch_one_machine_within_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two jobs needing a launch at once, a budget for one: one machine, the other job waits."""
    async with pool_rig(lease_seconds=LEASE_SECONDS, max_machines=2) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        a, b = await rig.job(), await rig.job()
        first, second = await rig.ask_lease(a), await rig.ask_lease(b)
        with trio.fail_after(600):
            lease = await first.wait()
        assert len(rig.sim.billing()) == 1
        assert rig.state.budget.launches_refused >= 1
        limit = rig.state.budget.limit_micros
        assert limit is not None
        now = rig.ctx.now()
        committed = cost_policy.committed_micros(rig.state, now, lease_micros=_lease_micros(rig))
        assert cost_policy.spent_micros(rig.state, now) + committed <= limit
        await rig.release(lease.server_id, a)
        with trio.fail_after(600):
            again = await second.wait()
        assert again.server_id == lease.server_id
        assert len(rig.sim.billing()) == 1
        await rig.release(again.server_id, b)


async def test_an_unused_approval_frees_its_reservation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An approval the pool did not use (LaunchApprovalUnused) no longer counts."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        assert await _approve(rig, "a")
        await rig.cost.tell(LaunchApprovalUnused("a"))
        assert await _approve(rig, "b")


async def test_an_approval_never_seen_expires(autojump_clock: trio.testing.MockClock) -> None:
    """An approval whose launch never shows in the State stops counting after its expiry."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        assert await _approve(rig, "a")
        assert not await _approve(rig, "b")
        await trio.sleep(61)
        assert await _approve(rig, "c")


async def test_a_logged_launch_replaces_its_reservation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the approved launch is logged it counts once, not twice (2.5 leases: two fit)."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig, leases=2.5), timeout=60)
        assert await _approve(rig, "a")
        await rig.dangling_intent("k1")  # the pool logs MachineLaunchRequested for it
        assert await _approve(rig, "b")
        assert not await _approve(rig, "c")


async def test_the_pool_returns_an_approval_it_did_not_use(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A job cancelled while its approval is on its way: the pool tells the CostActor, so
    the next job's launch fits the budget at once instead of after the expiry."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        approve = rig.pool.approve_launch
        release = trio.Event()

        async def slow_approval(job_id: str, server_type: str) -> bool:
            approved = await approve(job_id, server_type)
            await release.wait()
            return approved

        async def approval_unused(job_id: str) -> None:
            await rig.cost.tell(LaunchApprovalUnused(job_id))

        rig.pool.approve_launch = slow_approval
        rig.pool.approval_unused = approval_unused
        a = await rig.job()
        await rig.ask_lease(a)
        await trio.testing.wait_all_tasks_blocked()
        await rig.cancel(a)
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        rig.pool.approve_launch = approve
        b = await rig.job()
        start = rig.ctx.now()
        lease = await rig.lease(b)
        assert rig.state.budget.launches_refused == 0
        assert rig.events(ev.MachineLaunchRequested)[0].at - start < 5
        assert len(rig.sim.billing()) == 1
        await rig.release(lease.server_id, b)
