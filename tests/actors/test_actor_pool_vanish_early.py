"""A machine that vanishes soon after its launch, once a listing has shown it, is lost at
the first listing that leaves it out: its lookup's 404 is not retried as RunComfy's lag
after a launch (QA, session 27, F2: taken for lost only at launch + 60 s, its job waiting on
a dead socket and "cost so far" accrued meanwhile)."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.domain import events as ev
from conjure_actors.domain.machines_policy import NOT_VISIBLE_GRACE


async def test_a_machine_seen_ready_that_vanishes_early_is_lost_at_the_next_listing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ready 3 s after its launch, leased, vanished 15 s after its launch: lost within a
    poll interval and a few seconds, long before the launch's 404 grace would end."""
    async with pool_rig(max_machines=1, ready_delay=3.0, poll_interval=5.0) as rig:
        launched = trio.current_time()
        lease = await rig.lease(await rig.job())
        await trio.sleep_until(launched + 15)
        assert rig.sim.vanish(lease.server_id)
        vanished = trio.current_time()
        with trio.fail_after(NOT_VISIBLE_GRACE):
            await lease.lost.wait()
        assert trio.current_time() - vanished < 5.0 + 3.0
        (lost,) = rig.events(ev.MachineLost)
        assert lost.reason == "vanished (404)"
