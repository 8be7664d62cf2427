"""The pool's serving pass stops walking its queue once no machine is free (issue 16: each
pass over a long queue, repeated at every release, made the pipeline quadratic in jobs; a
change for held jobs brought it back for a while, found by bench/run.py --only-opcodes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, submit_sketches, wait_for

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import machines_policy
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

JOBS = 12


@pytest.mark.slow  # 0.3 s (just test <= 30 s: CI and just check run it)
async def test_a_long_queue_behind_one_busy_machine_is_not_walked_at_each_pass(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 jobs on one machine: a machine is picked a few times per job, not once per waiting
    job at every pass (12 * 11 / 2 = 66 and more when the whole queue is walked)."""
    picks = 0
    real_pick = machines_policy.pick_machine

    def pick_machine(*args: Any, **kwargs: Any) -> Any:
        nonlocal picks
        picks += 1
        return real_pick(*args, **kwargs)

    monkeypatch.setattr(machines_policy, "pick_machine", pick_machine)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=0.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud, max_machines=1), wall) as conjure,
    ):
        jobs = await submit_sketches(conjure, JOBS)
        with trio.fail_after(36_000):
            await wait_for(conjure, lambda s: all(s.jobs[j].status == "succeeded" for j in jobs))
    assert picks <= 3 * JOBS, picks
