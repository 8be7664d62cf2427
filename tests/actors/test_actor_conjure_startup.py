"""open_conjure's start-up: what it depends on is checked before the log says the run began."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event, MachineLaunchRequested, SystemStarted
from conjure_actors.domain.state import RESUMABLE_STATUSES
from conjure_actors.errgroups import meaningful
from conjure_actors.errors import UsageError


async def test_an_attached_comfyui_that_does_not_answer_is_the_usage_error_itself(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A dev machine that does not answer ends the start with the UsageError itself (no
    shutdown, no RunStoppedError), and the log never says the run started."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)

    async def start() -> None:
        async with (
            open_test_cloud(wall.now) as cloud,
            run_conjure(
                cloud, log, tmp_path, sim_config(cloud), wall, attach={"dev": "http://dev.invalid"}
            ),
        ):
            pytest.fail("the run started without its dev machine")

    # The test's cloud and journal run nurseries: what leaves them is a group.
    with trio.fail_after(600), pytest.raises(ExceptionGroup) as raised:
        await start()
    leaf = meaningful(raised.value)
    assert isinstance(leaf, UsageError)
    assert str(leaf).startswith("dev machine dev does not answer /system_stats")
    assert not [r for r in log.records() if isinstance(r.event, SystemStarted)]


async def _crash_with_a_job_queued(
    cloud: Any, log: eventlog.MemoryLog[Any], out: Path, config: Any, wall: TrioWallClock
) -> str:
    """Submit one job and crash before its machine is asked for; returns the job's id."""
    from actor_support import crash_when

    from conjure_actors.actors.example import bundled_workflow, example_sketch_png

    job = ""

    async def submit(conjure: Any) -> None:
        nonlocal job
        graph = json.loads(bundled_workflow())
        job = await conjure.submit(graph, image=example_sketch_png(), prompt="a fox")

    await crash_when(cloud, log, out, config, wall, submit)
    assert not [r for r in log.records() if isinstance(r.event, MachineLaunchRequested)]
    return job


async def test_a_resume_told_it_is_stopping_launches_nothing_for_its_jobs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A resume whose caller is stopping (a signal came during start-up) starts no
    resumed job: no launch is asked for, no machine runs, and the job stays unfinished."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        job = await _crash_with_a_job_queued(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        with trio.fail_after(600):
            async with run_conjure(
                cloud, log, tmp_path, config, wall, hold_resumed=lambda: True
            ) as conjure:
                await trio.sleep(300)  # a launch asked for at start-up would be under way
                state = conjure.state
            assert cloud.running() == []
        assert not [r for r in log.records() if isinstance(r.event, MachineLaunchRequested)]
        assert state.jobs[job].status in RESUMABLE_STATUSES


async def test_a_job_held_at_a_stopped_start_up_runs_on_the_next_resume(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The job a stopping start-up held is resumable: the next resume runs it to the end."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        job = await _crash_with_a_job_queued(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall, hold_resumed=lambda: True):
            pass
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
        assert cloud.running() == []
