"""``machine down --server-id ID`` of an id the account does not have: gone already, or a
mistyped id. It said "(already gone)", exit 0, and removed a damaged state file, the one
record of the machine still billing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.commands.machine import machine_action
from conjure_actors.errors import UsageError
from tests.clients.test_client_runcomfy import open_client
from tests.commands.test_cmd_machine_damaged_state import CONFIG


def _down(server_id: str) -> argparse.Namespace:
    return argparse.Namespace(action="down", duration=3600.0, wait=600.0, server_id=server_id)


async def test_a_mistyped_id_lists_the_machines_up_and_keeps_the_damaged_file(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The machine meant bills on: it is listed, the refusal says how to stop it, and the
    damaged state file stays."""
    path = tmp_path / "dev.json"
    up = argparse.Namespace(action="up", duration=3600.0, wait=600.0)
    async with open_client() as (sim, rc):
        assert await machine_action(up, CONFIG, path, rc) == 0
        (machine,) = sim.running()
        path.write_text("{not json")
        capsys.readouterr()
        with pytest.raises(UsageError) as caught:
            await machine_action(_down(machine[:-1] + "x"), CONFIG, path, rc)
        assert sim.running() == [machine]
    assert f"machine {machine}: Ready, medium" in capsys.readouterr().out
    said = str(caught.value)
    assert said.startswith(
        f"machine {machine[:-1]}x was not found on the account (gone already, or a mistyped id)"
    )
    assert "machine down --server-id ID`" in said
    assert path.read_text() == "{not json"


async def test_an_id_not_found_with_nothing_up_says_nothing_bills(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No machine up on the account: nothing bills, said so, exit 0."""
    async with open_client() as (_sim, rc):
        assert await machine_action(_down("gone-1"), CONFIG, tmp_path / "dev.json", rc) == 0
    assert capsys.readouterr().out == (
        "machine gone-1 was not found on the account (gone already, or a mistyped id); none of"
        " its machines is up: nothing bills\n"
    )
