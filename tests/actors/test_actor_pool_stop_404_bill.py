"""A machine that vanished, then got its stop, is billed to the first listing that left it
out, not to its ``DELETE``'s (late) 404.

A listing leaves the machine out (it vanished: RunComfy stopped billing it then); its
lookup is slow to answer; meanwhile its idle timeout passes and the pool stops it. Its
``DELETE`` answers 404, late (rate limits, an outage). The bill ran to that answer, not to
the listing that first left the machine out, as a loss confirmed by a lookup is billed:
QA saw 62 s billed for 31 s of cloud time (session 27, F8)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.domain import events as ev

POLL = 5.0


def _slow(rc: Any, name: str, delay: float) -> None:
    """``rc.<name>`` answers ``delay`` s of mock time late (a rate limit, an outage)."""
    real = getattr(rc, name)

    async def slowed(*args: Any, **kwargs: Any) -> Any:
        await trio.sleep(delay)
        return await real(*args, **kwargs)

    setattr(rc, name, slowed)


async def _vanish_then_idle_stop(*, lookup_delay: float, delete_delay: float) -> None:
    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        sid = lease.server_id
        await rig.release(sid, j)
        await trio.sleep(8.0)
        assert rig.sim.vanish(sid)  # billing ends here, on the cloud
        _slow(rig.ctx.runcomfy, "status", lookup_delay)
        _slow(rig.ctx.runcomfy, "stop", delete_delay)
        await trio.sleep(300)
        m = rig.state.machines[sid]
        assert m.stop_reason == "idle"  # stopped while its loss was being looked up
        (cloud,) = rig.sim.billing()
        ours = next(e for e in rig.events(ev.MachineStopped) if e.server_id == sid)
        # Billed to the first listing that left it out: at most a poll interval (and the
        # second a bill rounds up to) above the cloud's bill, never below it.
        assert cloud.billed_seconds <= ours.billed_seconds <= cloud.billed_seconds + POLL + 1


async def test_a_delete_404_after_the_lookup_404_is_billed_to_the_first_listing_without_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The lookup's 404 comes while the DELETE is in flight (QA's order), the DELETE's 404
    later still: billed to the listing, not to the DELETE's answer."""
    await _vanish_then_idle_stop(lookup_delay=35.0, delete_delay=40.0)


async def test_a_delete_404_before_the_lookup_answers_is_billed_to_the_first_listing_without_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The DELETE's 404 comes first (the lookup still retrying): billed to the listing."""
    await _vanish_then_idle_stop(lookup_delay=120.0, delete_delay=10.0)


async def test_a_machine_that_vanished_while_its_delete_was_on_its_way_is_billed_to_the_listing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Its idle stop decided, the DELETE slow to go out, it vanishes meanwhile; the listings
    leave it out, then the DELETE answers 404: billed to the first of those listings."""
    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        sid = lease.server_id
        _slow(rig.ctx.runcomfy, "stop", 40.0)
        await rig.release(sid, j)
        while rig.state.machines[sid].status != "stopping":  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.5)
        assert rig.sim.vanish(sid)  # billing ends here, on the cloud
        await trio.sleep(300)
        (cloud,) = rig.sim.billing()
        ours = next(e for e in rig.events(ev.MachineStopped) if e.server_id == sid)
        assert cloud.billed_seconds <= ours.billed_seconds <= cloud.billed_seconds + POLL + 1
