"""``machine up``'s launch (``launch_or_find``) against the RunComfy simulator in memory:
a launch whose answer was lost is reconciled by listing, so the machine it started is
adopted (not left billing unrecorded), and no other machine of the account is taken."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import LaunchError
from conjure_actors.commands.machine import launch_or_find
from conjure_actors.domain.machines_policy import (
    LAUNCH_LAND_GRACE,
    LAUNCH_MARKER_SHARE,
    LAUNCH_MARKER_SPREAD,
)
from conjure_actors.sim.runcomfy import RunComfyFaults
from tests.clients.test_client_runcomfy import VERSION, open_client

LEASE = 3600


def _quiet(text: str) -> None:
    pass


async def test_a_launch_answered_is_taken_with_a_marked_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An answered launch: that server, with a lease a little shorter (the marker: up to
    59 s, or LAUNCH_MARKER_SHARE % of a long lease)."""
    async with open_client() as (_sim, client):
        server, how = await launch_or_find(client, VERSION, "medium", LEASE, say=_quiet)
    assert how == "launched"
    assert server.estimated_duration is not None
    widest = max(LAUNCH_MARKER_SPREAD, LEASE * LAUNCH_MARKER_SHARE // 100)
    assert LEASE - widest < server.estimated_duration <= LEASE


async def test_a_lost_launch_answer_finds_the_new_machine_not_an_older_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The launch answered 502 after launching: the new machine is found by listing, not the
    account's machine of the same workflow and type that was there before."""
    async with open_client() as (sim, client):
        older = await client.launch(VERSION, "medium", LEASE)
        sim.faults = RunComfyFaults(launch_ghost_rate=1.0)
        said: list[str] = []
        server, how = await launch_or_find(client, VERSION, "medium", LEASE, say=said.append)
        assert how == "found the launched"
        assert server.server_id != older.server_id
        assert set(sim.running()) == {older.server_id, server.server_id}
    assert "looking for the machine it may have started" in said[0]


async def test_a_lost_launch_answer_with_nothing_launched_is_one_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The launch failed with nothing launched, and another client launches a machine of the
    same workflow meanwhile (its own lease): nothing is adopted, after LAUNCH_LAND_GRACE a
    LaunchError says what to do."""
    async with open_client() as (sim, client):
        sim.faults = RunComfyFaults(launch_reject_rate=1.0)

        async def another_client() -> None:
            await trio.sleep(10)
            sim.faults = RunComfyFaults()
            await client.launch(VERSION, "medium", LEASE)

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(another_client)
            with pytest.raises(LaunchError, match="most likely nothing was launched") as info:
                await launch_or_find(client, VERSION, "medium", LEASE, say=_quiet)
        assert trio.current_time() - started >= LAUNCH_LAND_GRACE
        assert len(sim.running()) == 1  # the other client's, left alone
    assert "\n" not in str(info.value)
    assert "run `machine up` again" in str(info.value)
