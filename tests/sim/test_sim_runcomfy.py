"""The RunComfy simulator at the HTTP level: shapes, auth, rate limit, lifecycle, billing."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.runcomfy import (
    HOBBY_PRICES_MICROS,
    RunComfyFaults,
    RunComfySim,
    RunComfyTimings,
    billed_seconds,
    cost_micros,
)

USER = "u-test"
TOKEN = "tok-SECRET-123"
ROOT = f"http://api.test/prod/api/users/{USER}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVER_FIELDS = {
    "server_id",
    "user_id",
    "server_type",
    "estimated_duration",
    "current_status",
    "main_service_url",
    "service_ready_at",
    "estimated_stopping_at",
    "workflow_version_id",
}


class RecordingHost:
    """A MachineHost that records which machines' ComfyUIs were started and stopped."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []

    async def start_machine(self, server_id: str, workflow_version: str) -> str:
        self.started.append(server_id)
        return f"https://{server_id}-comfyui.example.invalid"

    async def stop_machine(self, server_id: str) -> None:
        self.stopped.append(server_id)


@asynccontextmanager
async def open_sim(
    *,
    faults: RunComfyFaults | None = None,
    timings: RunComfyTimings | None = None,
    host: RecordingHost | None = None,
) -> AsyncIterator[tuple[RunComfySim, httpx.AsyncClient]]:
    sim = RunComfySim(
        user_id=USER,
        tokens=[TOKEN, "second-token"],
        faults=faults,
        timings=timings or RunComfyTimings(ready_delay=10.0, burst=1000),
        wall=TrioWallClock().now,
        host=host,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, headers=AUTH) as http:
            yield sim, http
        nursery.cancel_scope.cancel()


async def launch(http: httpx.AsyncClient, duration: int = 600) -> dict[str, object]:
    body = {"workflow_version_id": "wv-1", "server_type": "medium", "estimated_duration": duration}
    resp = await http.post(f"{ROOT}/servers", json=body)
    assert resp.status_code == 200, resp.text
    data: dict[str, object] = resp.json()
    return data


