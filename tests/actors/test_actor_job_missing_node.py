"""A job whose workflow names a node class its machine's version lacks (a RunComfy workflow
version is a machine image: the simulated ``wv-core-nodes-1`` has no CONJURE custom node).
ComfyUI refuses such a prompt (400 ``invalid_prompt``), or the version's node catalogue
refuses it before it is sent; either way the job fails at once, in one line naming the class
and the version, and is not retried (the same version would refuse it again)."""

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
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands.cloud_args import VersionCatalogue
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event

CORE = "wv-core-nodes-1"
MISSING = "DepthAnythingV2Preprocessor"  # the CONJURE workflow's custom node


@pytest.mark.slow
@pytest.mark.parametrize("checked", [False, True], ids=["comfyui_refuses", "catalogue_refuses"])
async def test_a_job_using_a_node_its_version_lacks_fails_once_naming_class_and_version(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, checked: bool
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    check = VersionCatalogue(tmp_path / "catalog.json", CORE, lambda _: None) if checked else None
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        config = attrs.evolve(config, runcomfy=attrs.evolve(config.runcomfy, workflow_version=CORE))
        async with run_conjure(cloud, log, tmp_path, config, wall, prompt_check=check) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="a fox"
            )
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
    events = [r.event for r in log.records()]
    (failed,) = [e for e in events if isinstance(e, ev.JobFailed)]
    assert state.jobs[job].status == "failed"
    assert not failed.retryable
    assert [e for e in events if isinstance(e, ev.JobStarted)][1:] == []  # one attempt
    assert MISSING in failed.message
    assert CORE in failed.message
    assert "\n" not in failed.message


async def test_comfyuis_refusal_of_a_missing_node_says_what_fixes_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """No input fixes a node the machine lacks: the line says to use a version whose machines
    have it (it said "fix the workflow inputs")."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        config = attrs.evolve(config, runcomfy=attrs.evolve(config.runcomfy, workflow_version=CORE))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="a fox"
            )
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
    (failed,) = [r.event for r in log.records() if isinstance(r.event, ev.JobFailed)]
    assert "a workflow version whose machines have that node" in failed.message
    assert "fix the workflow inputs" not in failed.message


async def test_comfyuis_refusal_of_a_missing_node_names_it_in_the_job_s_error(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """ComfyUI names the node only in its ``details`` ("Node ID '#17'"): the rejection and
    the job's error carry its id and class (QA G12: both were null)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        config = attrs.evolve(config, runcomfy=attrs.evolve(config.runcomfy, workflow_version=CORE))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="a fox"
            )
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            error = conjure.state.jobs[job].error
    (rejected,) = [r.event for r in log.records() if isinstance(r.event, ev.PromptRejected)]
    assert (rejected.node_id, rejected.class_type) == ("17", MISSING)
    assert error is not None
    assert (error.node_id, error.node_type) == ("17", MISSING)
