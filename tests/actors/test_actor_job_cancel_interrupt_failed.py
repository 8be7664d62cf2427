"""A cancelled job whose prompt could not be interrupted: the pool stops it later."""

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
from conjure_actors.clients import comfyui as comfyui_mod
from conjure_actors.clients.errors import TransportError
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event, LatePromptStopped
from conjure_actors.sim.comfyui import ComfyTimings

SLOW = json.loads(bundled_workflow())


async def test_a_cancelled_prompt_whose_interrupt_failed_is_stopped_by_the_pool(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user cancels a running job; the machine's ``/interrupt`` fails once (a dropped
    connection, after the client's own retries). The prompt must not run on, unfollowed,
    on the paid machine (the next job there would wait behind it): the job hands it to
    the pool's late-prompt watch, which interrupts it and logs ``LatePromptStopped``."""
    real_interrupt = comfyui_mod.ComfyUIClient.interrupt
    failures = [0]

    async def flaky_interrupt(self: Any, prompt_id: str | None = None) -> None:
        if failures[0] == 0:
            failures[0] += 1
            raise TransportError("POST /interrupt: connection reset")
        await real_interrupt(self, prompt_id)

    monkeypatch.setattr(comfyui_mod.ComfyUIClient, "interrupt", flaky_interrupt)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: s.jobs[job].status == "running" and s.jobs[job].prompt_id is not None,
                )
            pid = conjure.state.jobs[job].prompt_id
            sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            assert prompt_left(sim, pid) == "running"
            await conjure.cancel(job)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
            await trio.sleep(60)
            left = prompt_left(sim, pid)
    assert failures[0] == 1
    assert left is None, f"prompt {pid} still {left} 60 s after JobCancelled"
    stopped = [r.event for r in log.records() if isinstance(r.event, LatePromptStopped)]
    assert [(e.prompt_id, e.was) for e in stopped] == [(pid, "running")]
