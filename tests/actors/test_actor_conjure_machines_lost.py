"""A job whose machine is lost again and again fails ``MachineLost`` at
``retry.max_lost_machines`` (QA7 F8: it was requeued onto machine after machine, 17 paid
boots in 14 minutes, bounded only by its total timeout, which a serve restart renews)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings
from conjure_actors.sim.runcomfy import RunComfyFaults


async def test_a_job_whose_machines_keep_vanishing_fails_after_the_third(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    faults = RunComfyFaults(vanish_rate=1.0, vanish_after=20.0)
    async with open_test_cloud(
        wall.now, rc_faults=faults, timings=ComfyTimings(scale=100.0)
    ) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
            )
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
    failed = state.jobs[job]
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.error_type == "MachineLost"
    assert failed.machines_lost == 2  # requeued twice; the third loss fails it
    assert "lost 3 times" in failed.error.message
    assert len(state.machines) == 3
