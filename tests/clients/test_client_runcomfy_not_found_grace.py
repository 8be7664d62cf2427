"""The 404 grace after a launch (RunComfy answers 404 for a server it has just launched) ends
once an answer has shown the server: a machine listed, or answered by its own lookup, that
then answers 404 is gone, at once, not when the grace from its launch runs out (QA, session
27, F2: a machine seen Ready that vanished 15 s after its launch was taken for lost only at
launch + 60 s, its job waiting on a dead socket meanwhile)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_client_runcomfy import VERSION, open_client

from conjure_actors.clients.errors import ServerNotFoundError
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings


async def test_a_listed_server_that_vanishes_is_not_found_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Launched, listed Ready, vanished 15 s after its launch: its lookup raises
    ServerNotFoundError at once."""
    async with open_client(timings=RunComfyTimings(ready_delay=3.0)) as (sim, client):
        server = await client.launch(VERSION, "medium", 600)
        await trio.sleep(10)
        (listed,) = await client.list_servers()
        assert listed.is_ready
        await trio.sleep(5)
        assert sim.vanish(server.server_id)
        start = trio.current_time()
        with pytest.raises(ServerNotFoundError):
            await client.status(server.server_id)
        assert trio.current_time() - start < 5


async def test_a_server_its_lookup_answered_that_vanishes_is_not_found_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Its own lookup answered once (the first ones after the launch answered 404, retried):
    a 404 after that is ServerNotFoundError at once."""
    faults = RunComfyFaults(not_found_polls_after_launch=2)
    async with open_client(faults=faults) as (sim, client):
        server = await client.launch(VERSION, "medium", 600)
        await client.status(server.server_id)
        assert sim.vanish(server.server_id)
        start = trio.current_time()
        with pytest.raises(ServerNotFoundError):
            await client.status(server.server_id)
        assert trio.current_time() - start < 5


async def test_a_server_no_answer_has_shown_keeps_its_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A listing ends the grace of the servers it shows, not of one launched after it: the
    404s of that one's first lookups are still retried, and its status comes."""
    faults = RunComfyFaults(not_found_polls_after_launch=3)
    async with open_client(faults=faults) as (_sim, client):
        await client.launch(VERSION, "medium", 600)
        await client.list_servers()
        server = await client.launch(VERSION, "medium", 600)
        status = await client.status(server.server_id)
    assert status.server_id == server.server_id
