"""A resumed job's re-attach survives a failing lookup of its prompt: a 503 on ``GET /queue``
(past the client's own retries) proves nothing, so the lookup is tried again and the prompt
followed once it answers (before, the attempt failed, the job submitted a second prompt and
the machine's one slot was handed on while the first still ran there). Given up before any
lookup answered, the machine is stopped: no other prompt is sent where that one may run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    crash_while_running,
    open_test_cloud,
    run_conjure,
    sim_config,
    wait_for,
)

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings

QUEUE_DOWN = ComfyFaults(http_5xx_rate=1.0, http_5xx_paths=frozenset({"/queue"}))


def _of(log: eventlog.MemoryLog[Any], kind: type) -> list[Any]:
    return [r.event for r in log.records() if isinstance(r.event, kind)]


@pytest.mark.slow
async def test_a_resumed_job_whose_lookup_answers_503_for_a_while_reattaches(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """``GET /queue`` answers 503 for two minutes after the restart: the job keeps looking
    its prompt up, then follows it; one prompt, run once, the job succeeds on attempt 1."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        job = await crash_while_running(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        sim = cloud.machine_sim(log_state_server(log, job))
        sim.faults = QUEUE_DOWN
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await trio.sleep(120)
            sim.faults = ComfyFaults()
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
    assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert state.jobs[job].attempt == 1
    assert _of(log, ev.JobRetrying) == []
    assert len(_of(log, ev.PromptSubmitting)) == 1
    assert len(sim.prompts_run) == 1


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_a_reattach_given_up_unlooked_up_stops_its_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """``GET /queue`` answers 503 until the attempt's deadline: the job gives the re-attach
    up, and its machine, which may still run the prompt, is stopped; no other prompt is
    sent to it (the retry runs on another machine)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        retry = RetryConfig(initial=1.0, max_delay=5.0, attempt_timeout=600.0)
        config = sim_config(cloud, max_machines=1, retry=retry)
        job = await crash_while_running(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        first = log_state_server(log, job)
        cloud.machine_sim(first).faults = QUEUE_DOWN
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(7200):
                await wait_for(conjure, lambda s: s.jobs[job].attempt == 2)
                await wait_for(conjure, lambda s: s.machines[first].status == "stopped")
            state = conjure.state
    prompts = [e.server_id for e in _of(log, ev.PromptSubmitting)]
    assert prompts[0] == first
    assert first not in prompts[1:]
    stops = [e.reason for e in _of(log, ev.MachineStopping) if e.server_id == first]
    assert stops == ["reattach_given_up"]
    assert state.jobs[job].server_id != first


def log_state_server(log: eventlog.MemoryLog[Any], job: str) -> str:
    """The machine the log places ``job``'s last prompt on."""
    (*_, last) = (e for e in _of(log, ev.PromptSubmitting) if e.job_id == job)
    return str(last.server_id)


async def test_a_reattach_cancelled_unlooked_up_stops_its_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Cancelled while every lookup of its prompt fails (and so does the prompt's
    ``DELETE``, ``POST /queue``): the machine, which may still run it, is stopped."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        job = await crash_while_running(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        first = log_state_server(log, job)
        cloud.machine_sim(first).faults = QUEUE_DOWN
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await trio.sleep(60)
            await conjure.cancel(job)
            with trio.fail_after(7200):
                await wait_for(conjure, lambda s: s.machines[first].status == "stopped")
            state = conjure.state
    assert state.jobs[job].status == "cancelled"
    stops = [e.reason for e in _of(log, ev.MachineStopping) if e.server_id == first]
    assert stops == ["reattach_given_up"]
