"""A job's total timeout (``retry.total_timeout``, from submission) while it waits for a
machine and while it runs, and what a queued job costs: no task of its own, its deadline
watched by the queue's one timer (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    event_names,
    open_test_cloud,
    run_conjure,
    sim_config,
    task_names,
    wait_for,
)

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

GRAPH = json.loads(bundled_workflow())


async def test_a_job_waiting_for_a_machine_fails_at_its_total_timeout(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """No machine is ready before the job's total timeout: the job fails (Timeout) queued."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=30.0))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            t0 = trio.current_time()
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
            elapsed = trio.current_time() - t0
            failed = conjure.state.jobs[job]
    assert failed.error is not None
    assert failed.error.error_type == "Timeout"
    assert "30 s" in failed.error.message
    assert 30.0 <= elapsed < 31.0
    assert "JobStarted" not in event_names(log, job)


@pytest.mark.slow
async def test_a_running_job_fails_at_its_total_timeout(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A prompt that runs past the job's total timeout: the job fails (Timeout) started."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=300.0))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
            failed = conjure.state.jobs[job]
    assert failed.error is not None
    assert failed.error.error_type == "Timeout"
    assert "300 s" in failed.error.message
    assert "JobStarted" in event_names(log, job)


async def test_a_queued_job_runs_no_task_of_its_own(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """While a job waits for a machine it runs no task (no lease wait, no timer task)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "queued")
            await trio.testing.wait_all_tasks_blocked()
            assert task_names(f"{job}-") == []
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"


@pytest.mark.slow
async def test_a_running_attempt_watches_the_job_deadline_in_its_child(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Issue 16: while an attempt runs, its child's cancel scope carries the job's deadline
    (no timer task, no guard task), and the job still fails at its total timeout, before
    the attempt's."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        retry = RetryConfig(total_timeout=300.0, attempt_timeout=1800.0)
        config = sim_config(cloud, max_machines=1, retry=retry)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            await trio.testing.wait_all_tasks_blocked()
            assert task_names(f"{job}-") == [f"{job}-submit"]
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
            failed = conjure.state.jobs[job]
    assert failed.error is not None
    assert failed.error.error_type == "Timeout"
    assert "300 s" in failed.error.message
    assert failed.attempt == 1
