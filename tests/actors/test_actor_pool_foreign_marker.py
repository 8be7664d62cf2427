"""Servers a launch intent of ours may have started, seen in listings: one that lands after
its intent was closed for want of a server (``pool.given_up``) is still looked for while the
pool has nothing else to watch, and one another client on the account launched echoing the
very marker (the ``estimated_duration``) an intent asks for is not that intent's server when
a listing showed it before the intent was logged (no POST of it had been sent yet): it is
never adopted (nor stopped), whether the intent is still open or was given up."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.domain import events as ev

_BODY = b'{"workflow_version_id": "v1", "server_type": "medium", "estimated_duration": 583}'


async def _intent(rig: Rig, key: str, marker: int) -> None:
    """A launch intent whose POST never reaches RunComfy."""
    await rig.ctx.emit(
        ev.MachineLaunchRequested(
            request_key=key,
            server_type="medium",
            workflow_version="v1",
            estimated_duration=marker,
            at=rig.ctx.now(),
        )
    )


async def _list_the_account(rig: Rig) -> None:
    """One listing (an intent of another marker gives the pool a reason to list), and that
    intent closed for want of a server."""
    await _intent(rig, "k0", 541)
    await rig.poll()
    await trio.sleep(120)
    assert rig.state.launch_requests == {}


async def test_a_machine_listed_before_a_launch_intent_is_not_adopted_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another client's machine echoing marker 583 is listed; then an intent of ours asks
    for 583 and its POST never reaches RunComfy. The intent adopted that machine (the only
    one to match) and the idle timeout stopped it: another client's machine stopped."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        foreign = rig.sim._launch(_BODY)["server_id"]
        await _list_the_account(rig)
        await _intent(rig, "k1", 583)
        await rig.poll()
        await trio.sleep(300)
        assert foreign not in rig.state.machines
        assert foreign in rig.sim.running()
        assert rig.state.launch_requests == {}


async def test_a_machine_listed_before_a_given_up_intent_is_not_adopted_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two machines of another client echo marker 583 and are listed; then an intent of
    ours asks for 583 and its POST never reaches RunComfy. Two matches: neither adopted,
    the intent is closed (given up). Their owner stops one; the given-up intent then
    adopted the other (the only one to match now) and the idle timeout stopped it."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        first = rig.sim._launch(_BODY)["server_id"]
        second = rig.sim._launch(_BODY)["server_id"]
        await _list_the_account(rig)
        await _intent(rig, "k1", 583)
        await rig.poll()
        await trio.sleep(120)  # k1 closed for want of a (provably ours) server
        assert rig.state.launch_requests == {}
        rig.sim._stop(rig.sim._machines[second], rig.sim.wall(), "deleted")  # by its owner
        await trio.sleep(300)
        assert first not in rig.state.machines
        assert first in rig.sim.running()


async def test_a_server_landing_after_its_intent_was_given_up_is_adopted_by_an_idle_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An intent's server lands only after the intent was closed for want of a server
    (a POST whose answer was lost; a listing that lagged), while the pool has nothing
    else to watch (its job went away). No listing was ever taken again, so the watch for
    it (``pool.given_up``) never ran: the server billed, unknown, until its lease ended."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        await _intent(rig, "k1", 583)
        await rig.poll()
        await trio.sleep(120)  # k1 closed for want of a server
        assert rig.state.launch_requests == {}
        late = rig.sim._launch(_BODY)["server_id"]  # its POST's server, listed only now
        await trio.sleep(300)
        assert late in rig.state.machines
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_new_launch_asks_for_no_marker_a_given_up_intent_or_a_foreign_machine_uses(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch's marker was kept apart only from the open intents': a retry could draw the
    marker of an intent given up moments before (its server may still land) or of another
    client's machine listed now, and then a listing could not tell the two apart."""
    from conjure_actors.domain import machines_policy as policy

    asked: list[set[int]] = []
    real = policy.launch_duration

    def launch_duration(lease: int, *, taken: Iterable[int], draw: float) -> int:
        markers = set(taken)
        asked.append(markers)
        return real(lease, taken=markers, draw=draw)

    monkeypatch.setattr(policy, "launch_duration", launch_duration)
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        rig.sim._launch(_BODY.replace(b"583", b"571"))  # another client's, marker 571
        await _intent(rig, "k1", 583)
        await rig.poll()
        await trio.sleep(120)  # k1 closed for want of a server: given up
        assert rig.state.launch_requests == {}
        j = await rig.job()
        await rig.lease(j)
    assert asked
    assert {583, 571} <= asked[-1]
