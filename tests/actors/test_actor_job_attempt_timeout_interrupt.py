"""An attempt that times out stops its prompt: left running, it billed for work nobody
would collect, and the retry's prompt queued behind it on the same machine (found by
review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import (
    assert_prompt_stopped,
    open_test_cloud,
    run_conjure,
    second_attempt_submitted,
    sim_config,
)

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
            first = await second_attempt_submitted(conjure, log, job)
            # (attempt 2's own deadline is 60 s away)
            sim = await assert_prompt_stopped(cloud, conjure, job, first)
            pending = [item.prompt_id for *_, item in sim._pending]
            assert pending in ([], [conjure.state.jobs[job].prompt_id])
