"""ComfyUIEvents keeps nothing per finished prompt: a long-running serve does not grow."""

from __future__ import annotations

import json
import random
from contextlib import aclosing
from pathlib import Path

import httpx
import trio

from conjure_actors.clients import ComfyUIClient, ComfyUIEvents, PromptSucceeded, new_prompt_id
from conjure_actors.clients.comfyui_wire import ExecutionStartMsg
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyTimings, ComfyUISim

ROOT = Path(__file__).parents[2]
BASE = "http://comfy.sim.invalid:8188"


def _late_frames(pid: str) -> list[str]:
    """What ComfyUI may still send once the history already holds the outcome."""
    return [
        json.dumps({"type": "execution_success", "data": {"prompt_id": pid, "timestamp": 1}}),
        json.dumps({"type": "executing", "data": {"node": None, "prompt_id": pid}}),
    ]


async def test_late_frames_of_followed_prompts_are_not_buffered(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Frames arriving after follow saw a prompt's outcome leave no orphan buffer behind."""
    graph = json.loads((ROOT / "conjure_actors/workflows/invert_save.json").read_text())
    sim = ComfyUISim(seed=0, timings=ComfyTimings(scale=0.0), wall=TrioWallClock().now)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            transport = httpx.ASGITransport(app=sim.asgi)
            async with httpx.AsyncClient(transport=transport) as http:
                client = ComfyUIClient(
                    BASE, http=http, ws_connect=sim.open_ws_in_memory, rng=random.Random(0)
                )
                events = client.events()
                await nursery.start(events.run)
                await events.wait_connected()
                pids = []
                for _ in range(3):
                    pid = new_prompt_id()
                    await client.submit(graph, pid, events.client_id)
                    async with aclosing(client.follow(pid, events=events)) as stream:
                        updates = [u async for u in stream]
                    assert isinstance(updates[-1], PromptSucceeded)
                    pids.append(pid)
                for pid in pids:
                    for frame in _late_frames(pid):
                        events.dispatch(frame)
                assert events.statistics().buffered_prompts == 0
                nursery.cancel_scope.cancel()


async def test_frames_before_a_follower_subscribes_are_still_delivered() -> None:
    """A prompt nobody follows yet keeps its frames for the follower that subscribes later."""
    async with httpx.AsyncClient() as http:
        events = ComfyUIEvents(ComfyUIClient(BASE, http=http))
        pid = new_prompt_id()
        events.subscribe(pid).close(finished=True)  # an earlier follow of the same prompt
        sub = events.subscribe(pid)
        sub.close()  # abandoned, not finished: its frames are kept for a re-follow
        start = {"type": "execution_start", "data": {"prompt_id": pid, "timestamp": 1}}
        events.dispatch(json.dumps(start))
        assert events.statistics().buffered_prompts == 1
        again = events.subscribe(pid)
        assert isinstance(again.receive.receive_nowait(), ExecutionStartMsg)
        again.close()


async def test_finished_prompt_ids_are_bounded() -> None:
    """The ids of finished prompts kept to drop their late frames never exceed the bound."""
    async with httpx.AsyncClient() as http:
        events = ComfyUIEvents(ComfyUIClient(BASE, http=http))
        for _ in range(ComfyUIEvents.MAX_FINISHED_PROMPTS + 50):
            events.subscribe(new_prompt_id()).close(finished=True)
        assert len(events._finished) == ComfyUIEvents.MAX_FINISHED_PROMPTS
        assert events.statistics().followers == 0
