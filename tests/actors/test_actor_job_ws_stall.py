"""A prompt with SaveImageWebsocket nodes keeps following its socket when its job is
noticed stalled (a prompt queued behind another on its machine makes no progress for a
while): its images come only over that socket, so following it by polling instead lost them
and ran (and paid for) the prompt again, though the socket never went down."""

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
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


async def _two_in_a_row(tmp_path: Path) -> tuple[Any, list[str], Any, float]:
    """Two jobs of a slow SaveImageWebsocket workflow (node 2 sends 2 images) on one machine
    of two slots: the second prompt waits in its queue longer than the stall time. Returns
    the state, the job ids, the log and the stall time."""
    graph = json.loads((WORKFLOWS / "ws_preview.json").read_text())
    graph["1"]["inputs"].update(width=512, height=512)  # slow: the second waits > stall time
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=1_000_000.0)) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=2)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            jobs = [await conjure.submit(graph), await conjure.submit(graph)]
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            return conjure.state, jobs, log, config.monitor.stall_seconds


@pytest.mark.slow
async def test_a_ws_prompt_queued_behind_another_keeps_its_images(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    state, jobs, log, _ = await _two_in_a_row(tmp_path)
    for j in jobs:
        job = state.jobs[j]
        assert (job.status, job.attempt, job.error) == ("succeeded", 1, None)
        assert sorted(Path(o.path).name for o in job.outputs) == ["2_00000.png", "2_00001.png"]
    submitted = [r.event for r in log.records() if isinstance(r.event, ev.PromptSubmitting)]
    assert len(submitted) == 2  # none run twice


@pytest.mark.slow
async def test_a_prompt_queued_behind_another_of_ours_is_not_said_stalled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The second prompt waits its turn behind the first on their one machine, silent for
    longer than the stall time: no JobStalled (a "stalled: no progress" line for a prompt
    that merely waited), and both succeed."""
    state, jobs, log, stall_seconds = await _two_in_a_row(tmp_path)
    assert [state.jobs[j].status for j in jobs] == ["succeeded", "succeeded"]
    started = [r.event.at for r in log.records() if isinstance(r.event, ev.ExecutionStarted)]
    assert max(started) - min(started) > stall_seconds  # it did wait that long
    assert [r.event for r in log.records() if isinstance(r.event, ev.JobStalled)] == []
