"""``machine up`` interrupted (Ctrl-C: a cancellation here) while it looks for the machine a
launch with a lost answer may have started: the launch is on disk (``STATE.launching``,
written before ``POST /servers``), so a later ``machine down``/``status``/``up`` finds the
machine by the launch's marker and stops, reports or adopts it; nothing bills unrecorded."""

from __future__ import annotations

import argparse
import time
import types
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import TransportError
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands import machine as machine_cmd
from conjure_actors.commands.machine import (
    PendingLaunch,
    machine_action,
    pending_path,
    read_dev_machine,
    read_pending_launch,
    write_pending_launch,
)
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.domain.prices import format_usd
from conjure_actors.sim.runcomfy import RunComfyFaults
from tests.clients.test_client_runcomfy import VERSION, open_client

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))


class _ListingDown:
    """The RunComfy client, with ``GET /servers`` failing while ``down`` is True (the API
    having a bad moment): the search after a lost launch answer finds nothing meanwhile."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.down = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def list_servers(self) -> Any:
        if self.down:
            raise TransportError("GET /servers: connection reset")
        return await self._client.list_servers()


def _args(action: str) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0)


async def _interrupted_up(sim: Any, rc: _ListingDown, path: Path, *, listing_back: bool) -> None:
    """``machine up`` whose launch answer is lost (a ghost: launched, answered 502), its
    search (the listing failing) interrupted 20 s in; ``listing_back``: the listing works
    again from the interruption on."""
    sim.faults = RunComfyFaults(launch_ghost_rate=1.0)
    listings = 0
    real = rc._client.list_servers

    async def listing(scope: trio.CancelScope) -> Any:
        nonlocal listings
        listings += 1
        if listings > 1 and not (listing_back and scope.cancel_called):
            raise TransportError("GET /servers: connection reset")
        return await real()  # the one before the launch works

    with trio.move_on_after(20) as scope:
        rc.list_servers = lambda: listing(scope)  # type: ignore[method-assign]
        await machine_action(_args("up"), CONFIG, path, rc)
    assert scope.cancelled_caught
    del rc.list_servers
    rc.down = False
    sim.faults = RunComfyFaults()


async def test_a_ctrl_c_during_the_search_leaves_the_launch_recorded_and_down_stops_it(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, nothing was on disk: the ghost machine billed until its lease ended and
    `machine down` said "no dev machine recorded". Now the line names `machine down`, the
    launch's marker is in STATE.launching, and `machine down` stops that machine."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        rc = _ListingDown(client)
        await _interrupted_up(sim, rc, path, listing_back=False)
        (ghost,) = sim.running()
        out = capsys.readouterr().out
        assert "looking for the machine it may have started" in out
        assert "`python -m conjure_actors machine down` stops it" in out
        pending = read_pending_launch(path)
        assert pending is not None
        assert pending.server_id is None
        assert ghost not in pending.known_server_ids
        assert read_dev_machine(path) is None
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
        assert sim.running() == []
    out = capsys.readouterr().out
    assert f"machine {ghost} (launched by an interrupted `machine up`) stopped" in out
    assert not pending_path(path).exists()


async def test_a_ctrl_c_during_the_search_stops_the_machine_at_once_if_listed(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Interrupted, `machine up` looks once more (shielded): the machine listed now is
    stopped there and then, and the launch record goes."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        rc = _ListingDown(client)
        await _interrupted_up(sim, rc, path, listing_back=True)
        assert sim.running() == []
    assert "(the interrupted launch's)" in capsys.readouterr().out
    assert not pending_path(path).exists()


async def test_status_reports_the_interrupted_launchs_machine(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`machine status` names the machine the interrupted launch started and what stops it
    (and keeps the record: a look changes nothing)."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        rc = _ListingDown(client)
        await _interrupted_up(sim, rc, path, listing_back=False)
        (ghost,) = sim.running()
        capsys.readouterr()
        assert await machine_action(_args("status"), CONFIG, path, rc) == 0
        assert sim.running() == [ghost]
    out = capsys.readouterr().out
    assert f"machine {ghost} (" in out
    assert "launched by an interrupted `machine up`" in out
    assert "`machine down` stops it" in out
    assert pending_path(path).exists()


async def test_up_adopts_the_interrupted_launchs_machine(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`machine up` again adopts that machine (waits until Ready, records it) instead of
    launching a second one."""
    path = tmp_path / "dev.json"
    async with open_client() as (sim, client):
        rc = _ListingDown(client)
        await _interrupted_up(sim, rc, path, listing_back=False)
        (ghost,) = sim.running()
        assert await machine_action(_args("up"), CONFIG, path, rc) == 0
        assert sim.running() == [ghost]
    recorded = read_dev_machine(path)
    assert recorded is not None
    assert recorded.server_id == ghost
    assert not pending_path(path).exists()
    assert "found the interrupted launch's dev machine" in capsys.readouterr().out


