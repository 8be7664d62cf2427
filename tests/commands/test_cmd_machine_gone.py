"""``machine status|down`` of a dev machine that vanished (or whose lease ran out) before
the look: nobody tells when it went, so its bill ends at the first look that found it
gone at the latest; ``status`` stops growing it, ``down`` says "already gone" and "at
most", never "stopped" with a bill to the DELETE's 404."""

from __future__ import annotations

import argparse
import fcntl
import os
import types
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands import machine as machine_cmd
from conjure_actors.commands.machine import (
    DevMachine,
    machine_action,
    read_dev_machine,
    write_dev_machine,
)
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros
from conjure_actors.sim.runcomfy import RunComfyTimings
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


def _args(action: str) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0)


def record_dev_machine(path: Path, server: Any, launched_at: float) -> DevMachine:
    """The state file of a medium dev machine, as `machine up` writes it (returned)."""
    table = default_price_table()
    machine = DevMachine(
        server_id=server.server_id,
        url="",
        server_type="medium",
        workflow_version=VERSION,
        service_ready_at=server.service_ready_at,
        estimated_stopping_at=server.estimated_stopping_at,
        rate_micros_per_hour=table.rate("medium"),
        price_table_version=table.version,
        launched_at=launched_at,
    )
    write_dev_machine(path, machine)
    return machine


async def test_a_vanished_dev_machine_is_billed_to_the_first_look_that_found_it_gone(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: ``status`` kept growing "cost so far" for a gone machine, and ``down`` (404)
    printed "stopped; cost" billed to that 404. Now both end its bill at the first look
    that found it gone: ``status`` 10 s after it vanished, not ``down`` 100 s later."""
    wall = TrioWallClock()
    monkeypatch.setattr(machine_cmd, "time", types.SimpleNamespace(time=wall.now))
    path = tmp_path / "dev.json"
    table = default_price_table()
    async with open_client(timings=RunComfyTimings(ready_delay=5.0), wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 3600)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        record_dev_machine(path, server, wall.now())
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        await trio.sleep(30)
        assert sim.vanish(server.server_id)
        (bill,) = sim.billing()
        await trio.sleep(10)
        looked = wall.now()
        assert await machine_action(_args("status"), CONFIG, path, rc) == 1
        recorded = read_dev_machine(path)
        assert recorded is not None
        assert recorded.gone_at == looked
        at_look = machine_cost_micros(table.rate("medium"), server.service_ready_at, looked)
        assert "gone" in capsys.readouterr().out
        await trio.sleep(100)
        assert await machine_action(_args("status"), CONFIG, path, rc) == 1
        assert f"billed at most {format_usd(at_look)}" in capsys.readouterr().out
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
        out = capsys.readouterr().out
    assert "already gone" in out
    assert "stopped;" not in out
    assert f"billed at most {format_usd(at_look)}" in out
    assert bill.cost_micros <= at_look
    assert not path.exists()


async def test_status_saves_a_renewed_lease_end_that_a_later_down_bills_to(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The lease renewed after `machine up` recorded it: `status` writes the new end to the
    state file, so a `down` answered 404 after the recorded end bills up to the cloud's
    (it capped the bill at the end recorded at launch, below the cloud's bill)."""
    wall = TrioWallClock()
    monkeypatch.setattr(machine_cmd, "time", types.SimpleNamespace(time=wall.now))
    path = tmp_path / "dev.json"
    table = default_price_table()
    async with open_client(timings=RunComfyTimings(ready_delay=5.0), wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 600)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        record_dev_machine(path, server, wall.now())
        renewed = await rc.extend(server.server_id, 1200)
        assert renewed.estimated_stopping_at is not None
        assert server.estimated_stopping_at is not None
        assert renewed.estimated_stopping_at > server.estimated_stopping_at
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        assert await machine_action(_args("status"), CONFIG, path, rc) == 0
        recorded = read_dev_machine(path)
        assert recorded is not None
        assert recorded.estimated_stopping_at == renewed.estimated_stopping_at
        await trio.sleep(700)  # past the launch's lease end, before the renewed one
        assert sim.vanish(server.server_id)
        (bill,) = sim.billing()
        at_most = machine_cost_micros(table.rate("medium"), server.service_ready_at, wall.now())
        capsys.readouterr()
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
    assert bill.cost_micros <= at_most
    assert f"billed at most {format_usd(at_most)}" in capsys.readouterr().out


async def test_status_saves_nothing_while_up_or_down_holds_the_state_file(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A look during a `machine down` (its lock held) leaves the record to it: a save then
    could bring back the record of the machine the down has just stopped."""
    wall = TrioWallClock()
    monkeypatch.setattr(machine_cmd, "time", types.SimpleNamespace(time=wall.now))
    path = tmp_path / "dev.json"
    async with open_client(timings=RunComfyTimings(ready_delay=5.0), wall=wall) as (_, rc):
        server = await rc.launch(VERSION, "medium", 600)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        machine = record_dev_machine(path, server, wall.now())
        await rc.extend(server.server_id, 1200)
        fd = os.open(tmp_path / "dev.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            assert await machine_action(_args("status"), CONFIG, path, rc) == 0
        finally:
            os.close(fd)
    assert read_dev_machine(path) == machine
