"""A 2xx answer to ``POST /servers`` that cannot be read (a proxy's page, a body cut short,
a schema change) comes from a launch RunComfy made: it is an outcome unknown (reconciled
by listing), not a refusal (review of 0d524e6: `machine up` then removed its launch record
as "refused: nothing was launched", and the pool closes such a launch as failed)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import OutcomeUnknownError
from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.runcomfy import RunComfySim, RunComfyTimings
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION


class UnreadableLaunchAnswer(httpx.AsyncBaseTransport):
    """The simulator behind a proxy that answers its launches 200 with a page of its own
    (the launch made all the same)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/servers"):
            await response.aread()
            return httpx.Response(200, content=b"<html>upstream ok</html>", request=request)
        return response


@asynccontextmanager
async def open_unreadable_launch() -> AsyncIterator[tuple[RunComfySim, RunComfyClient]]:
    sim = RunComfySim(
        user_id=USER,
        tokens=[TOKEN],
        seed=7,
        timings=RunComfyTimings(ready_delay=60.0),
        wall=TrioWallClock().now,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = UnreadableLaunchAnswer(httpx.ASGITransport(app=sim.asgi))
        async with httpx.AsyncClient(transport=transport) as http:
            client = RunComfyClient(BASE, USER, TOKEN, http=http, rng=random.Random(1))
            with trio.fail_after(24 * 3600):
                yield sim, client
        nursery.cancel_scope.cancel()


async def test_an_unreadable_launch_answer_is_an_outcome_unknown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_unreadable_launch() as (sim, client):
        with pytest.raises(OutcomeUnknownError, match="list servers"):
            await client.launch(VERSION, "medium", 900)
        assert len(sim.running()) == 1  # it launched: only a listing can tell
