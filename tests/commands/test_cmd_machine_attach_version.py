"""``run`` attaches the dev machine of ``machine up`` only if it runs the run's workflow
version. The pool leases an attached machine to a job of any version (it carries none), so
a dev machine of wv-2 took the jobs of a run (or a resume, which now takes the log's
version by itself: b799fd3) of wv-1: each ran on the wrong workflow, billed, and the run's
node catalogue of wv-1 was recorded from the wv-2 machine (review of b799fd3)."""

from __future__ import annotations

import argparse
from pathlib import Path

import trio
import trio.testing

from conjure_actors.commands.machine import attachable_dev_machine, machine_action
from conjure_actors.config import Config, RunComfyConfig
from tests.clients.test_client_runcomfy import VERSION, open_client


def _config(path: Path, version: str) -> Config:
    return Config(dev_state_file=str(path), runcomfy=RunComfyConfig(workflow_version=version))


async def _dev_machine_up(path: Path, rc: object) -> None:
    args = argparse.Namespace(action="up", duration=3600.0, wait=600.0)
    assert await machine_action(args, _config(path, VERSION), path, rc) == 0


async def test_a_dev_machine_of_another_workflow_version_is_not_attached(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "dev.json"
    async with open_client() as (_sim, client):
        await _dev_machine_up(path, client)
        other = _config(path, "wv-2")
        assert await attachable_dev_machine(other, client) is None


async def test_a_dev_machine_of_the_runs_workflow_version_is_attached(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "dev.json"
    async with open_client() as (_sim, client):
        await _dev_machine_up(path, client)
        dev = await attachable_dev_machine(_config(path, VERSION), client)
        assert dev is not None
        assert dev.workflow_version == VERSION


async def test_a_dev_machine_not_attached_for_its_version_is_said_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The user who booted it for this run learns why it is not used, and that it bills."""
    from conjure_actors.commands.machine import skipped_dev_machine_note

    path = tmp_path / "dev.json"
    async with open_client() as (_sim, client):
        await _dev_machine_up(path, client)
    note = skipped_dev_machine_note(_config(path, "wv-2"))
    assert note is not None
    assert f"runs workflow version {VERSION}, not this run's wv-2: not attached" in note
    assert "machine down" in note
    assert skipped_dev_machine_note(_config(path, VERSION)) is None
