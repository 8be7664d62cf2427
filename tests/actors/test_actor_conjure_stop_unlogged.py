"""A shutdown without a log (the journal refuses writes) stops the machines straight through
RunComfy; the state never hears of it. Its answer, the machines that may still run, named
them all the same (run and serve print "machines that may still be running: ..." after a
line saying they were stopped): it names only those whose stop did not go through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, sim_config, wait_for

import eventlog
from conjure_actors.actors.conjure import RunStoppedError
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.errgroups import meaningful
from conjure_actors.sim.comfyui import ComfyTimings
from conjure_actors.testing import open_simulated_conjure

GRAPH = json.loads(bundled_workflow())
SLOW = ComfyTimings(scale=200.0)


async def test_a_shutdown_without_a_log_names_no_machine_it_stopped_as_still_running(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills mid-run, then the run stops: its machine is stopped, and neither the
    shutdown's answer nor ``running_machines`` names it."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    full = False
    original = type(log).stage_many

    def stage_many(self: Any, events: Any, *args: Any, **kwargs: Any) -> Any:
        if full:
            raise eventlog.DiskFullError("r.log", "No space left on device")
        return original(self, events, *args, **kwargs)

    monkeypatch.setattr(type(log), "stage_many", stage_many)
    seen: dict[str, Any] = {}

    async def run_then_stop(cloud: Any) -> None:
        nonlocal full
        async with open_simulated_conjure(
            cloud, log, sim_config(cloud), wall=wall, out_dir=tmp_path
        ) as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            seen["before"] = conjure.running_machines()
            full = True
            seen["left"] = await conjure.shutdown("interrupted")
            seen["running"] = conjure.running_machines()
            seen["stops"] = conjure.stop_stops

    async with open_test_cloud(wall.now, timings=SLOW) as cloud:
        with pytest.raises(BaseException) as caught:  # noqa: PT011 - checked just below
            await run_then_stop(cloud)
        assert cloud.running() == []
    assert isinstance(meaningful(caught.value), RunStoppedError), caught.value
    assert seen["before"]
    assert all(m in seen["stops"] for m in seen["before"]), seen
    assert seen["left"] == []
    assert seen["running"] == []
