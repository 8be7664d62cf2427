"""`machine up` whose launch RunComfy made but answered unreadably (a 200 with a proxy's
page): the machine is found by the launch's marker and recorded, not left billing with its
launch record removed as "refused" (review of 0d524e6)."""

from __future__ import annotations

import argparse
from pathlib import Path

import trio
import trio.testing

from conjure_actors.commands.machine import machine_action, pending_path, read_dev_machine
from conjure_actors.config import Config, RunComfyConfig
from tests.clients.test_client_runcomfy import VERSION
from tests.clients.test_client_runcomfy_launch_unreadable import open_unreadable_launch


async def test_up_whose_launch_answer_is_unreadable_records_the_machine_it_started(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "dev.json"
    config = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))
    args = argparse.Namespace(action="up", duration=3600.0, wait=600.0)
    async with open_unreadable_launch() as (sim, client):
        try:
            await machine_action(args, config, path, client)
        finally:
            (started,) = sim.running()
            recorded = read_dev_machine(path)
            assert recorded is not None, f"machine {started} billing, recorded nowhere"
            assert recorded.server_id == started
            assert not pending_path(path).exists()
