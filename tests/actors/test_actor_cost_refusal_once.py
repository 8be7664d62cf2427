"""A launch the budget refuses is logged once while nothing changes, not at every ask the
pool repeats (every poll, and its answer: two ``LaunchRefused`` each 5 s before)."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_cost_race import LEASE_SECONDS, set_budget
from test_actor_pool import pool_rig

from conjure_actors.domain import events as ev


async def test_a_job_waiting_on_the_budget_is_refused_once_while_nothing_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One machine busy, a second job waiting a minute (12 polls) next to it: one
    ``LaunchRefused``, and one notice."""
    async with pool_rig(lease_seconds=LEASE_SECONDS, max_machines=2, ready_delay=3.0) as rig:
        await rig.cost.ask(set_budget(rig), timeout=60)
        a, b = await rig.job(), await rig.job()
        with trio.fail_after(600):
            await (await rig.ask_lease(a)).wait()
        await rig.ask_lease(b)
        await trio.sleep(60)
        assert [e.job_id for e in rig.events(ev.LaunchRefused)] == [b]
        assert len(rig.events(ev.BudgetLimitReached)) == 1
