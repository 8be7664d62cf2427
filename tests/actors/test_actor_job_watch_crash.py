"""A job's actor crashing mid-attempt forgets its watch of the machine's loss (on_stop), and
the job still succeeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, sim_config, wait_for

import eventlog
from conjure_actors.actors import job as job_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings
from conjure_actors.testing import open_simulated_conjure

SLOW = json.loads(bundled_workflow())


@pytest.mark.slow
async def test_a_crash_mid_attempt_leaves_no_watch_and_the_job_succeeds(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    crashed: list[int] = []
    peak: list[int] = []
    original = job_module.WorkflowActor._on_progress

    async def on_progress(self: Any, u: Any) -> None:
        if not crashed:
            crashed.append(self.incarnation)
            assert self._watching is not None
            peak.append(self._watching.watchers)
            raise KeyError("boom")
        await original(self, u)

    monkeypatch.setattr(job_module.WorkflowActor, "_on_progress", on_progress)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud,
        open_simulated_conjure(
            cloud, log, sim_config(cloud, max_machines=1), wall=wall, out_dir=tmp_path
        ) as c,
    ):
        job = await c.submit(SLOW, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await wait_for(c, lambda s: s.jobs[job].status == "succeeded")
            await c.wait_until_idle()
        (live,) = c.pool.live.values()
        assert live.lost.watchers == 0
    assert crashed == [1]
    assert peak == [1]
