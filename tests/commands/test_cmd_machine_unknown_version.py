"""``machine up --workflow-version`` of a version the account does not have is bad input:
a UsageError (exit 2) naming the account's versions; it was a LaunchError, exit 1, as if
RunComfy had failed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import trio.testing

from conjure_actors.commands.machine import machine_action
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.errors import UsageError
from tests.clients.test_client_runcomfy import open_client


async def test_up_of_an_unknown_version_is_a_usage_error_naming_the_known_ones(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Nothing launched, nothing recorded: a UsageError naming the account's versions."""
    up = argparse.Namespace(action="up", duration=3600.0, wait=600.0)
    config = Config(runcomfy=RunComfyConfig(workflow_version="wv-nope"))
    path = tmp_path / "dev.json"
    async with open_client() as (sim, rc):
        sim.any_version = False  # refused as RunComfy (and `python -m conjure_actors sim`) does
        with pytest.raises(UsageError) as caught:
            await machine_action(up, config, path, rc)
        assert sim.running() == []
    said = str(caught.value)
    assert said.startswith("RunComfy does not know workflow version 'wv-nope'")
    assert sim.workflows[0].version_id in said
    assert not path.exists()
