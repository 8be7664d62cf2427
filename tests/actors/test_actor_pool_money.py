"""The MachineActor where money leaks when a machine, a launch or a stop does not go as
planned: a Ready machine listed in a strange status, a launch that lands late, a stale
report after a restart, a DELETE that does not take, a foreign machine on the account.
Each test: the cloud stops billing what we think stopped (or never touched what is not
ours), and our ledger equals the simulator's bill."""

from __future__ import annotations

from typing import Any

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


async def test_a_stale_approval_after_a_restart_neither_passes_max_machines_nor_leaks(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MachineActor crashes while a launch approval is in flight; its answer was
    already queued (the mailbox outlives the crash). The next incarnation never counted
    it: acting on it would drive ``_approving`` to -1 and ``max_machines=1`` launch two
    machines. It is ignored, its reservation given back, and the demand asked anew."""
    from conjure_actors.actors import pool as pool_mod

    async with pool_rig(max_machines=1) as rig:
        gate = trio.Event()
        approve = rig.pool.approve_launch
        given_back: list[str] = []

        async def gated(job_id: str, server_type: str) -> bool:
            await gate.wait()
            return await approve(job_id, server_type)

        async def unused(job_id: str) -> None:
            given_back.append(job_id)

        rig.pool.approve_launch = gated
        rig.pool.approval_unused = unused
        real_assign = pool_mod.MachineActor._assign
        armed = [True]

        async def assign(self: Any) -> None:
            if armed[0] and self._approving == 1:  # an approval in flight
                armed[0] = False
                gate.set()
                await trio.sleep(1)  # the approval's answer is queued meanwhile
                raise RuntimeError("injected crash of the MachineActor")
            await real_assign(self)

        monkeypatch.setattr(pool_mod.MachineActor, "_assign", assign)
        a, b = await rig.job(), await rig.job()
        first = await rig.ask_lease(a)
        await rig.ask_lease(b)
        with trio.fail_after(600):
            await first.wait()
        await trio.sleep(300)
        assert len(rig.sim.billing()) == 1
        assert len(given_back) == 1
