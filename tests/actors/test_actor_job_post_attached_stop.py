"""A run on an attached ComfyUI (--comfyui-url) stopping while a POST hangs does not wait on
it (found by review)."""

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
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event

GRAPH = json.loads(bundled_workflow())


async def test_a_run_on_an_attached_comfyui_does_not_wait_on_a_post_that_hangs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2f0950c: "a run stopping does not wait on it". The attached machine is never stopped
    (no lost signal), and the run's stop does not interrupt prompts (resume re-attaches), so
    the 30 s it waits for the POST serve nothing."""
    sent = trio.Event()

    async def submit(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
        sent.set()
        await trio.sleep_forever()

    monkeypatch.setattr(ComfyUIClient, "submit", submit)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _sim = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        with trio.fail_after(3600):
            async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
                await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
                await sent.wait()
                stopping = trio.current_time()
            stopped = trio.current_time()
    assert stopped - stopping < 5, f"the run took {stopped - stopping:.0f} s to stop"
