"""The recovery's lookups (``GET /servers/{id}`` of the machines its listing left out) are
bounded together: slow ones do not hold the start-up of a resumed run for minutes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.actors.messages import Reply
from conjure_actors.actors.pool import Reconcile
from conjure_actors.clients.errors import TransportError
from conjure_actors.domain import events as ev


@pytest.mark.slow
async def test_slow_recovery_lookups_do_not_hold_start_up_one_after_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three Ready machines; the recovery listing leaves all three out and each lookup
    fails only after the client's retries (~170 s: 5 attempts of 30 s). Before: the
    lookups ran one after another, the start-up waited 510 s (more machines, longer).
    Now they run together under one patience: the reply comes within two minutes, the
    machines unanswered are taken for lost as before (and watched: a listing that shows
    one up stops it)."""
    async with pool_rig(lease_seconds=1800.0, max_machines=3, jobs_per_machine=1) as rig:
        jobs = [await rig.job() for _ in range(3)]
        sids = [(await rig.lease(j)).server_id for j in jobs]
        assert len(set(sids)) == 3
        rc = rig.ctx.runcomfy
        real_list = rc.list_servers

        async def listing() -> Any:
            return [s for s in await real_list() if s.server_id not in sids]

        async def status(server_id: str) -> Any:
            await trio.sleep(170)
            raise TransportError("no answer after 5 attempts")

        rc.list_servers = listing
        rc.status = status
        reply: Reply[None] = Reply()
        started = trio.current_time()
        await rig.machines.tell(Reconcile(reply))
        with trio.move_on_after(1000):
            await reply.wait()
        waited = trio.current_time() - started
        assert waited <= 120, waited
        assert {e.server_id for e in rig.events(ev.MachineLost)} == set(sids)
