"""Launches RunComfy answers with a 5xx and that start no machine, for longer than
``cloud_patience``: launching stops and the waiting job fails saying so (the pool
relaunched every minute for ever, without a word); none of those launches is billed."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.actors.messages import LeaseFailedError
from conjure_actors.sim.runcomfy import RunComfyFaults


async def test_a_lasting_outage_of_launches_fails_the_waiting_job_after_cloud_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every launch answered 500 without a machine; cloud patience 300 s: the job fails
    within a few listings of 300 s, naming the outage, and nothing was billed."""
    async with pool_rig(
        faults=RunComfyFaults(launch_reject_rate=1.0), max_machines=1, cloud_patience=300.0
    ) as rig:
        start = trio.current_time()
        reply = await rig.ask_lease(await rig.job())
        with trio.fail_after(3600), pytest.raises(LeaseFailedError) as info:
            await reply.wait()
        assert 300 <= trio.current_time() - start < 300 + 120
        assert "launches keep failing" in str(info.value)
        assert all(b.cost_micros == 0 for b in rig.sim.billing())
        assert rig.sim.running() == []