def iso(value: object) -> float:
    assert isinstance(value, str)
    assert value.endswith("Z")
    return (dt.datetime.fromisoformat(value) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / (
        dt.timedelta(seconds=1)
    )


async def test_launch_answers_starting_server_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """POST /servers answers at once with every server field and status Starting."""
    async with open_sim() as (_sim, http):
        server = await launch(http)
    assert set(server) == SERVER_FIELDS
    assert server["current_status"] == "Starting"
    assert server["main_service_url"] is None
    assert server["service_ready_at"] is None
    assert server["estimated_stopping_at"] is None


async def test_machine_becomes_ready_with_lease_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After ready_delay the machine is Ready, its lease ends ready + estimated_duration."""
    host = RecordingHost()
    async with open_sim(host=host) as (_sim, http):
        server = await launch(http, duration=900)
        await trio.sleep(10.5)
        resp = await http.get(f"{ROOT}/servers/{server['server_id']}")
    data = resp.json()
    assert data["current_status"] == "Ready"
    assert iso(data["estimated_stopping_at"]) - iso(data["service_ready_at"]) == 900
    assert host.started == [server["server_id"]]
    assert data["main_service_url"] == f"https://{server['server_id']}-comfyui.example.invalid"


async def test_list_servers_is_a_bare_list(autojump_clock: trio.testing.MockClock) -> None:
    """GET /servers answers a bare JSON list of server objects."""
    async with open_sim() as (_sim, http):
        a = await launch(http)
        b = await launch(http)
        resp = await http.get(f"{ROOT}/servers")
    data = resp.json()
    assert isinstance(data, list)
    assert [s["server_id"] for s in data] == [a["server_id"], b["server_id"]]


async def test_list_workflows_shape(autojump_clock: trio.testing.MockClock) -> None:
    """GET /workflows lists workflow_id, workflow_name, version_id, created_at, updated_at."""
    async with open_sim() as (_sim, http):
        resp = await http.get(f"{ROOT}/workflows")
    entries = resp.json()
    assert entries
    for entry in entries:
        assert set(entry) == {
            "workflow_id",
            "workflow_name",
            "version_id",
            "created_at",
            "updated_at",
        }


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer nope", TOKEN],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_bad_token_is_401(autojump_clock: trio.testing.MockClock, authorization: str) -> None:
    """A missing, wrong or malformed bearer token gets 401 unauthorized."""
    async with open_sim() as (sim, http):
        resp = await http.get(f"{ROOT}/servers", headers={"Authorization": authorization})
    assert resp.status_code == 401
    assert resp.json()["error"] == "unauthorized"
    assert sim.statistics().unauthorized == 1


async def test_second_token_is_accepted(autojump_clock: trio.testing.MockClock) -> None:
    """Both of the account's tokens (rotation) are accepted."""
    async with open_sim() as (_sim, http):
        resp = await http.get(f"{ROOT}/servers", headers={"Authorization": "Bearer second-token"})
    assert resp.status_code == 200


async def test_wrong_user_id_is_401(autojump_clock: trio.testing.MockClock) -> None:
    """A good token with another user's id in the path gets 401."""
    async with open_sim() as (_sim, http):
        resp = await http.get("http://api.test/prod/api/users/someone-else/servers")
    assert resp.status_code == 401


async def test_rate_limit_answers_429_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past the burst, requests in the same instant get 429 rate_limited with Retry-After."""
    async with open_sim(timings=RunComfyTimings(burst=3)) as (sim, http):
        codes = [(await http.get(f"{ROOT}/servers")).status_code for _ in range(3)]
        resp = await http.get(f"{ROOT}/servers")
        await trio.sleep(1.0)
        after = await http.get(f"{ROOT}/servers")
    assert codes == [200, 200, 200]
    assert resp.status_code == 429
    assert resp.json()["error"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1
    assert after.status_code == 200
    assert sim.statistics().rate_limited == 1


@pytest.mark.parametrize(
    "body",
    [
        {"server_type": "medium", "estimated_duration": 60},
        {"workflow_version_id": "wv", "server_type": "tiny", "estimated_duration": 60},
        {"workflow_version_id": "wv", "server_type": "medium", "estimated_duration": 0},
        {"workflow_version_id": "wv", "server_type": "medium", "estimated_duration": True},
        [1, 2],
    ],
    ids=["no-version", "bad-type", "zero-duration", "bool-duration", "not-object"],
)
async def test_bad_launch_body_is_400(autojump_clock: trio.testing.MockClock, body: object) -> None:
    """A launch body with a missing or bad field gets 400 and launches nothing."""
    async with open_sim() as (sim, http):
        resp = await http.post(f"{ROOT}/servers", json=body)
    assert resp.status_code == 400
    assert sim.running() == []


async def test_unknown_route_and_method(autojump_clock: trio.testing.MockClock) -> None:
    """An unknown route is 404 and a wrong method on a known one is 405."""
    async with open_sim() as (_sim, http):
        missing = await http.get(f"{ROOT}/nothing")
        wrong = await http.put(f"{ROOT}/servers")
    assert missing.status_code == 404
    assert wrong.status_code == 405


async def test_extend_only_once_ready(autojump_clock: trio.testing.MockClock) -> None:
    """update-estimated-duration is refused while Starting and moves the lease once Ready."""
    async with open_sim() as (_sim, http):
        server = await launch(http, duration=600)
        url = f"{ROOT}/servers/{server['server_id']}/update-estimated-duration"
        early = await http.post(url, json={"update_estimated_duration": 1200})
        await trio.sleep(11)
        later = await http.post(url, json={"update_estimated_duration": 1200})
    assert early.status_code == 400
    data = later.json()
    assert data["estimated_duration"] == 1200
    assert iso(data["estimated_stopping_at"]) - iso(data["service_ready_at"]) == 1200


async def test_delete_answers_deleting_then_404(autojump_clock: trio.testing.MockClock) -> None:
    """DELETE answers Deleting, repeats idempotently, and the machine is 404 afterwards."""
    host = RecordingHost()
    async with open_sim(host=host) as (_sim, http):
        server = await launch(http)
        await trio.sleep(11)
        url = f"{ROOT}/servers/{server['server_id']}"
        first = await http.delete(url)
        again = await http.delete(url)
        await trio.sleep(5)
        gone = await http.get(url)
    assert first.json()["current_status"] == "Deleting"
    assert again.status_code == 200
    assert gone.status_code == 404
    assert host.stopped == [server["server_id"]]


async def test_lease_expiry_stops_machine_and_billing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A machine nobody renews stops at estimated_stopping_at and bills exactly its lease."""
    host = RecordingHost()
    async with open_sim(host=host) as (sim, http):
        server = await launch(http, duration=300)
        await trio.sleep(10 + 300 + 60)
        gone = await http.get(f"{ROOT}/servers/{server['server_id']}")
        (record,) = sim.billing()
        running = sim.running()
    assert gone.status_code == 404
    assert running == []
    assert record.reason == "lease_expired"
    assert record.billed_seconds == 300
    assert record.cost_micros == cost_micros(HOBBY_PRICES_MICROS["medium"], 300)
    assert host.stopped == [server["server_id"]]


async def test_stop_while_starting_costs_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """A machine stopped before it was Ready bills 0 and never starts a ComfyUI."""
    host = RecordingHost()
    async with open_sim(host=host) as (sim, http):
        server = await launch(http)
        await http.delete(f"{ROOT}/servers/{server['server_id']}")
        await trio.sleep(30)
        (record,) = sim.billing()
    assert record.reason == "never_ready"
    assert record.cost_micros == 0
    assert host.started == []


async def test_running_machine_billed_up_to_now(autojump_clock: trio.testing.MockClock) -> None:
    """billing() of a running machine counts its seconds so far, reason running."""
    async with open_sim() as (sim, http):
        await launch(http, duration=3600)
        await trio.sleep(10 + 100)
        (record,) = sim.billing()
    assert record.reason == "running"
    assert record.stopped_at is None
    assert record.billed_seconds == 100


async def test_server_error_fault_answers_5xx(autojump_clock: trio.testing.MockClock) -> None:
    """server_error_rate=1 answers every authorised request with a 5xx."""
    async with open_sim(faults=RunComfyFaults(server_error_rate=1.0)) as (sim, http):
        resp = await http.get(f"{ROOT}/servers")
    assert resp.status_code in (500, 502, 503)
    assert sim.statistics().server_errors == 1


async def test_rate_limit_burst_fault(autojump_clock: trio.testing.MockClock) -> None:
    """A 429 burst refuses the next N requests with the configured Retry-After."""
    faults = RunComfyFaults(
        rate_limit_burst_probability=1.0, rate_limit_burst_length=2, retry_after=5
    )
    async with open_sim(faults=faults) as (_sim, http):
        resp = await http.get(f"{ROOT}/servers")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "5"


async def test_unknown_status_fault(autojump_clock: trio.testing.MockClock) -> None:
    """unknown_status_rate=1 makes a starting machine report the unknown status string."""
    faults = RunComfyFaults(unknown_status_rate=1.0, unknown_status="Queued")
    async with open_sim(faults=faults) as (_sim, http):
        server = await launch(http)
    assert server["current_status"] == "Queued"


def _run_billing_scenario(
    ready_delay: float, duration: int, stop_after: float
) -> tuple[float, float, int, int]:
    """Launch, stop ``stop_after`` s after launch; return (ready, stopped, billed, cost)."""
    result: list[tuple[float, float, int, int]] = []

    async def scenario() -> None:
        timings = RunComfyTimings(ready_delay=ready_delay, burst=1000)
        async with open_sim(timings=timings) as (sim, http):
            server = await launch(http, duration=duration)
            await trio.sleep(stop_after)
            await http.delete(f"{ROOT}/servers/{server['server_id']}")
            (record,) = sim.billing()
        ready = record.service_ready_at
        stopped = record.stopped_at
        assert stopped is not None
        result.append(
            (
                math.nan if ready is None else ready,
                stopped,
                record.billed_seconds,
                record.cost_micros,
            )
        )

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    return result[0]


@given(
    ready_delay=st.floats(min_value=0.001, max_value=300),
    duration=st.integers(min_value=1, max_value=7200),
    stop_after=st.floats(min_value=0, max_value=9000),
)
def test_billing_follows_the_rule(ready_delay: float, duration: int, stop_after: float) -> None:
    """Every bill is max(0, ceil(stop - ready)) seconds at the rate, capped by the lease."""
    ready, stopped, billed, cost = _run_billing_scenario(ready_delay, duration, stop_after)
    if math.isnan(ready):
        assert billed == 0
    else:
        assert stopped <= ready + duration
        assert billed == billed_seconds(ready, stopped)
    assert cost == cost_micros(HOBBY_PRICES_MICROS["medium"], billed)


@given(
    rate=st.integers(min_value=0, max_value=10_000_000),
    a=st.integers(min_value=0, max_value=10**6),
    b=st.integers(min_value=0, max_value=10**6),
)
def test_cost_is_monotone_and_nearly_additive(rate: int, a: int, b: int) -> None:
    """Cost never decreases with time and splitting a period changes it by at most 1 micro."""
    assert cost_micros(rate, a) <= cost_micros(rate, a + b)
    assert abs(cost_micros(rate, a + b) - cost_micros(rate, a) - cost_micros(rate, b)) <= 1
