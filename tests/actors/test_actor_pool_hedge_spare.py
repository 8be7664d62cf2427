"""A hedged launch's spare that becomes Ready with no job waiting for it is stopped at once.

With ``pool.launch_hedge`` 2 a job launches two machines and takes the first Ready; the
other is stopped while still Starting (unbilled). Two boots that end within one poll
interval of each other (the common case: the launches go a second apart) are both Ready in
the same listing: the spare was then left to the idle timeout, billed minutes for nothing
(QA session 27, F7). It is stopped as soon as it is Ready and nothing waits for it, unless
the warm pool wants it; a machine that served a job keeps its idle timeout."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.domain import events as ev

POLL = 5.0


async def test_a_hedge_spare_ready_in_the_same_listing_is_stopped_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Equal boots: both machines Ready in one listing; the one the job did not take is
    stopped within seconds of its Ready (not after idle_timeout), and the bill is exact."""
    async with pool_rig(max_machines=4, launch_hedge=2, idle_timeout=120.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await trio.sleep(30)
        bills = {b.server_id: b for b in rig.sim.billing()}
        assert len(bills) == 2
        (spare,) = [sid for sid in bills if sid != lease.server_id]
        assert rig.state.machines[spare].stop_reason == "surplus"
        assert rig.state.machines[spare].jobs_served == 0
        assert bills[spare].service_ready_at is not None  # Ready: the case at hand
        assert bills[spare].billed_seconds <= POLL + 1
        assert rig.state.machines[spare].cost_micros == bills[spare].cost_micros
        assert rig.state.machines[lease.server_id].status == "ready"  # the job's: kept


async def test_the_warm_pool_keeps_a_hedge_spare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With pool.warm_pool 1, the spare is the warm machine: kept past the idle timeout."""
    async with pool_rig(
        max_machines=4, launch_hedge=2, idle_timeout=60.0, warm_pool=1, renew_margin=40.0
    ) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await trio.sleep(200)
        (spare,) = [sid for sid in rig.state.machines if sid != lease.server_id]
        assert rig.state.machines[spare].status == "ready"
        assert [e for e in rig.events(ev.MachineStopping) if e.server_id == spare] == []


async def test_a_hedge_machine_that_served_a_job_keeps_its_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The machine that took the job, released, is a plain idle machine: stopped by the
    idle timeout, not at once."""
    async with pool_rig(max_machines=4, launch_hedge=2, idle_timeout=120.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        await trio.sleep(60)
        assert rig.state.machines[lease.server_id].status == "ready"
        await trio.sleep(120)
        assert rig.state.machines[lease.server_id].stop_reason == "idle"
