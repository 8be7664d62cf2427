"""The CostActor's ``BudgetLimitReached``: told once per kind of refusal, told again after
one of that kind was granted, on the very figures the refusal was decided on."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_cost_race import LEASE_SECONDS, set_budget
from test_actor_pool import Rig, pool_rig

from conjure_actors.actors.messages import (
    ApproveLaunch,
    ApproveRenewal,
    LaunchApprovalUnused,
    ReleaseMachine,
    SetBudget,
)
from conjure_actors.domain import cost_policy
from conjure_actors.domain import events as ev


async def _approve(rig: Rig, job_id: str) -> bool:
    server_type = rig.ctx.config.runcomfy.server_type
    return bool(await rig.cost.ask(ApproveLaunch(job_id, server_type), timeout=60))


async def test_a_launch_refused_after_one_was_granted_is_told_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Refused (told), then a launch fits again and is granted (the reservation it waited
    on went unused), then refused again: two notices, not one per budget set (which left
    the second refusal unsaid, after words that no launch would come)."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        assert await _approve(rig, "a")
        assert not await _approve(rig, "b")
        assert not await _approve(rig, "b")  # the pool's ask repeated: not told again
        await rig.cost.ask(LaunchApprovalUnused("a"), timeout=60)
        assert await _approve(rig, "c")
        assert not await _approve(rig, "d")
        told = rig.events(ev.BudgetLimitReached)
        assert [e.what for e in told] == ["launch", "launch"]


async def test_the_notice_holds_the_figures_of_its_refusal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What was needed and what was left, as the ``LaunchRefused`` beside it says them."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        assert await _approve(rig, "a")
        assert not await _approve(rig, "b")
        (refused,) = rig.events(ev.LaunchRefused)
        (told,) = rig.events(ev.BudgetLimitReached)
        assert told.needed_micros == refused.estimate_micros
        left = told.limit_micros - told.spent_micros - told.committed_micros
        assert left == refused.remaining_micros


async def test_a_renewal_refused_after_one_was_granted_is_told_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A machine's renewal refused (told, naming it), then granted once a reservation went
    unused, then refused again: told again, not left unsaid after the first notice."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        lease = await rig.lease(await rig.job())
        sid = lease.server_id
        now = rig.ctx.now()
        one = cost_policy.lease_cost_micros(
            rig.ctx.table.rate(rig.ctx.config.runcomfy.server_type), LEASE_SECONDS
        )
        extra = cost_policy.renewal_estimate(rig.state, sid, seconds=LEASE_SECONDS, now=now)
        spent = cost_policy.spent_micros(rig.state, now)
        committed = cost_policy.committed_micros(rig.state, now, lease_micros=one)
        # Room for a launch, or for the renewal; not for both (the renewal needs ``extra``),
        # nor for a partial renewal of the busy machine (MIN_PARTIAL_RENEWAL s: 2750 micro-$).
        assert extra >= 2
        limit = spent + committed + one + min(extra // 2, 1000)
        await rig.cost.ask(SetBudget(limit / 1_000_000), timeout=60)

        async def renew() -> bool:
            return bool(await rig.cost.ask(ApproveRenewal(sid, LEASE_SECONDS), timeout=60))

        assert await _approve(rig, "a")  # reserves a lease
        assert not await renew()
        assert not await renew()  # the pool's ask repeated: not told again
        await rig.cost.ask(LaunchApprovalUnused("a"), timeout=60)
        assert await renew()
        assert await _approve(rig, "b")
        assert not await renew()
        told = rig.events(ev.BudgetLimitReached)
        assert [(e.what, e.server_id) for e in told] == [("renewal", sid), ("renewal", sid)]


async def test_a_stopped_machine_s_refusal_is_forgotten_at_the_next_notice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the notices told is kept per machine refused a renewal; a machine gone is
    refused nothing more, so its entry goes at the next notice (a serve running for weeks
    kept one per machine ever refused, until the budget was set again)."""
    async with pool_rig(lease_seconds=LEASE_SECONDS) as rig:
        job = await rig.job()
        sid = (await rig.lease(job)).server_id
        now = rig.ctx.now()
        one = cost_policy.lease_cost_micros(
            rig.ctx.table.rate(rig.ctx.config.runcomfy.server_type), LEASE_SECONDS
        )
        extra = cost_policy.renewal_estimate(rig.state, sid, seconds=LEASE_SECONDS, now=now)
        spent = cost_policy.spent_micros(rig.state, now)
        committed = cost_policy.committed_micros(rig.state, now, lease_micros=one)
        # No room for the renewal, nor for a partial one (MIN_PARTIAL_RENEWAL s: 2750 micro-$).
        room = min(extra // 2, 1000)
        await rig.cost.ask(SetBudget((spent + committed + room) / 1_000_000), timeout=60)
        assert not await rig.cost.ask(ApproveRenewal(sid, LEASE_SECONDS), timeout=60)
        assert rig.ledger.told == {f"renewal {sid}"}
        await rig.machines.tell(ReleaseMachine(sid, job, broken=True))  # stopped
        with trio.fail_after(600):
            while rig.state.machines[sid].status not in ("stopped", "lost"):
                await rig.poll()
        assert not await _approve(rig, "b")
        assert rig.ledger.told == {"launch"}
