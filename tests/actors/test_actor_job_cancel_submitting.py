"""A job cancelled while its POST /prompt is in flight leaves no prompt running on the
machine: whether the POST landed before the cancel or reaches ComfyUI after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, prompt_left, run_conjure, sim_config, wait_for

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
    assert not await _prompt_left_running(tmp_path, landed.wait)


async def test_a_post_that_reaches_comfyui_after_the_cancel_is_stopped_too(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request is on the wire when the job is cancelled: the network delivers it 0.5 s
    later, after a cleanup that did not wait for it would have run (found by review)."""
    real_submit = ComfyUIClient.submit
    sent = trio.Event()

    async def submit(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
        delivered = trio.Event()
        answers: list[Any] = []

        async def network() -> None:  # not cancelled with the client's task
            await trio.sleep(0.5)
            answers.append(await real_submit(self, *args, **kwargs))
            delivered.set()

        trio.lowlevel.spawn_system_task(network)
        sent.set()
        await delivered.wait()  # the cancel comes while the bytes travel
        return answers[0]

    monkeypatch.setattr(ComfyUIClient, "submit", submit)
    assert not await _prompt_left_running(tmp_path, sent.wait)


async def _prompt_left_running(tmp_path: Path, posting: Any) -> bool:
    """Submit a slow job, cancel it once ``posting()`` returns; is its prompt still queued
    or running (uninterrupted) on the machine 30 s after the job says cancelled?"""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await posting()
                await conjure.cancel(job)
                await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
            sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
            await trio.sleep(30)
            return prompt_left(sim, conjure.state.jobs[job].prompt_id) is not None
