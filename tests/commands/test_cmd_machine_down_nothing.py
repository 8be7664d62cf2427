"""``machine down`` with no dev machine recorded: it said "no dev machine recorded in PATH"
(exit 1) and no more; the line now says nothing was stopped and how to stop a machine of
the account by its id."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import trio.testing

from conjure_actors.commands.machine import machine_action
from tests.clients.test_client_runcomfy import open_client
from tests.commands.test_cmd_machine_damaged_state import CONFIG


async def test_down_with_nothing_recorded_says_how_to_stop_one_by_id(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing recorded: nothing stopped, exit 1, and the command that stops one by id."""
    path = tmp_path / "dev.json"
    down = argparse.Namespace(action="down", duration=3600.0, wait=600.0, server_id=None)
    async with open_client() as (_sim, rc):
        assert await machine_action(down, CONFIG, path, rc) == 1
    assert capsys.readouterr().out == (
        f"no dev machine recorded in {path}: nothing stopped (`python -m conjure_actors"
        " machine down --server-id ID` stops one by its id)\n"
    )
