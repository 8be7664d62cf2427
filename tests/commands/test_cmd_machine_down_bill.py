"""``machine down`` of a machine already stopped (its lease ran out, or another stop): the
DELETE's answer says ``Deleting`` either way. It billed up to the call (the overbill grew
with every second after the lease's end) and said "stopped"; then a look (GET) first told
"already stopped". Now: its lease's end, passed before the command asked, says "already
stopped", passed while the DELETE was on its way "stopped as its lease ran out", and the
bill never passes the lease's end: it agrees with the sim's own billing, to the
micro-dollar when the lease's end is when it stopped. The look stays, for one thing only
it tells: a machine stopped another way before its lease's end (the DELETE's answer says
``Deleting`` for it too) "was already stopped"."""

from __future__ import annotations

import argparse
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
    PendingLaunch,
    machine_action,
    write_pending_launch,
)
from conjure_actors.config import Config, RunComfyConfig
from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros
from conjure_actors.sim.runcomfy import RunComfyTimings
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION, open_client
from tests.commands.test_cmd_machine_gone import record_dev_machine

CONFIG = Config(runcomfy=RunComfyConfig(workflow_version=VERSION))
# Stopped machines stay listed as Deleting (no 404) for the whole test.
TIMINGS = RunComfyTimings(ready_delay=5.0, deleting_delay=3600.0)


def _args(action: str, **more: object) -> argparse.Namespace:
    return argparse.Namespace(action=action, duration=3600.0, wait=600.0, **more)


def _wall(monkeypatch: pytest.MonkeyPatch) -> TrioWallClock:
    """The sim's wall clock, which the command reads too (a MockClock test)."""
    wall = TrioWallClock()
    monkeypatch.setattr(machine_cmd, "time", types.SimpleNamespace(time=wall.now))
    return wall


