"""A job cancelled while its POST /prompt is in flight leaves no prompt running on the
machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

SLOW = json.loads(bundled_workflow())


@pytest.mark.parametrize("delay", [0.0, 0.5])
async def test_a_job_cancelled_while_its_post_is_in_flight_leaves_no_prompt(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    delay: float,
) -> None:
    real_submit = ComfyUIClient.submit
    landed = trio.Event()

    async def submit(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
        answer = await real_submit(self, *args, **kwargs)  # queued on the machine
        landed.set()
        with trio.CancelScope(shield=True):
            await trio.sleep(delay)
        await trio.sleep(1.0)  # the answer is on its way back (slow network)
        return answer

    monkeypatch.setattr(ComfyUIClient, "submit", submit)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await landed.wait()
                await conjure.cancel(job)
                await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
            sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
            await trio.sleep(30)
            pid = conjure.state.jobs[job].prompt_id
            running = sim._running
            pending = [item.prompt_id for *_, item in sim._pending]
            assert pid not in pending
            assert running is None or running.prompt_id != pid or sim._interrupt
