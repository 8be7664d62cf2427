"""What a job records when its prompt is refused: the node and class ComfyUI's ``node_errors``
name travel on the ``PromptRejected`` event into the job's error (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.actors.view import error_record
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event


def _graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(bundled_workflow("conjure_flux_mesh.json"))
    return graph


async def test_a_rejection_records_its_first_node_and_class(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A 400 naming node 20 (KSampler): the event and the job's error carry its id and class,
    and the run.error record reads them from there."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(
            _graph(), image=example_sketch_png(), prompt="x", sets=["20.steps=-5"]
        )
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state
    rejected = [r.event for r in log.records() if isinstance(r.event, ev.PromptRejected)]
    assert [(e.node_id, e.class_type) for e in rejected] == [("20", "KSampler")]
    error = state.jobs[job].error
    assert error is not None
    assert (error.node_id, error.node_type) == ("20", "KSampler")
    record = error_record(state.jobs[job])
    assert (record["node_id"], record["node_type"]) == ("20", "KSampler")
