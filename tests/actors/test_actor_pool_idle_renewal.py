"""An idle timeout longer than what is left of a machine's lease is honoured: the idle
machine's lease is renewed while the user wants it warm (it died at its lease's end
mid-idle, and a job arriving then waited a whole boot), and it is still stopped at its idle
timeout. A machine that does reach its lease's end is said to have done so, not to have
vanished."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig


async def test_an_idle_machine_is_kept_past_its_lease_for_its_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Lease 120 s, idle timeout 300 s: released at once, the machine is still up 200 s
    later (renewed), and stopped as idle at its idle timeout, billed as the cloud bills."""
    async with pool_rig(lease_seconds=120.0, renew_margin=40.0, idle_timeout=300.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        released = rig.ctx.now()
        await trio.sleep(200)
        m = rig.state.machines[lease.server_id]
        assert m.status == "ready", m.lost_reason
        assert rig.sim.running() == [lease.server_id]
        await trio.sleep(200)
        m = rig.state.machines[lease.server_id]
        assert (m.status, m.stop_reason) == ("stopped", "idle")
        assert m.stopped_at is not None
        assert m.stopped_at - released < 300 + 10
        assert rig.ledger_matches_sim()


async def test_an_idle_machine_whose_timeout_ends_first_is_not_renewed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Lease 600 s, idle timeout 30 s: no renewal, stopped as idle."""
    async with pool_rig(lease_seconds=600.0, renew_margin=180.0, idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        first = rig.state.machines[lease.server_id].estimated_stopping_at
        await rig.release(lease.server_id, j)
        await trio.sleep(120)
        m = rig.state.machines[lease.server_id]
        assert (m.status, m.stop_reason) == ("stopped", "idle")
        assert m.estimated_stopping_at == first


async def test_a_machine_that_reaches_its_lease_end_is_said_to_have_done_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No work, an idle timeout past the lease, and renewals out of reach (launching
    stopped): the cloud stops it at its lease's end; the log says so, not "vanished"."""
    async with pool_rig(lease_seconds=120.0, renew_margin=40.0, idle_timeout=10_000.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        rig.pool.launching_allowed = False  # as after the budget's stop: nothing is renewed
        await trio.sleep(400)
        m = rig.state.machines[lease.server_id]
        assert (m.status, m.lost_reason) == ("stopped", "its lease ended")
        assert m.stopped_at == m.estimated_stopping_at
        assert rig.ledger_matches_sim()


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_an_idle_machines_renewal_reaches_just_past_its_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Released 200 s before its lease's end with an idle timeout of 300 s: renewed, to the
    idle timeout's end plus the renewal margin, not a whole lease (a crash meanwhile would
    leave it billing to that lease's end)."""
    async with pool_rig(lease_seconds=3600.0, renew_margin=40.0, idle_timeout=300.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        m = rig.state.machines[lease.server_id]
        assert m.estimated_stopping_at is not None
        await trio.sleep(m.estimated_stopping_at - 200 - rig.ctx.now())
        await rig.release(lease.server_id, j)
        released = rig.ctx.now()
        await trio.sleep(250)  # past the renewal (40 s before the first lease's end)
        m = rig.state.machines[lease.server_id]
        assert m.status == "ready"
        assert m.estimated_stopping_at is not None
        assert released + 300 < m.estimated_stopping_at <= released + 300 + 40 + 2
