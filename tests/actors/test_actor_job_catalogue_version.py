"""The node catalogue a run records for its workflow version comes from a machine of that
version only. A resumed log with unfinished jobs of two versions is run with either one
given (b799fd3: "each job and launch keeps its own"); the first machine up, of the other
version, gave its catalogue, which was kept (0600, on disk, for every later run) as the
given version's, and each prompt of the given version was then checked against the wrong
node catalogue (review of b799fd3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands.cloud_args import VersionCatalogue
from conjure_actors.domain.events import Event

GIVEN = "wv-core-nodes-1"  # the run's version (--workflow-version)
OTHER = "wv-conjure-flux-mesh-1"  # an unfinished job's own version, from the log


async def test_a_job_of_another_version_does_not_give_the_runs_catalogue(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    path = tmp_path / "catalogs" / f"{GIVEN}.json"
    notes: list[str] = []
    check = VersionCatalogue(path, GIVEN, notes.append)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        config = attrs.evolve(
            config, runcomfy=attrs.evolve(config.runcomfy, workflow_version=GIVEN)
        )
        async with run_conjure(cloud, log, tmp_path, config, wall, prompt_check=check) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()),
                image=example_sketch_png(),
                prompt="a fox",
                workflow_version=OTHER,
            )
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
            assert state.jobs[job].status == "succeeded", state.jobs[job]
            (machine,) = [m for m in state.machines.values() if m.kind == "runcomfy"]
            assert machine.workflow_version == OTHER
    assert not path.exists(), f"{GIVEN}'s catalogue recorded from a machine of {OTHER}"
    assert not check.fetched
