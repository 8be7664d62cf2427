"""The whole runtime on the simulated cloud whose ComfyUI answers every request 503 (QA H10:
``run`` launched, billed ~44 s, stopped "unhealthy" and launched again until the job's
total_timeout, ~47 paid machines, without a word): the job fails after
``max_launch_attempts`` machines with one line saying why, each stop said once."""

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
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyFaults

DONE = ("succeeded", "failed", "cancelled")


async def _one_job_to_its_end(conjure: Any) -> tuple[str, Any]:
    """Submit one job of the bundled workflow and wait until it ended and every machine
    stopped: (its id, the state then)."""
    job = await conjure.submit(
        json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
    )
    with trio.fail_after(3600):
        await wait_for(conjure, lambda s: s.jobs[job].status in DONE)
        await wait_for(conjure, lambda s: all(m.stopped_at for m in s.machines.values()))
    return job, conjure.state


async def test_a_comfyui_that_answers_503_fails_the_job_after_three_machines(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three paid machines, three lines, then the job's one-line error; nothing left up."""
    caplog.set_level("WARNING", logger="conjure_actors.actors.pool")
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, comfy_faults=ComfyFaults(http_5xx_rate=1.0)) as cloud,
        run_conjure(
            cloud, log, tmp_path, sim_config(cloud, max_machines=1, max_launch_attempts=3), wall
        ) as conjure,
    ):
        job, state = await _one_job_to_its_end(conjure)
    error = state.jobs[job].error
    assert state.jobs[job].status == "failed"
    assert error.error_type == "NoMachine"
    assert error.message.startswith(
        "no machine: 3 machines of workflow version wv-conjure-flux-mesh-1 were Ready but"
        " their ComfyUI never answered (HTTP 503 on /system_stats): is the workflow"
        " version's ComfyUI starting? see its logs on RunComfy"
    )
    machines = list(state.machines.values())
    assert len(machines) == 3
    assert all(m.stop_reason == "unhealthy" and m.cost_micros > 0 for m in machines)
    said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(said) == 3
    assert all(m.server_id in line for m, line in zip(machines, said, strict=True))
    assert "http://" not in caplog.text
    assert "ws://" not in caplog.text


async def test_a_restart_during_the_hold_keeps_the_version_held(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The series lived in the pool's memory: a serve restarted on a held version paid for
    up to three more machines. It is rebuilt from the log: a job of the held version fails
    at once after a restart, and no machine is launched for it."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    graph = json.loads(bundled_workflow())
    async with open_test_cloud(wall.now, comfy_faults=ComfyFaults(http_5xx_rate=1.0)) as cloud:
        config = sim_config(cloud, max_machines=1, max_launch_attempts=3)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await _one_job_to_its_end(conjure)
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            again = await conjure.submit(graph, image=example_sketch_png(), prompt="x")
            with trio.fail_after(60):
                await wait_for(conjure, lambda s: s.jobs[again].status in DONE)
            state = conjure.state
    error = state.jobs[again].error
    assert state.jobs[again].status == "failed"
    assert error is not None
    assert "were Ready but their ComfyUI never answered" in error.message
    assert len(state.machines) == 3  # none launched after the restart


@pytest.mark.slow
async def test_a_partial_series_in_the_log_is_over_a_day_later(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Two unanswered machines, then a restart a day later: the next job's machines are a new
    series (three more before it fails), not the third of Monday's (one more, then held)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, comfy_faults=ComfyFaults(http_5xx_rate=1.0)) as cloud:
        two = sim_config(cloud, max_machines=1, max_launch_attempts=2)
        async with run_conjure(cloud, log, tmp_path, two, wall) as conjure:
            await _one_job_to_its_end(conjure)
        log.close()
        await trio.sleep(86_400)
        log = log.reopen()
        three = sim_config(cloud, max_machines=1, max_launch_attempts=3)
        async with run_conjure(cloud, log, tmp_path, three, wall) as conjure:
            again, state = await _one_job_to_its_end(conjure)
    assert state.jobs[again].status == "failed"
    assert len(state.machines) == 2 + 3
