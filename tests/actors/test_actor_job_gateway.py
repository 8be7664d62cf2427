"""A job behind a gateway (RunComfy's proxy in front of the machine's ComfyUI) that answers
502/504 after ComfyUI acted: the job looks its prompt up by id and follows it (never sends it
again, P9), and resends an upload (ComfyUI keeps one copy of the same bytes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyFaults

GRAPH = json.loads(bundled_workflow())


def _events(log: eventlog.MemoryLog[Any], name: str) -> list[Any]:
    return [r.event for r in log.records() if type(r.event).__name__ == name]


async def _run_behind_a_gateway(
    tmp_path: Path, faults: ComfyFaults, n: int
) -> tuple[eventlog.MemoryLog[Any], Any, list[str], list[Any]]:
    """``n`` jobs run to the end behind ``faults``: the log, the state, the job ids and the
    ComfyUI simulators of the machines they ran on."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, comfy_faults=faults) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        jobs = [
            await conjure.submit(GRAPH, image=example_sketch_png(), prompt=f"p{i}")
            for i in range(n)
        ]
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state
        sims = [cloud.machine_sim(m) for m in {state.jobs[j].server_id for j in jobs}]
    return log, state, jobs, sims


@pytest.mark.slow
@pytest.mark.parametrize("statuses", [(502, 504), (503,)])
async def test_a_prompt_answered_by_a_gateway_after_queueing_runs_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, statuses: tuple[int, ...]
) -> None:
    """Every POST /prompt queued, then answered 502/504, or the proxy's 503 (Envoy's
    "upstream connect error or disconnect/reset before headers"; before 27be7fc it was
    resent, and each resend queued it again): each job finds its prompt by id and succeeds
    on its first attempt; every prompt ran exactly once."""
    faults = ComfyFaults(
        gateway_error_after_accept_rate=1.0,
        gateway_error_paths=frozenset({"/prompt"}),
        gateway_error_statuses=statuses,
    )
    log, state, jobs, sims = await _run_behind_a_gateway(tmp_path, faults, 2)
    for job in jobs:
        assert state.jobs[job].status == "succeeded", state.jobs[job].error
        assert state.jobs[job].attempt == 1
    assert _events(log, "JobRetrying") == []
    submitted = [e.prompt_id for e in _events(log, "PromptSubmitting")]
    assert len(submitted) == 2
    assert sum(sim.gateway_errors for sim in sims) == 2
    runs = [pid for sim in sims for pid in sim.prompts_run]
    assert sorted(runs) == sorted(submitted)  # each ran once, nothing else ran


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_gateway_errors_on_uploads_and_prompts_never_run_a_prompt_twice(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Half the uploads and prompts answered 502/504 after ComfyUI acted: every job
    succeeds, no prompt runs twice, and each input is stored once."""
    faults = ComfyFaults(gateway_error_after_accept_rate=0.5)
    _, state, jobs, sims = await _run_behind_a_gateway(tmp_path, faults, 4)
    for job in jobs:
        assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert sum(sim.gateway_errors for sim in sims) > 0
    runs = [pid for sim in sims for pid in sim.prompts_run]
    assert len(runs) == len(set(runs)), runs
    for sim in sims:
        uploads = [n for n in sim._input_files() if n.startswith("conjure_")]
        assert all(" (" not in n for n in uploads), uploads
