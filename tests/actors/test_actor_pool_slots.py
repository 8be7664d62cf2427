"""One slot (``jobs_per_machine`` 1), jobs whose first download fails after their prompt
succeeded (a broken output): each is retried on the same machine, and the machine still
runs one prompt at a time (``decide.slots_taken``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors import job as job_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients import errors as cerr
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state

GRAPH = json.loads(bundled_workflow())
IN_COMFYUI = ("submitting", "submitted", "started")


def _most_prompts_at_once(events: list[Any]) -> tuple[int, int]:
    """(most jobs among one machine's leases with a prompt in ComfyUI at once, where)."""
    state = initial_state()
    worst, where = 0, -1
    for i, e in enumerate(events):
        apply(state, e)
        for m in state.machines.values():
            n = sum(1 for j in m.leases if state.jobs[j].execution in IN_COMFYUI)
            if n > worst:
                worst, where = n, i
    return worst, where


@pytest.mark.parametrize("jobs", [3, 6])
async def test_one_slot_runs_one_prompt_at_a_time_through_retries(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    jobs: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each job's first download fails: it is retried (JobRetrying keeps its execution
    "succeeded" and its server id) and leased the same machine again. Between that
    MachineLeased and its JobStarted the pool may serve other requests (a QueueJob, a
    release, a SlotFreed): here the window is widened to 1 s of the mock clock. Fails on
    22d194e (up to 4 prompts at once on the one-slot machine), passes on its parent."""
    original = ComfyUIClient.download_to
    failed: set[Path] = set()

    async def first_fails(self: Any, output: Any, path: Path, **kw: Any) -> Any:
        if Path(path).parent not in failed:
            failed.add(Path(path).parent)
            raise cerr.DownloadError(f"{output.filename}: broken (test)")
        return await original(self, output, path, **kw)

    on_leased = job_module.WorkflowActor._on_leased

    async def late(self: Any, lease: Any) -> None:
        if self.job.status == "retrying":
            await trio.sleep(1.0)
        await on_leased(self, lease)

    monkeypatch.setattr(ComfyUIClient, "download_to", first_fails)
    monkeypatch.setattr(job_module.WorkflowActor, "_on_leased", late)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _sim = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud, jobs_per_machine=1), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            for k in range(jobs):
                await conjure.submit(GRAPH, image=example_sketch_png(), prompt=f"p{k}")
            with trio.fail_after(36000):
                await conjure.wait_until_idle()
    events = [r.event for r in log.records()]
    assert sum(1 for e in events if type(e).__name__ == "JobRetrying") == jobs
    worst, where = _most_prompts_at_once(events)
    shown = ("MachineLeased", "MachineReleased", "JobStarted", "JobRetrying", "PromptSubmitting")
    context = [
        f"{i}: {type(e).__name__} {getattr(e, 'job_id', '')}"
        for i, e in enumerate(events)
        if type(e).__name__ in shown and where - 40 <= i <= where
    ]
    assert worst <= 1, "\n".join(context)
