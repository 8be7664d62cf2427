"""The assembled runtime (open_conjure) against the in-memory simulated cloud, MockClock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing
from conftest import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event

CONJURE = bundled_workflow().decode()


def _graph() -> dict[str, Any]:
    import json

    return json.loads(CONJURE)


async def test_one_conjure_job_end_to_end(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The CONJURE workflow runs on a launched machine: a PNG and a GLB come out."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="a fox")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
            assert state.jobs[job].status == "succeeded", state.jobs[job]
            kinds = sorted(o.kind for o in state.jobs[job].outputs)
            assert kinds == ["image", "mesh"]
            for o in state.jobs[job].outputs:
                assert Path(o.path).is_file()
        assert cloud.running() == []
