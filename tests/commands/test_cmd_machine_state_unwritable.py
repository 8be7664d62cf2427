"""`machine up` whose launch record cannot be written (the state file's directory read-only,
the disk full): one line (a UsageError: exit 2) naming the file, before anything launches;
it was an OSError's traceback (review of 0d524e6)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from conjure_actors.actors import files
from conjure_actors.commands.machine import machine_action
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.errors import UsageError
from tests.clients.test_client_runcomfy import VERSION, open_client


async def test_up_with_an_unwritable_state_directory_is_one_line_and_launches_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(path: Path, data: bytes, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files, "write_atomic", refused)  # root writes anywhere: say so here
    path = tmp_path / "dev.json"
    config = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))
    args = argparse.Namespace(action="up", duration=3600.0, wait=600.0)
    async with open_client() as (sim, client):
        with pytest.raises(UsageError, match=r"dev\.json\.launching.*Permission denied"):
            await machine_action(args, config, path, client)
        assert sim.running() == []
