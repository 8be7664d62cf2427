"""A follower on the shared WebSocket is woken at its poll time by the socket's one waker
task (no cancel scope per wait), falls back to its own deadline without it, and leaves no
wake-up behind."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import httpx
import trio

from conjure_actors.clients import ComfyUIClient, ComfyUIEvents, PromptSucceeded, new_prompt_id
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyTimings, ComfyUISim

ROOT = Path(__file__).parents[2]
BASE = "http://comfy.sim.invalid:8188"
GRAPH = json.loads((ROOT / "conjure_actors/workflows/invert_save.json").read_text())


@asynccontextmanager
async def _machine() -> AsyncIterator[tuple[ComfyUIClient, ComfyUIEvents, trio.Nursery]]:
    """A simulated ComfyUI, a client and its connected socket (run in the nursery given)."""
    sim = ComfyUISim(seed=0, timings=ComfyTimings(scale=0.0), wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport) as http:
            client = ComfyUIClient(
                BASE, http=http, ws_connect=sim.open_ws_in_memory, rng=random.Random(0)
            )
            events = client.events()
            yield client, events, nursery
            nursery.cancel_scope.cancel()


async def _follow(client: ComfyUIClient, pid: str, events: ComfyUIEvents) -> list[object]:
    # No grace for frames after the history answered: the time to the outcome is the poll's.
    follow = client.follow(pid, events=events, poll_interval=1.0, history_grace=0.0)
    async with aclosing(follow) as stream:
        return [u async for u in stream]


async def test_a_follower_without_frames_is_woken_at_its_poll_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A prompt whose frames go to another socket is still seen done at the first poll time."""
    with trio.fail_after(60):
        async with _machine() as (client, events, nursery):
            await nursery.start(events.run)
            await events.wait_connected()
            pid = new_prompt_id()
            await client.submit(GRAPH, pid, "another-client")  # its frames reach nobody here
            start = trio.current_time()
            updates = await _follow(client, pid, events)
            assert isinstance(updates[-1], PromptSucceeded)
            assert trio.current_time() - start == 1.0  # woken at its poll time, not later


async def test_finished_followers_leave_no_wakeup_behind(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Once every follow ended, the socket's waker holds no poll time of theirs."""
    with trio.fail_after(60):
        async with _machine() as (client, events, nursery):
            await nursery.start(events.run)
            await events.wait_connected()
            for _ in range(5):
                pid = new_prompt_id()
                await client.submit(GRAPH, pid, events.client_id)
                updates = await _follow(client, pid, events)
                assert isinstance(updates[-1], PromptSucceeded)
            assert events.statistics().wakeups == 0


async def _stoppable_socket(nursery: trio.Nursery, events: ComfyUIEvents) -> trio.CancelScope:
    """Run the socket's task in ``nursery`` until the scope returned is cancelled; return
    once it is connected."""
    socket = trio.CancelScope()

    async def run_socket(task_status: trio.TaskStatus[None]) -> None:
        with socket:
            await events.run(task_status=task_status)

    await nursery.start(run_socket)
    await events.wait_connected()
    return socket


async def test_a_follower_outlives_the_socket_task_by_its_own_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The socket's task stopping while a follower waits: the follower polls on its own."""
    with trio.fail_after(60):
        async with _machine() as (client, events, nursery):
            socket = await _stoppable_socket(nursery, events)
            pid = new_prompt_id()
            await client.submit(GRAPH, pid, "another-client")
            result: list[object] = []

            async def follower() -> None:
                result.extend(await _follow(client, pid, events))

            nursery.start_soon(follower)
            await trio.sleep(0.5)  # the follower waits for its poll time (1 s)
            socket.cancel()
            await trio.sleep(2.0)
            assert result
            assert isinstance(result[-1], PromptSucceeded)


async def test_a_displaced_follower_outlives_the_socket_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A second follower of the same prompt displaces the first in the socket's table; when
    the socket's task stops, both are woken and both see the outcome (found by review)."""
    with trio.fail_after(60):
        async with _machine() as (client, events, nursery):
            socket = await _stoppable_socket(nursery, events)
            pid = new_prompt_id()
            await client.submit(GRAPH, pid, "another-client")
            first: list[object] = []
            second: list[object] = []

            async def follower(into: list[object]) -> None:
                into.extend(await _follow(client, pid, events))

            nursery.start_soon(follower, first)
            await trio.sleep(0.1)
            nursery.start_soon(follower, second)
            await trio.sleep(0.3)
            socket.cancel()
            await trio.sleep(5.0)
            assert second
            assert isinstance(second[-1], PromptSucceeded)
            assert first
            assert isinstance(first[-1], PromptSucceeded)
