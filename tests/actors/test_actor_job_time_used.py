"""A job's ``retry.total_timeout`` across restarts on the same log: a restart gives it the time
it had left, not its whole time again (a run restarted every 30 min kept a hanging job on a
paid machine for ever), and a job with no time left fails at the start of the run, before a
machine is launched for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.conjure import Conjure
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import ACCRUE_INTERVAL
from conjure_actors.sim.comfyui import ComfyTimings

GRAPH = json.loads(bundled_workflow())
DAY = 86_400.0


def _events_after_last_start(log: eventlog.MemoryLog[Any]) -> list[Any]:
    events = [r.event for r in log.records()]
    last = max(i for i, e in enumerate(events) if isinstance(e, ev.SystemStarted))
    return events[last:]


def _launches_after_last_start(log: eventlog.MemoryLog[Any]) -> list[Any]:
    return [e for e in _events_after_last_start(log) if isinstance(e, ev.MachineLaunchRequested)]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_restart_gives_a_waiting_job_only_the_time_it_had_left(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """400 s of its 600 s in run 1: it fails 200 s into run 2, not 600 s."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3 * DAY):
        async with open_test_cloud(wall.now, ready_delay=DAY) as cloud:
            config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=600.0))
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
                await trio.sleep(400.0)  # it waits for a machine that takes a day to boot
            await trio.sleep(DAY)  # no process alive: not counted
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                t0 = trio.current_time()
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
                elapsed = trio.current_time() - t0
                error = conjure.state.jobs[job].error
    assert error is not None
    assert error.error_type == "Timeout"
    assert 190.0 <= elapsed <= 205.0, elapsed
    assert "over 2 runs" in error.message


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_queued_job_with_no_time_left_fails_at_the_restart_before_a_launch(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1000 s used in run 1, run 2 allows 600 s: it fails at once, no machine launched."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3 * DAY):
        async with open_test_cloud(wall.now, ready_delay=DAY) as cloud:
            config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=2100.0))
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
                await trio.sleep(1000.0)
            lowered = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=600.0))
            async with run_conjure(cloud, log, tmp_path, lowered, wall) as conjure:
                t0 = trio.current_time()
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
                elapsed = trio.current_time() - t0
                error = conjure.state.jobs[job].error
    assert _launches_after_last_start(log) == []
    assert elapsed < 5.0
    assert error is not None
    assert error.error_type == "Timeout"
    assert "retry.total_timeout" in error.message


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_running_job_with_no_time_left_fails_at_the_restart_before_a_launch(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Its prompt ran 200 s in run 1 (the run's stop stopped its machine): at a restart
    that allows 100 s it fails at once instead of being queued for a new machine."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3 * DAY):
        async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
            config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=600.0))
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
                await trio.sleep(200.0)
            lowered = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=100.0))
            async with run_conjure(cloud, log, tmp_path, lowered, wall) as conjure:
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
                error = conjure.state.jobs[job].error
    assert error is not None
    assert error.error_type == "Timeout"
    assert _launches_after_last_start(log) == []


@pytest.mark.slow  # 0.4 s
async def test_a_crashed_run_counts_up_to_its_last_event_not_to_the_restart(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Its prompt ran 300 s, then the process died; a day later the restart gives it what
    it had left of 600 s (the day between, and the restart's start-up, not counted)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    job = ""
    used = 0.0

    async def runs_300_s(conjure: Conjure) -> None:
        nonlocal job, used
        t0 = trio.current_time()
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
        await trio.sleep(300.0)
        used = trio.current_time() - t0  # its machine's boot, then 300 s

    with trio.fail_after(3 * DAY):
        async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
            config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=600.0))
            await crash_when(cloud, log, tmp_path, config, wall, runs_300_s)
            await trio.sleep(DAY)
            log = log.reopen()
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                t0 = trio.current_time()
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
                elapsed = trio.current_time() - t0
                error = conjure.state.jobs[job].error
    assert error is not None
    assert error.error_type == "Timeout"
    assert used > 300.0
    # It may have lived ACCRUE_INTERVAL past its last record, unlogged: that much counts
    # (less its start-up before the wait began), never the day between.
    assert 600.0 - used - ACCRUE_INTERVAL - 10.0 <= elapsed <= 600.0 - used, (elapsed, used)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_an_attempt_re_attached_after_a_crash_has_only_the_time_it_had_left(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Its prompt ran 300 s of a 400 s attempt_timeout, then the process died: the restart
    re-attaches to the prompt, and the attempt times out ~100 s later, not 400 s (a serve
    restarted more often than attempt_timeout never timed one out)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    job = ""
    retry = RetryConfig(attempt_timeout=400.0, total_timeout=5000.0)

    async def runs_300_s(conjure: Conjure) -> None:
        nonlocal job
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
        await trio.sleep(300.0)

    with trio.fail_after(3 * DAY):
        async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
            config = sim_config(cloud, max_machines=1, retry=retry)
            await crash_when(cloud, log, tmp_path, config, wall, runs_300_s)
            await trio.sleep(30.0)  # no process alive: not counted
            log = log.reopen()
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                t0 = trio.current_time()
                await wait_for(conjure, lambda s: s.jobs[job].status == "retrying")
                elapsed = trio.current_time() - t0
    resumed = [e for e in _events_after_last_start(log) if isinstance(e, ev.JobRetrying)]
    assert [e.reason for e in resumed] == ["attempt timed out after 400 s"]
    assert [e for e in _events_after_last_start(log) if isinstance(e, ev.JobStarted)] == []
    # 400 s less its 300 s, less up to ACCRUE_INTERVAL it may have lived unlogged after
    # its last record (the 30 s the process was down at most), not 400 s again.
    assert 100.0 - ACCRUE_INTERVAL - 10.0 <= elapsed <= 130.0, elapsed
