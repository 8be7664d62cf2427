"""An attempt that times out stops its prompt: left running, it billed for work nobody
would collect, and the retry's prompt queued behind it on the same machine (found by
review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

SLOW = json.loads(bundled_workflow())


async def test_a_timed_out_attempt_stops_its_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        retry = RetryConfig(initial=1.0, max_attempts=2, attempt_timeout=60.0, total_timeout=3000.0)
        config = sim_config(cloud, max_machines=1, retry=retry)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: s.jobs[job].attempt == 2 and s.jobs[job].execution == "submitted",
                )
            first = next(
                r.event.prompt_id
                for r in log.records()
                if type(r.event).__name__ == "PromptSubmitting"
            )
            sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
            await trio.sleep(30)  # (attempt 2's own deadline is 60 s away)
            running = sim._running
            pending = [item.prompt_id for *_, item in sim._pending]
            assert conjure.state.jobs[job].prompt_id != first
            assert pending in ([], [conjure.state.jobs[job].prompt_id])
            # Stopped, or told to stop (the simulator honours it at its next node step).
            assert running is None or running.prompt_id != first or sim._interrupt, (
                f"attempt 1's prompt {first[:8]} still runs; queue: {sim.queue_remaining}"
            )
