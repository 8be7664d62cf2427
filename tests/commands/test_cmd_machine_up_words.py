"""``machine up`` says what is true of what was asked: a dev machine of ANOTHER workflow
version up was "already up (Ready)", exit 0 (a `run` of the version asked does not attach
to it); with --state-file, "`run` attaches to it" (run reads the config's dev_state_file)."""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
import pytest
import trio.testing

from conjure_actors.commands.machine import machine_action
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.errors import UsageError
from tests.clients.test_client_runcomfy import open_client
from tests.commands.test_cmd_machine_damaged_state import CONFIG, VERSION


def _up(**more: object) -> argparse.Namespace:
    return argparse.Namespace(action="up", duration=3600.0, wait=600.0, **more)


async def test_up_of_another_version_than_the_one_up_is_refused_saying_both(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Another version than the dev machine's: refused naming both; the machine stays up."""
    path = tmp_path / "dev.json"
    other = Config(runcomfy=RunComfyConfig(workflow_version="wv-other"))
    async with open_client() as (sim, rc):
        assert await machine_action(_up(), CONFIG, path, rc) == 0
        (machine,) = sim.running()
        with pytest.raises(UsageError) as caught:
            await machine_action(_up(), other, path, rc)
        assert sim.running() == [machine]
    assert str(caught.value) == (
        f"dev machine {machine} is already up (Ready) with workflow version {VERSION}, not"
        " wv-other: stop it first (`python -m conjure_actors machine down`), or pass another"
        " --state-file for a second dev machine"
    )


async def test_up_of_the_same_version_is_already_up(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same version: 'already up', exit 0 (unchanged)."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, rc):
        assert await machine_action(_up(), CONFIG, path, rc) == 0
        capsys.readouterr()
        assert await machine_action(_up(), CONFIG, path, rc) == 0
        (machine,) = sim.running()
    assert capsys.readouterr().out == (
        f"dev machine {machine} is already up (Ready); state file {path}\n"
    )


async def test_up_with_a_state_file_says_how_run_finds_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --state-file: how `run` finds that file, and `machine down --state-file`."""
    path = tmp_path / "dev.json"
    config = attrs.evolve(CONFIG, dev_state_file=str(tmp_path / "elsewhere.json"))
    async with open_client() as (_sim, rc):
        assert await machine_action(_up(state_file=str(path)), config, path, rc) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (
        f"`run` attaches to it while it is alive if its dev_state_file is {path}"
        f" (CONJURE_DEV_STATE_FILE={path}); `python -m conjure_actors machine down"
        f" --state-file {path}` stops it"
    )
