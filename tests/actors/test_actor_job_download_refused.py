"""A download ComfyUI's ``/view`` refuses for the file's name (400: a name holding ``..``)
fails the job at once, ``DownloadRefused``: every attempt would run the whole paid graph to
the same answer (QA7: it was retried, three attempts, three runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_name_the_view_refuses_fails_the_job_after_one_attempt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    save = next(n for n, node in graph.items() if node["class_type"] == "SaveImage")
    graph[save]["inputs"]["filename_prefix"] = "my..render"  # what preflight now refuses
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(graph)
        with trio.fail_after(7200):
            await conjure.wait_until_idle()
        state = conjure.state
    failed = state.jobs[job]
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.error_type == "DownloadRefused"
    assert failed.attempt == 1
