"""A job that gives its re-attach up before any lookup of its prompt answered gives its
machine back broken: with ``jobs_per_machine >= 2`` another job's prompt may run there too.
The machine takes no new job, and is stopped (reason ``reattach_given_up``) once that other
job is done, not at once (which killed the other prompt, to be run and paid for again)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings

GRAPH = json.loads(bundled_workflow())
QUEUE_DOWN = ComfyFaults(http_5xx_rate=1.0, http_5xx_paths=frozenset({"/queue"}))


def _of(log: eventlog.MemoryLog[Any], kind: type) -> list[Any]:
    return [r.event for r in log.records() if isinstance(r.event, kind)]


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_machine_given_back_broken_is_stopped_after_its_other_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    # Prompts of ~5 minutes: the other job's, submitted 7.5 minutes after the restart,
    # runs when the re-attach is given up (at its attempt's deadline).
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        retry = RetryConfig(initial=1.0, max_delay=5.0, attempt_timeout=600.0)
        config = sim_config(cloud, max_machines=1, jobs_per_machine=2, retry=retry)
        old = ""

        async def until_started(conjure: Any) -> None:
            nonlocal old
            old = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="old")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[old].execution == "started")

        await crash_when(cloud, log, tmp_path, config, wall, until_started)
        log = log.reopen()
        first = next(e.server_id for e in _of(log, ev.PromptSubmitting) if e.job_id == old)
        cloud.machine_sim(first).faults = QUEUE_DOWN  # no lookup of the old prompt answers
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await trio.sleep(450)
            other = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="other")
            with trio.fail_after(20000):
                await wait_for(conjure, lambda s: s.jobs[old].status == "retrying")
                assert conjure.state.jobs[other].execution == "started"  # its prompt runs there
                await conjure.wait_until_idle()
            state = conjure.state
    assert state.jobs[other].status == "succeeded", state.jobs[other].error
    assert state.jobs[other].attempt == 1
    assert state.jobs[other].server_id == first
    assert state.jobs[old].status == "succeeded", state.jobs[old].error
    assert state.jobs[old].server_id != first  # the retry: never sent to that machine again
    records = list(log.records())
    stops = [
        (r.seq, r.event.reason)
        for r in records
        if isinstance(r.event, ev.MachineStopping) and r.event.server_id == first
    ]
    assert [reason for _, reason in stops] == ["reattach_given_up"]
    other_done = next(
        r.seq for r in records if isinstance(r.event, ev.JobSucceeded) and r.event.job_id == other
    )
    assert stops[0][0] > other_done
