"""A job cancelled while it downloads: its prompt has run, so nothing is interrupted (a
ComfyUI that ignores ``/interrupt``'s prompt id would stop whatever it runs next: another
job's prompt on a machine of several slots, or another client's)."""

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
from conjure_actors.clients import comfyui as comfyui_mod
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOW = json.loads(bundled_workflow())


async def test_a_job_cancelled_while_it_downloads_interrupts_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_download = comfyui_mod.ComfyUIClient.download_to
    interrupts: list[str | None] = []
    deletes: list[str] = []

    async def slow_download(self: Any, *args: Any, **kwargs: Any) -> Any:
        await trio.sleep(600)
        return await real_download(self, *args, **kwargs)

    async def interrupt(self: Any, prompt_id: str | None = None) -> None:
        interrupts.append(prompt_id)

    async def delete_from_queue(self: Any, prompt_id: str) -> None:
        deletes.append(prompt_id)

    monkeypatch.setattr(comfyui_mod.ComfyUIClient, "download_to", slow_download)
    monkeypatch.setattr(comfyui_mod.ComfyUIClient, "interrupt", interrupt)
    monkeypatch.setattr(comfyui_mod.ComfyUIClient, "delete_from_queue", delete_from_queue)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=0.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(WORKFLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "succeeded")
            await conjure.cancel(job)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
    assert (interrupts, deletes) == ([], [])