def test_the_launch_record_carries_no_secret(tmp_path: Path) -> None:
    """The launch record holds the marker and ids only (no URL, no token)."""
    from conjure_actors.commands.machine import PendingLaunch

    fields = {f.name for f in attrs.fields(PendingLaunch)}
    assert fields == {
        "server_type",
        "workflow_version",
        "estimated_duration",
        "known_server_ids",
        "requested_at",
        "server_id",
    }


async def test_down_stops_the_recorded_machine_even_when_the_launch_record_is_damaged(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A damaged STATE.launching (edited, a disk error) used to make `machine down` refuse
    before it stopped anything, the recorded dev machine billing on. It is stopped first;
    the damaged record, naming no machine, goes once no machine of the account is up
    (looked for over the landing grace: its launch may be listed late)."""
    path = tmp_path / "dev.json"
    # The sim's clock starts at this process's: the command reads its leases' ends.
    async with open_client(wall=TrioWallClock(time.time())) as (sim, client):
        assert await machine_action(_args("up"), CONFIG, path, client) == 0
        (machine,) = sim.running()
        pending_path(path).write_text("{not json")
        assert await machine_action(_args("down"), CONFIG, path, client) == 0
        assert sim.running() == []
    out = capsys.readouterr().out
    assert f"dev machine {machine} stopped" in out
    assert "none is up on the account: removed" in out
    assert read_dev_machine(path) is None
    assert not pending_path(path).exists()


class _LookedBeforeReady:
    """The RunComfy client whose look (``GET /servers/{id}``) answers as a moment before the
    machine got Ready: Starting, no ``service_ready_at``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def status(self, server_id: str) -> Any:
        server = await self._client.status(server_id)
        return attrs.evolve(server, status="Starting", service_ready_at=None)


async def test_down_bills_the_interrupted_launchs_machine_ready_by_its_delete(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting at the look, Ready by the DELETE: the bill is the DELETE answer's (the
    cloud's), not $0 from the look's record."""
    wall = TrioWallClock()
    monkeypatch.setattr(machine_cmd, "time", types.SimpleNamespace(time=wall.now))
    path = tmp_path / "dev.json"
    async with open_client(wall=wall) as (sim, client):
        server = await client.launch(VERSION, "medium", 3600)
        write_pending_launch(
            path,
            PendingLaunch(
                server_type="medium",
                workflow_version=VERSION,
                estimated_duration=3600,
                known_server_ids=[],
                requested_at=wall.now(),
                server_id=server.server_id,
            ),
        )
        await trio.sleep(90)  # Ready 60 s after its launch
        assert await machine_action(_args("down"), CONFIG, path, _LookedBeforeReady(client)) == 0
        (bill,) = sim.billing()
    assert bill.cost_micros > 0
    out = capsys.readouterr().out
    assert f"stopped; cost {format_usd(bill.cost_micros)}" in out
