"""Every prompt the dead process sent to one machine went under that machine socket's one
client id: after the restart, with ``jobs_per_machine >= 2``, all of them are followed over
one socket under that id, shared (before, the first job took the id and the others got no
socket: no progress, and their SaveImageWebsocket images lost, so those prompts ran, and
were paid for, twice)."""

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
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


async def _two_then_crash(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    tmp_path: Path,
    config: Any,
    wall: Any,
    submit: Any,
) -> list[str]:
    """Submit two jobs (``submit(conjure, n)``), crash once both prompts are on the machine
    and one runs; their ids."""
    jobs: list[str] = []

    async def until_started(conjure: Any) -> None:
        jobs.extend([await submit(conjure, 0), await submit(conjure, 1)])
        with trio.fail_after(3600):
            await wait_for(
                conjure,
                lambda s: (
                    all(s.jobs[j].prompt_id is not None for j in jobs)
                    and any(s.jobs[j].execution == "started" for j in jobs)
                ),
            )

    await crash_when(cloud, log, tmp_path, config, wall, until_started)
    return jobs


def _submitting(log: eventlog.MemoryLog[Any]) -> list[ev.PromptSubmitting]:
    return [r.event for r in log.records() if isinstance(r.event, ev.PromptSubmitting)]


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_two_reattached_prompts_on_one_machine_both_log_their_progress(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    graph = json.loads(bundled_workflow())

    async def submit(conjure: Any, n: int) -> str:
        # Different text: the second prompt is not answered from ComfyUI's cache (which
        # would send no progress at all).
        return str(await conjure.submit(graph, image=example_sketch_png(), prompt=f"x{n}"))

    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=2)
        jobs = await _two_then_crash(cloud, log, tmp_path, config, wall, submit)
        log = log.reopen()
        assert len({s.client_id for s in _submitting(log)}) == 1  # one machine socket's id
        before = len(list(log.records()))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
    after = [r.event for r in list(log.records())[before:]]
    for j in jobs:
        assert (state.jobs[j].status, state.jobs[j].attempt) == ("succeeded", 1)
        assert any(isinstance(e, ev.NodeProgress) and e.job_id == j for e in after), j


@pytest.mark.slow
async def test_two_reattached_ws_prompts_on_one_machine_keep_their_images(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    graph = json.loads((WORKFLOWS / "ws_preview.json").read_text())  # node 2 sends 2 images
    graph["1"]["inputs"].update(width=512, height=512)

    async def submit(conjure: Any, n: int) -> str:
        return str(await conjure.submit(graph))

    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=1_000_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=2)
        jobs = await _two_then_crash(cloud, log, tmp_path, config, wall, submit)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
    for j in jobs:
        job = state.jobs[j]
        assert (job.status, job.attempt, job.error) == ("succeeded", 1, None)
        assert sorted(Path(o.path).name for o in job.outputs) == ["2_00000.png", "2_00001.png"]
    assert len(_submitting(log)) == 2  # neither prompt run again
