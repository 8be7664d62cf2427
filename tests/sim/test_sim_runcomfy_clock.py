"""The RunComfy simulator dates its answers on its own clock, which may run at an offset
from the host's (``RunComfyTimings.clock_offset``): tests play a host clock that disagrees
with RunComfy's without patching ``time.time``."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.cli import build_parser
from conjure_actors.clients.runcomfy import parse_http_date, parse_timestamp
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands import sim as sim_command
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfySim, RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud

ROOT = "http://rc.sim.invalid/prod/api/users/sim-user"
AUTH = {"Authorization": "Bearer sim-token"}


@asynccontextmanager
async def _sim(
    wall: TrioWallClock, offset: float
) -> AsyncIterator[tuple[RunComfySim, httpx.AsyncClient]]:
    sim = RunComfySim(wall=wall.now, timings=RunComfyTimings(ready_delay=10.0, clock_offset=offset))
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, headers=AUTH) as http:
            yield sim, http
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("offset", [0.0, 900.0, -900.0])
async def test_every_answer_is_dated_on_the_sim_s_clock(
    autojump_clock: trio.testing.MockClock, offset: float
) -> None:
    """One ``Date`` per answer (an error too), in whole seconds of the sim's clock."""
    wall = TrioWallClock()
    async with _sim(wall, offset) as (_, http):
        await trio.sleep(12.6)
        for resp in (await http.get(f"{ROOT}/servers"), await http.get(f"{ROOT}/servers/nope")):
            (date,) = resp.headers.get_list("date")
            assert parse_http_date(date) == math.floor(wall.now() + offset)


@pytest.mark.parametrize("offset", [900.0, -900.0])
async def test_an_offset_shifts_the_published_times_and_the_billing_records(
    autojump_clock: trio.testing.MockClock, offset: float
) -> None:
    """A machine Ready and stopped: its ``service_ready_at``, its lease end and its billing
    record are on the shifted clock; what it bills (seconds, micros) is unchanged."""
    wall = TrioWallClock()
    async with _sim(wall, offset) as (sim, http):
        launched = await http.post(
            f"{ROOT}/servers",
            json={"workflow_version_id": "v", "server_type": "medium", "estimated_duration": 600},
        )
        sid = launched.json()["server_id"]
        await trio.sleep(11)
        ready_local = wall.now() - 1  # Ready 10 s after the launch
        server = (await http.get(f"{ROOT}/servers/{sid}")).json()
        ready = parse_timestamp(server["service_ready_at"])
        assert ready == pytest.approx(ready_local + offset, abs=1e-3)
        assert parse_timestamp(server["estimated_stopping_at"]) == pytest.approx(ready + 600)
        await trio.sleep(100)
        await http.delete(f"{ROOT}/servers/{sid}")
        stopped_local = wall.now()
        (record,) = sim.billing()
        assert record.service_ready_at == ready
        assert record.stopped_at == pytest.approx(stopped_local + offset, abs=1e-3)
        assert record.billed_seconds == math.ceil(stopped_local - ready_local - 1e-6)


def test_the_sim_command_takes_a_clock_offset() -> None:
    """``sim --clock-offset -900``: RunComfy's clock 15 min behind the host's."""
    args = build_parser().parse_args(["sim", "--clock-offset", "-900"])
    _, timings = sim_command._configure(args)
    assert timings.runcomfy.clock_offset == -900.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sim", "--clock-offset", "nan"])


@pytest.mark.slow  # a loopback server
async def test_over_loopback_an_answer_carries_one_date_the_sim_s() -> None:
    """hypercorn adds no Date of its own (two would make the header unreadable)."""
    timings = CloudTimings(runcomfy=RunComfyTimings(clock_offset=3600.0))
    async with trio.open_nursery() as nursery:
        served: ServedCloud = await nursery.start(partial(serve_cloud, timings=timings))
        async with httpx.AsyncClient() as http:
            resp = await http.get(
                f"{served.base_url}/prod/api/users/{served.user_id}/servers",
                headers={"Authorization": f"Bearer {served.token}"},
            )
        (date,) = resp.headers.get_list("date")
        when = parse_http_date(date)
        assert when is not None
        assert abs(when - (time.time() + 3600)) < 5
        nursery.cancel_scope.cancel()
