"""Issue 14: SaveImageWebsocket images are outputs, so ``follow`` must not lose the frames
that are still on the socket when ``/history`` already says the prompt succeeded."""

from __future__ import annotations

import json
import random
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import trio

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clients.comfyui import PreviewImage, PromptSucceeded, new_prompt_id
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyUISim

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"
SOCKET_DELAY = 1.5
"""Seconds every frame spends on its way (longer than follow's first poll of /history)."""


async def test_images_still_on_the_socket_when_history_says_done_are_not_lost(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Every frame reaches the client 1.5 s late (order kept): history is read first, yet
    both SaveImageWebsocket images come out before the success."""
    graph: dict[str, Any] = json.loads((WORKFLOWS / "ws_preview.json").read_text())
    sim = ComfyUISim(wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.asgi)) as http:
            client = ComfyUIClient(
                "http://comfy", http=http, ws_connect=sim.open_ws_in_memory, rng=random.Random(0)
            )
            events = client.events()
            route = events._route
            send, receive = trio.open_memory_channel[tuple[float, Any, Any]](float("inf"))

            def late(prompt_id: Any, item: Any) -> None:
                send.send_nowait((trio.current_time() + SOCKET_DELAY, prompt_id, item))

            async def deliver() -> None:
                async for due, prompt_id, item in receive:
                    await trio.sleep_until(due)
                    route(prompt_id, item)

            events._route = late  # type: ignore[method-assign]
            nursery.start_soon(deliver)
            await nursery.start(events.run)
            pid = new_prompt_id()
            await client.submit(graph, pid, events.client_id)
            with trio.fail_after(60):
                async with aclosing(client.follow(pid, events=events)) as stream:
                    updates = [update async for update in stream]
        nursery.cancel_scope.cancel()
    previews = [u for u in updates if isinstance(u, PreviewImage)]
    assert len(previews) == 2
    assert all(p.node == "2" for p in previews)
    assert isinstance(updates[-1], PromptSucceeded)
