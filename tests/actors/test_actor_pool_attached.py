"""An attached ComfyUI (``--comfyui-url``) whose WebSocket is still opening when the first
job is queued (MockClock): the job waits for that socket, so its prompt's frames reach it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event

GRAPH = json.loads(bundled_workflow())


async def test_a_job_queued_while_the_socket_opens_is_followed_over_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The socket takes 2 s to open: the job is leased once it is up, submits with its
    client id, and sees the prompt's nodes start (frames only the socket brings; polling
    alone sees the start and the end)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, sim = cloud.standalone_comfyui()
        fast = cloud.ws_connect

        @asynccontextmanager
        async def slow(target: str) -> AsyncIterator[Any]:
            await trio.sleep(2.0)
            async with fast(target) as ws:
                yield ws

        cloud.ws_connect = slow
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
    names = [type(r.event).__name__ for r in log.records()]
    assert "NodeStarted" in names
    assert len(sim.prompts_run) == 1
