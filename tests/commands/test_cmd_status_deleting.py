"""``status`` with RunComfy credentials (the account's machines): a machine Deleting after
its DELETE is billed no more (QA's N7: its "cost so far" grew to now, $0.0011 against the
cloud's 825 µUSD, until it was gone)."""

from __future__ import annotations

import types

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clock import TrioWallClock
from conjure_actors.commands import status
from conjure_actors.config import Config, RunComfyConfig, Secret
from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros
from conjure_actors.sim.runcomfy import RunComfyTimings
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER, VERSION, open_client


async def test_a_deleting_machine_is_shown_as_a_bound_not_a_growing_bill(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped 3 s after Ready, looked at 60 s later while still listed Deleting: "billing
    over, cost at most" (the bound to now: RunComfy's answer does not give the stop time),
    and the total says "at most" too; the cloud's bill is within it."""
    wall = TrioWallClock()
    monkeypatch.setattr(status, "time", types.SimpleNamespace(time=wall.now))
    timings = RunComfyTimings(ready_delay=5.0, deleting_delay=600.0)
    config = Config(
        runcomfy=RunComfyConfig(
            user_id=USER, api_token=Secret(TOKEN), base_url=BASE, workflow_version=VERSION
        )
    )
    async with open_client(timings=timings, wall=wall) as (sim, rc):
        server = await rc.launch(VERSION, "medium", 3600)
        server = await rc.wait_until_ready(server.server_id, interval=1)
        await trio.sleep(3)
        await rc.stop(server.server_id)
        await trio.sleep(60)
        http: httpx.AsyncClient = rc._http
        await status._show_runcomfy(http, config)
        (bill,) = sim.billing()
        looked = wall.now()
    out = capsys.readouterr().out
    assert server.service_ready_at is not None
    bound = machine_cost_micros(
        default_price_table().rate("medium"), server.service_ready_at, looked
    )
    assert f"{server.server_id}: Deleting, medium, billing over, cost at most" in out
    assert f"cost at most {format_usd(bound)}" in out
    assert "cost so far" not in out
    assert f"total so far: at most {format_usd(bound)}" in out
    assert bill.cost_micros <= bound
