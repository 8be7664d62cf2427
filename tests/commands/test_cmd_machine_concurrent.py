"""Two `machine up` at once on the same state file (two terminals, a script run twice):
each launched a machine, each overwrote the other's launch record and then the state file,
and the machine whose record lost billed until its lease ended, recorded nowhere (`machine
down` stops only the recorded one). One at a time now: the second is refused in one line
(review of 0d524e6)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import trio
import trio.testing

from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.commands.machine import machine_action, read_dev_machine
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.errors import UsageError
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


async def test_two_machine_ups_at_once_leave_no_machine_unrecorded(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "dev.json"
    args = argparse.Namespace(action="up", duration=3600.0, wait=600.0)
    refused: list[str] = []

    async def up(client: Any) -> None:
        try:
            await machine_action(args, CONFIG, path, client)
        except UsageError as exc:
            refused.append(str(exc))

    async with open_client() as (sim, client):
        other = RunComfyClient(BASE, USER, TOKEN, http=client._http)  # another process
        async with trio.open_nursery() as nursery:
            nursery.start_soon(up, client)
            nursery.start_soon(up, other)
        recorded = read_dev_machine(path)
        assert recorded is not None
        assert sim.running() == [recorded.server_id], "a machine up, recorded nowhere"
    assert len(refused) == 1
    assert "machine up" in refused[0]
