"""What ``machine status|down`` say of a recorded dev machine found gone or stopping: why it
went as far as anyone can tell, and which bound its bill is "at most" to. They said "it
vanished, or its lease ran out" and "up to when it was first found gone" whatever the
lease: of a machine whose lease had run out (billed to its lease's end) and of one found
gone long before its lease's end alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.commands.machine import _clock, machine_action
from conjure_actors.domain.prices import format_usd
from conjure_actors.sim.runcomfy import RunComfyTimings
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION, open_client
from tests.commands.test_cmd_machine_down_bill import CONFIG, _args, _wall
from tests.commands.test_cmd_machine_gone import record_dev_machine

GONE_SOON = RunComfyTimings(ready_delay=5.0, deleting_delay=2.0)  # 404 2 s after a stop


@pytest.mark.parametrize("action", ["status", "down"])
async def test_a_machine_gone_after_its_lease_ran_out_says_so_and_bills_to_its_end(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    action: str,
) -> None:
    """Its lease ran out, then it went (404): the line names the lease's end, and the bill
    (the sim's, exactly) is "up to its lease's end"."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=GONE_SOON, wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 60)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        record_dev_machine(path, server, wall.now())
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        await trio.sleep(200)
        assert await machine_action(_args(action), CONFIG, path, rc) == (
            1 if action == "status" else 0
        )
    (bill,) = sim.billing()
    assert bill.reason == "lease_expired"
    out = capsys.readouterr().out
    assert f"(its lease ran out at {_clock(server.estimated_stopping_at)}, if it did not" in out
    assert f"billed at most {format_usd(bill.cost_micros)} (up to its lease's end)" in out
    assert "vanished" not in out


@pytest.mark.parametrize("action", ["status", "down"])
async def test_a_machine_gone_before_its_lease_ran_out_is_not_said_to_have_run_out(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    action: str,
) -> None:
    """Gone (404) with most of its lease left: it vanished or was stopped, not "its lease
    ran out"; billed up to when it was found gone."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    async with open_client(timings=GONE_SOON, wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 3600)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        record_dev_machine(path, server, wall.now())
        rc = RunComfyClient(BASE, USER, TOKEN, http=rc._http)  # `machine ...`: a new process
        await trio.sleep(30)
        assert sim.vanish(server.server_id)
        await trio.sleep(10)
        await machine_action(_args(action), CONFIG, path, rc)
    out = capsys.readouterr().out
    assert "(it vanished, or it was stopped another way)" in out
    assert "lease ran out" not in out
    assert "(up to when it was first found gone: when it went nobody tells)" in out


async def test_status_of_a_machine_stopped_another_way_says_stopping_not_gone(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped from elsewhere and still listed Deleting, its lease far from over: "stopping
    (Deleting)", stopped another way (it said "gone (it vanished, or its lease ran out)")."""
    wall = _wall(monkeypatch)
    path = tmp_path / "dev.json"
    timings = RunComfyTimings(ready_delay=5.0, deleting_delay=3600.0)
    async with open_client(timings=timings, wall=wall) as (_sim, rc):
        server = await rc.launch(VERSION, "medium", 3600)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        record_dev_machine(path, server, wall.now())
        await trio.sleep(30)
        await rc.stop(server.server_id)
        assert await machine_action(_args("status"), CONFIG, path, rc) == 1
    out = capsys.readouterr().out
    assert (
        f"dev machine {server.server_id}: stopping (Deleting) (it was stopped another way);" in out
    )