def _stop_late(rc: RunComfyClient, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """``rc``'s DELETE leaves ``seconds`` late (a slow network, a 429's back-off)."""
    stop = rc.stop

    async def late_stop(server_id: str, *, missing_ok: bool = False) -> Any:
        await trio.sleep(seconds)
        return await stop(server_id, missing_ok=missing_ok)

    monkeypatch.setattr(rc, "stop", late_stop)


async def _up(rc: RunComfyClient, path: Path, wall: TrioWallClock, lease: int) -> Any:
    """A medium machine of ``lease`` seconds launched, Ready, and recorded in ``path`` as
    `machine up` records it (the server, as Ready)."""
    server = await rc.launch(VERSION, "medium", lease)
    server = await rc.wait_until_ready(server.server_id, interval=1)
    record_dev_machine(path, server, wall.now())
    return server


async def test_down_of_a_lease_expired_machine_bills_to_its_lease_end(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The QA case: the lease ran out (Deleting, not yet 404), `machine down` 100 s later
    said "stopped; cost" up to the call; now "already stopped", the sim's exact bill."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await _up(rc, path, wall, 60)
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        await trio.sleep(160)
        (bill,) = sim.billing()
        assert bill.reason == "lease_expired"
        assert sim.status_of(server.server_id) == "Deleting"
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
    out = capsys.readouterr().out
    assert "already stopped" in out
    assert "stopped;" not in out
    assert f"billed at most {format_usd(bill.cost_micros)} " in out
    assert not path.exists()


async def test_down_by_id_of_a_lease_expired_machine_bills_to_its_lease_end(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`machine down --server-id ID` (no record of it): what RunComfy says of the machine
    (its lease's end) bounds the bill, which agrees with the sim's."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 60)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        await trio.sleep(160)
        (bill,) = sim.billing()
        assert bill.reason == "lease_expired"
        args = _args("down", server_id=server.server_id)
        assert await machine_action(args, CONFIG, path, rc) == 0
    out = capsys.readouterr().out
    assert f"machine {server.server_id} was already stopped" in out
    assert "stopped;" not in out
    assert f"billed at most {format_usd(bill.cost_micros)} " in out


async def test_down_of_a_machine_found_stopped_by_status_says_already_stopped(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped by another `machine down --server-id` (another state file), which `machine
    status` then found: `down` says "already stopped", billed at most up to that look,
    never below the sim's bill."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    table = default_price_table()
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await _up(rc, path, wall, 3600)
        await trio.sleep(30)
        other = _args("down", server_id=server.server_id)
        assert await machine_action(other, CONFIG, tmp_path / "other.json", rc) == 0
        await trio.sleep(10)
        assert await machine_action(_args("status"), CONFIG, path, rc) == 1
        looked = wall.now()
        capsys.readouterr()
        await trio.sleep(1000)
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
    (bill,) = sim.billing()
    assert bill.reason == "stopped"
    out = capsys.readouterr().out
    assert f"dev machine {server.server_id} was already stopped" in out
    assert "stopped;" not in out
    at_most = machine_cost_micros(table.rate("medium"), server.service_ready_at, looked)
    assert bill.cost_micros <= at_most
    assert f"billed at most {format_usd(at_most)} " in out


async def test_down_of_a_machine_stopped_another_way_says_it_was_already_stopped(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped another way, still listed Deleting, and not looked at since: its DELETE
    answers as one that stops it, and it was said "stopped; cost". The look first tells:
    "was already stopped (it was stopped another way)", billed at most up to the look, never
    below the sim's bill, and no second DELETE."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    table = default_price_table()
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await _up(rc, path, wall, 3600)
        await trio.sleep(30)
        other = _args("down", server_id=server.server_id)
        assert await machine_action(other, CONFIG, tmp_path / "other.json", rc) == 0
        capsys.readouterr()
        await trio.sleep(20)
        deletes: list[str] = []
        stop = rc.stop

        async def counted(server_id: str, *, missing_ok: bool = False) -> Any:
            deletes.append(server_id)
            return await stop(server_id, missing_ok=missing_ok)

        monkeypatch.setattr(rc, "stop", counted)
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
        called = wall.now()
    (bill,) = sim.billing()
    at_most = machine_cost_micros(table.rate("medium"), server.service_ready_at, called)
    assert at_most >= bill.cost_micros
    out = capsys.readouterr().out
    assert f"dev machine {server.server_id} was already stopped (it was stopped another way)" in out
    assert "stopped;" not in out
    assert f"billed at most {format_usd(at_most)} " in out
    assert deletes == []
    assert not path.exists()


async def test_a_delete_sent_after_the_lease_ran_out_bills_to_the_lease_end(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its lease runs out while the DELETE is on its way (a slow network, a 429's
    back-off): RunComfy stopped it at the lease's end if the DELETE did not first, the bill
    ends there, and the line says so (it said "stopped; cost")."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await _up(rc, path, wall, 60)
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        _stop_late(rc, monkeypatch, 100)
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
    (bill,) = sim.billing()
    assert bill.reason == "lease_expired"
    out = capsys.readouterr().out
    assert f"dev machine {server.server_id} stopped as its lease ran out at " in out
    assert "stopped;" not in out
    assert f"billed at most {format_usd(bill.cost_micros)} (up to its lease's end)" in out


async def test_down_of_an_interrupted_launchs_machine_bills_to_its_lease_end(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The machine of an interrupted `machine up`, found Ready, its lease run out while
    the DELETE was on its way: billed to the lease's end, as the cloud bills it, not to the
    DELETE, and said so (it said "stopped; cost")."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 60)
        write_pending_launch(
            path,
            PendingLaunch(
                server_type="medium",
                workflow_version=VERSION,
                estimated_duration=60,
                known_server_ids=[],
                requested_at=wall.now(),
                server_id=server.server_id,
            ),
        )
        await rc.wait_until_ready(server.server_id, interval=1)
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        _stop_late(rc, monkeypatch, 100)
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
    (bill,) = sim.billing()
    assert bill.reason == "lease_expired"
    out = capsys.readouterr().out
    assert "stopped as its lease ran out at " in out
    assert f"billed at most {format_usd(bill.cost_micros)} (up to its lease's end)" in out


async def test_down_of_a_machine_still_up_is_a_look_then_its_delete_without_a_wait(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A machine still up: one look (it alone tells a machine stopped another way), then
    its DELETE, with no rate-limit wait between them (a new process has the bucket's two
    tokens: the look costs one round trip, billed), and it is said stopped with the sim's
    bill."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=TIMINGS, wall=wall) as (sim, rc):
        server = await _up(rc, path, wall, 3600)
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        calls: list[str] = []
        times: list[float] = []
        request = rc._request

        async def counted(method: str, route: str, **kwargs: Any) -> Any:
            calls.append(f"{method} {route}")
            times.append(trio.current_time())
            return await request(method, route, **kwargs)

        monkeypatch.setattr(rc, "_request", counted)
        await trio.sleep(120)
        assert await machine_action(_args("down"), CONFIG, path, rc) == 0
    assert calls == [f"GET /servers/{server.server_id}", f"DELETE /servers/{server.server_id}"]
    assert times[1] == times[0]
    (bill,) = sim.billing()
    assert bill.reason == "stopped"
    assert bill.cost_micros > 0
    out = capsys.readouterr().out
    assert f"dev machine {server.server_id} stopped; cost {format_usd(bill.cost_micros)}" in out
