"""The MachineActor where money leaks when a machine, a launch or a stop does not go as
planned: a Ready machine listed in a strange status, a launch that lands late, a stale
report after a restart, a DELETE that does not take, a foreign machine on the account.
Each test: the cloud stops billing what we think stopped (or never touched what is not
ours), and our ledger equals the simulator's bill."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig


@pytest.mark.parametrize("status", ["Initializing", "Error", "Provisioning"])
async def test_a_ready_machine_listed_neither_ready_nor_going_away_is_stopped(
    autojump_clock: trio.testing.MockClock, status: str
) -> None:
    """A Ready machine the listing shows in a status neither Ready nor on its way out (a
    restart on RunComfy's side, ``Error``, an unknown string) may still bill: it is
    stopped (DELETE) and billed from the DELETE's answer, not forgotten as lost."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        rig.sim._machines[lease.server_id].status = status  # still up, still billing
        await rig.poll()
        await trio.sleep(120)
        assert rig.sim.running() == []
        assert lease.lost.is_set()
        assert rig.state.machines[lease.server_id].stop_reason == f"not ready ({status})"
        assert rig.ledger_matches_sim()
