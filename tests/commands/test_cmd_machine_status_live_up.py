"""``machine status`` while a ``machine up`` runs (it holds the state file's lock until its
machine is recorded): the launch record is that live launch's, not an interrupted one's.
It said "launched by an interrupted `machine up` ... `machine down` stops it" (and that
`machine down` would be refused while the `up` runs)."""

from __future__ import annotations

import argparse
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.commands.machine import PendingLaunch, machine_action, write_pending_launch
from conjure_actors.config import Config, RunComfyConfig
from tests.clients.test_client_runcomfy import VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


def _status() -> argparse.Namespace:
    return argparse.Namespace(action="status", duration=3600.0, wait=600.0)


@contextmanager
def _up_running(path: Path) -> Iterator[None]:
    """The state file's lock held, as a running ``machine up`` holds it."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _pending(server_id: str | None, now: float) -> PendingLaunch:
    return PendingLaunch(
        server_type="medium",
        workflow_version=VERSION,
        estimated_duration=3600,
        known_server_ids=[],
        requested_at=now,
        server_id=server_id,
    )


async def test_status_names_a_running_ups_machine_as_being_launched(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its machine Starting: "being launched by a `machine up` running now", no advice to
    stop it with `machine down`."""
    path = tmp_path / "dev.json"
    async with open_client() as (_sim, rc):
        server = await rc.launch(VERSION, "medium", 3600)
        write_pending_launch(path, _pending(server.server_id, time.time()))
        with _up_running(path):
            await machine_action(_status(), CONFIG, path, rc)
    out = capsys.readouterr().out
    assert f"machine {server.server_id} (Starting), being launched by a `machine up` running" in out
    assert "interrupted" not in out
    assert "`machine down` stops it" not in out


async def test_status_of_a_running_ups_launch_not_listed_yet_says_it_is_under_way(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No machine of it listed yet (its launch is on its way): not "an interrupted `machine
    up` left a launch: no machine of it is up"."""
    path = tmp_path / "dev.json"
    async with open_client() as (_sim, rc):
        write_pending_launch(path, _pending(None, time.time()))
        with _up_running(path):
            await machine_action(_status(), CONFIG, path, rc)
    out = capsys.readouterr().out
    assert out == "a `machine up` running now is launching a machine (not listed yet)\n"
    assert path.with_name(path.name + ".launching").exists()
