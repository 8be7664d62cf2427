"""The pre-flight on RunComfy: the node catalogue of a workflow version is fetched from a dev
machine of it, kept on disk, and checked against on later runs with no machine up."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import eventlog
from conjure_actors.commands.validate import catalogue_path
from conjure_actors.config import Config
from conjure_actors.domain import events as ev
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud

pytestmark = pytest.mark.slow

VERSION = "wv-conjure-flux-mesh-1"
CONJURE = str(
    Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows" / "conjure_flux_mesh.json"
)


@asynccontextmanager
async def served() -> AsyncIterator[ServedCloud]:
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=0.5, deleting_delay=0.2, rate_per_second=20, burst=20)
    )
    async with trio.open_nursery() as nursery:
        cloud: ServedCloud = await nursery.start(partial(serve_cloud, timings=timings, seed=3))
        yield cloud
        nursery.cancel_scope.cancel()


def _kept(cloud: ServedCloud, cwd: Path) -> Path:
    """Where the CLI keeps VERSION's catalogue (the simulator's own key, not RunComfy's)."""
    base = Config()
    config = attrs.evolve(
        base,
        dev_state_file=str(cwd / "state" / "dev.json"),
        runcomfy=attrs.evolve(base.runcomfy, base_url=cloud.base_url, user_id=cloud.user_id),
    )
    return catalogue_path(config, VERSION)


async def _cli(cloud: ServedCloud, cwd: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    env.update(
        RUNCOMFY_API_BASE_URL=cloud.base_url,
        RUNCOMFY_USER_ID=cloud.user_id,
        RUNCOMFY_API_TOKEN=cloud.token,
        CONJURE_DEV_STATE_FILE=str(cwd / "state" / "dev.json"),
        CONJURE_POOL_POLL_INTERVAL="0.2",
    )
    with trio.fail_after(90):
        proc = await trio.run_process(
            [sys.executable, "-m", "conjure_actors", *args],
            cwd=cwd,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return proc.returncode, proc.stderr.decode()


async def test_version_catalogue_is_recorded_then_used_without_a_machine(tmp_path: Path) -> None:
    """With a dev machine up, a bad combo value is refused from its /object_info and the
    catalogue is kept; after machine down, the kept one refuses it again (no launch), and
    validate --workflow-version says the same line."""
    bad = ["--workflow-version", VERSION, "--set", '20.scheduler="nope"', "--log", "r.log"]
    async with served() as cloud:
        code, err = await _cli(cloud, tmp_path, "machine", "up", "--workflow-version", VERSION)
        assert code == 0, err
        code, err = await _cli(cloud, tmp_path, "run", *bad)
        assert code == 2, err
        assert "node 20 (KSampler) input 'scheduler': 'nope' is not one of:" in err
        kept = _kept(cloud, tmp_path)
        assert kept.stat().st_mode & 0o777 == 0o600
        code, err = await _cli(cloud, tmp_path, "machine", "down")
        assert code == 0, err
        launched = len(cloud.runcomfy.billing())
        code, err = await _cli(cloud, tmp_path, "run", *bad)
        assert code == 2, err
        assert "node 20 (KSampler) input 'scheduler': 'nope' is not one of:" in err
        assert not err.startswith("note:")
        assert len(cloud.runcomfy.billing()) == launched  # the dev machine only
        assert not (tmp_path / "r.log").exists()
        code, said = await _cli(cloud, tmp_path, "validate", CONJURE, *bad[:4])
        assert (code, said) == (2, err)  # validate --workflow-version says what run says


async def test_without_a_recorded_catalogue_the_run_says_what_is_not_checked(
    tmp_path: Path,
) -> None:
    """No dev machine and nothing kept: a custom class is named in a note (not refused),
    and numbers are still checked against the bundled catalogue before any launch."""
    (tmp_path / "w.json").write_text(
        '{"1": {"class_type": "MyCustomNode", "inputs": {}},'
        ' "2": {"class_type": "EmptyLatentImage",'
        ' "inputs": {"width": 7, "height": 512, "batch_size": 1}},'
        ' "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0],'
        ' "filename_prefix": "x"}}}'
    )
    async with served() as cloud:
        code, err = await _cli(cloud, tmp_path, "run", "w.json", "--workflow-version", VERSION)
        launched = len(cloud.runcomfy.billing())
    assert code == 2, err
    assert err.splitlines() == [
        f"note: workflow version {VERSION}: no node catalogue recorded yet (a run records it"
        " from its first machine and checks each prompt against it before submitting; so does"
        " `machine up`): checked against the bundled node catalogue (ComfyUI core"
        " nodes and the CONJURE workflow's); custom nodes are checked for structure only and"
        " model file names are not checked (not in it: MyCustomNode)",
        "error: w.json: workflow has 1 problem: node 2 (EmptyLatentImage) input 'width':"
        " 7 is below the minimum 16",
    ]
    assert launched == 0


CUSTOM = (
    '{"1": {"class_type": "MyCustomNode", "inputs": {}},'
    ' "2": {"class_type": "EmptyLatentImage",'
    ' "inputs": {"width": 512, "height": 512, "batch_size": 1}},'
    ' "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0],'
    ' "filename_prefix": "x"}}}'
)


async def test_first_run_records_the_catalogue_from_its_machine_and_checks_before_submit(
    tmp_path: Path,
) -> None:
    """No catalogue recorded: the run's first machine gives its /object_info, which is kept,
    and the prompt it refuses (a class the version lacks) is never POSTed: the job fails
    with the pre-flight's line. The next run refuses it before launching any machine."""
    (tmp_path / "w.json").write_text(CUSTOM)
    line = "node 1: unknown class 'MyCustomNode' (not in the node catalog)"
    async with served() as cloud:
        kept = _kept(cloud, tmp_path)
        code, err = await _cli(
            cloud, tmp_path, "run", "w.json", "--workflow-version", VERSION, "--log", "1.log"
        )
        assert code == 1, err
        assert "Traceback" not in err
        assert line in err
        assert kept.stat().st_mode & 0o777 == 0o600
        events: list[Any] = [r.event for r in eventlog.read(tmp_path / "1.log", ev.Event)]
        assert not any(isinstance(e, ev.PromptSubmitted) for e in events)
        rejected = [e for e in events if isinstance(e, ev.PromptRejected)]
        assert [(e.error_type, e.node_id, e.class_type) for e in rejected] == [
            ("catalogue_check", "1", "MyCustomNode")
        ]
        assert cloud.machines
        assert all(not m._history for m in cloud.machines.values())  # nothing ran
        assert cloud.token not in err
        launched = len(cloud.runcomfy.billing())
        code, err = await _cli(
            cloud, tmp_path, "run", "w.json", "--workflow-version", VERSION, "--log", "2.log"
        )
        assert (code, err.splitlines()) == (2, [f"error: w.json: workflow has 1 problem: {line}"])
        assert len(cloud.runcomfy.billing()) == launched
        assert not (tmp_path / "2.log").exists()
