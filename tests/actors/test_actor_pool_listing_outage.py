"""While the listing (``GET /servers``) fails and every other call works, the pool still
stops an idle machine at its idle timeout and renews a busy machine's lease (both ran only
after a listing that succeeded: an idle machine billed 49 s against an 8 s timeout, and a
busy one's lease ran out mid-prompt, its job re-run on a new paid machine)."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.clients.errors import RunComfyError


def _break_listing(rig: Rig) -> None:
    """Every ``GET /servers`` (the listing alone) answers 503 from now on."""

    async def failing() -> list[object]:
        raise RunComfyError("RunComfy list servers answered HTTP 503", status=503)

    rig.ctx.runcomfy.list_servers = failing  # type: ignore[method-assign, union-attr]


async def test_an_idle_machine_is_stopped_at_its_timeout_while_listings_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Idle timeout 10 s, listings failing from the release on: stopped within a few
    polls of its timeout, billed as the cloud bills."""
    async with pool_rig(idle_timeout=10.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        _break_listing(rig)
        await rig.release(lease.server_id, j)
        released = rig.ctx.now()
        await trio.sleep(60)
        m = rig.state.machines[lease.server_id]
        assert m.stop_reason == "idle"
        assert rig.sim.running() == []
        stopping_at = m.stop_requested_at
        assert stopping_at is not None
        assert stopping_at - released < 10 + 15


async def test_a_busy_machines_lease_is_renewed_while_listings_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Lease 120 s, a job holding the machine for 400 s, listings failing throughout: the
    machine is still up (renewed), not stopped by its lease's end."""
    async with pool_rig(lease_seconds=120.0, renew_margin=40.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        _break_listing(rig)
        await trio.sleep(400)
        assert rig.sim.running() == [lease.server_id]
        assert rig.state.machines[lease.server_id].status == "ready"
