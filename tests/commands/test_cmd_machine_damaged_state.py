"""``machine down`` with a damaged state file (truncated, edited, a disk error): the machine
it recorded is still stopped (its id read from what is left), or, when no id is left, the
account's machines that are up are listed with the command that stops one by id; nothing
is guessed, and no line names an exception class or advises the command that just failed."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.clock import TrioWallClock
from conjure_actors.commands.machine import (
    machine_action,
    pending_path,
    read_dev_machine,
    read_pending_launch,
)
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.errors import UsageError
from tests.clients.test_client_runcomfy import VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


def _args(action: str, **more: object) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0, **more)


async def test_down_stops_the_machine_of_a_truncated_state_file(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The QA case: the state file cut to 60 bytes still holds the server id: stopped, the
    file removed, exit 0."""
    path = tmp_path / "dev.json"
    # The sim's clock starts at this process's: the command reads its leases' ends.
    async with open_client(wall=TrioWallClock(time.time())) as (sim, client):
        assert await machine_action(_args("up"), CONFIG, path, client) == 0
        (machine,) = sim.running()
        path.write_bytes(path.read_bytes()[:60])
        capsys.readouterr()
        assert await machine_action(_args("down"), CONFIG, path, client) == 0
        assert sim.running() == []
    out = capsys.readouterr().out
    assert f"dev machine {machine} (read from the damaged {path}, now removed) stopped" in out
    assert not path.exists()


async def test_down_lists_the_machines_up_when_no_id_is_left_and_stops_none(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No id left: each machine up is one line, and the error gives the command that stops
    one by id (not `machine down` alone); the machine is not stopped by a guess."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        assert await machine_action(_args("up"), CONFIG, path, client) == 0
        (machine,) = sim.running()
        path.write_text("{not json")
        capsys.readouterr()
        with pytest.raises(UsageError) as info:
            await machine_action(_args("down", state_file=str(path)), CONFIG, path, client)
        assert sim.running() == [machine]
    assert (
        f"machine {machine}: Ready, medium, workflow version {VERSION}" in capsys.readouterr().out
    )
    message = str(info.value)
    assert f"machine down --server-id ID --state-file {path}`" in message
    assert "Error" not in message
    assert path.exists()


async def test_down_by_id_stops_that_machine_and_removes_the_damaged_file(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``machine down --server-id ID``, as the listing advised: stopped, the damaged state
    file removed."""
    path = tmp_path / "dev.json"
    # The sim's clock starts at this process's: the command reads its leases' ends.
    async with open_client(wall=TrioWallClock(time.time())) as (sim, client):
        assert await machine_action(_args("up"), CONFIG, path, client) == 0
        (machine,) = sim.running()
        path.write_text("{not json")
        capsys.readouterr()
        assert await machine_action(_args("down", server_id=machine), CONFIG, path, client) == 0
        assert sim.running() == []
    out = capsys.readouterr().out
    assert f"machine {machine} stopped; cost $" in out
    assert not path.exists()


async def test_down_removes_an_old_damaged_file_when_nothing_is_up(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """No id left and no machine up on the account (the launch long past): nothing bills,
    the damaged file goes, exit 0."""
    path = tmp_path / "dev.json"
    path.write_text("{not json")
    old = time.time() - 3600
    os.utime(path, (old, old))
    async with open_client() as (_sim, client):
        assert await machine_action(_args("down"), CONFIG, path, client) == 0
    assert not path.exists()


@pytest.mark.parametrize("damage", [b"{not json", b'{"server_id": "s"}', b"\xff\xfe"])
@pytest.mark.parametrize("which", ["state", "launch"])
def test_a_damaged_record_is_said_without_a_class_name(
    tmp_path: Path, damage: bytes, which: str
) -> None:
    """The line of a damaged record (for ``up``/``status``) says what is wrong in words and
    that ``machine down`` stops its machine."""
    path = tmp_path / "dev.json"
    file = path if which == "state" else pending_path(path)
    file.write_bytes(damage)
    read = read_dev_machine if which == "state" else read_pending_launch
    with pytest.raises(UsageError) as info:
        read(path)
    message = str(info.value)
    assert "damaged" in message
    assert f"machine down --state-file {path}`" in message
    assert "Error" not in message
    assert "\n" not in message
