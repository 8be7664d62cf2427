"""The run stops while a job downloads the outputs of a prompt that has run (paid for): the
outputs come down first, within DOWNLOAD_GRACE, and the job succeeds; a resume would have
run the whole prompt again on a new machine (QA H12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors import job as job_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients import comfyui as comfyui_mod
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

WORKFLOW = json.loads(bundled_workflow())


def _slow_downloads(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = comfyui_mod.ComfyUIClient.download_to

    async def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        await trio.sleep(seconds)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(comfyui_mod.ComfyUIClient, "download_to", slow)


def _on_disk(job: Any) -> bool:
    return all(Path(o.path).is_file() for o in job.outputs)


async def _stop_while_downloading(tmp_path: Path) -> tuple[Any, Any]:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=0.0)) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(WORKFLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "succeeded")
            await conjure.shutdown("interrupted")
            state = conjure.state
        assert cloud.running() == []
    return state.jobs[job], state


async def test_a_stop_during_the_download_lets_the_outputs_come_down(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_downloads(monkeypatch, 3.0)  # two outputs: 6 s, within the grace
    job, _ = await _stop_while_downloading(tmp_path)
    assert job.status == "succeeded"
    assert len(job.outputs) == 2
    assert _on_disk(job)


async def test_a_download_past_the_grace_is_interrupted_for_the_resume(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_downloads(monkeypatch, job_module.DOWNLOAD_GRACE + 5)
    job, _ = await _stop_while_downloading(tmp_path)
    assert job.status == "interrupted"
