"""The RunComfy client against the RunComfy simulator in memory (MockClock), every fault knob."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import (
    AuthError,
    LaunchError,
    OutcomeUnknownError,
    RateLimitedError,
    RunComfyError,
    ServerNotFoundError,
)
from conjure_actors.clients.ratelimit import TokenBucket
from conjure_actors.clients.retry import RetryPolicy
from conjure_actors.clients.runcomfy import (
    RunComfyClient,
    RunComfyPolicy,
    SecretURL,
    Server,
    parse_timestamp,
)
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.runcomfy import (
    HOBBY_PRICES_MICROS,
    RunComfyFaults,
    RunComfySim,
    RunComfyTimings,
    billed_seconds,
    cost_micros,
)

USER = "u-client"
TOKEN = "tok-Zq81-SECRET-7c2d"
BASE = "https://api.runcomfy.test"
VERSION = "wv-conjure-1"


@asynccontextmanager
async def open_client(
    *,
    faults: RunComfyFaults | None = None,
    timings: RunComfyTimings | None = None,
    token: str = TOKEN,
    user_id: str = USER,
    bucket: TokenBucket | None = None,
    policy: RunComfyPolicy | None = None,
    wall: TrioWallClock | None = None,
) -> AsyncIterator[tuple[RunComfySim, RunComfyClient]]:
    sim = RunComfySim(
        user_id=USER,
        tokens=[TOKEN],
        seed=7,
        faults=faults,
        timings=timings or RunComfyTimings(ready_delay=60.0),
        wall=(wall or TrioWallClock()).now,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.asgi)) as http:
            client = RunComfyClient(
                BASE,
                user_id,
                token,
                http=http,
                bucket=bucket,
                policy=policy,
                rng=random.Random(1),
            )
            with trio.fail_after(24 * 3600):
                yield sim, client
        nursery.cancel_scope.cancel()


async def test_launch_then_ready(autojump_clock: trio.testing.MockClock) -> None:
    """launch answers Starting; wait_until_ready returns Ready with parsed lease times."""
    async with open_client() as (_sim, client):
        started = await client.launch(VERSION, "medium", 900)
        ready = await client.wait_until_ready(started.server_id, interval=5)
    assert started.status == "Starting"
    assert started.url is None
    assert ready.is_ready
    assert ready.service_ready_at is not None
    assert ready.estimated_stopping_at == ready.service_ready_at + 900
    assert ready.workflow_version_id == VERSION
    assert isinstance(ready.url, SecretURL)
    assert ready.url.reveal().startswith(f"https://{started.server_id}-comfyui.")


async def test_list_servers_and_workflows(autojump_clock: trio.testing.MockClock) -> None:
    """list_servers returns typed Servers; list_workflows returns the account's workflows."""
    async with open_client() as (_sim, client):
        a = await client.launch(VERSION, "large", 600)
        servers = await client.list_servers()
        workflows = await client.list_workflows()
    assert [s.server_id for s in servers] == [a.server_id]
    assert servers[0].server_type == "large"
    assert workflows
    assert all(w.version_id and w.created_at for w in workflows)


async def test_extend_moves_the_lease(autojump_clock: trio.testing.MockClock) -> None:
    """extend sets the lease to ready + seconds."""
    async with open_client() as (_sim, client):
        server = await client.launch(VERSION, "medium", 600)
        await client.wait_until_ready(server.server_id)
        extended = await client.extend(server.server_id, 1800)
    assert extended.service_ready_at is not None
    assert extended.estimated_stopping_at == extended.service_ready_at + 1800


async def test_extend_while_starting_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    """extend before Ready raises RunComfyError carrying HTTP 400."""
    async with open_client() as (_sim, client):
        server = await client.launch(VERSION, "medium", 600)
        with pytest.raises(RunComfyError) as info:
            await client.extend(server.server_id, 1800)
    assert info.value.status == 400


async def test_stop_then_gone(autojump_clock: trio.testing.MockClock) -> None:
    """stop answers Deleting; later the server is not found (missing_ok returns None)."""
    async with open_client() as (_sim, client):
        server = await client.launch(VERSION, "medium", 600)
        await client.wait_until_ready(server.server_id)
        stopped = await client.stop(server.server_id)
        await trio.sleep(60)
        with pytest.raises(ServerNotFoundError):
            await client.status(server.server_id)
        again = await client.stop(server.server_id, missing_ok=True)
    assert stopped is not None
    assert stopped.status == "Deleting"
    assert again is None


async def test_bill_matches_client_times(autojump_clock: trio.testing.MockClock) -> None:
    """The sim's bill equals the rule applied to the client's parsed ready time and stop time."""
    wall = TrioWallClock()
    async with open_client(wall=wall) as (sim, client):
        server = await client.launch(VERSION, "2x-large", 3600)
        ready = await client.wait_until_ready(server.server_id, interval=3)
        await trio.sleep(1234.5)
        await client.stop(server.server_id)
        stopped_at = wall.now()
        (record,) = sim.billing()
    assert ready.service_ready_at == record.service_ready_at
    seconds = billed_seconds(ready.service_ready_at, stopped_at)
    assert record.billed_seconds == seconds
    assert record.cost_micros == cost_micros(HOBBY_PRICES_MICROS["2x-large"], seconds)


async def test_lease_expiry_seen_by_client(autojump_clock: trio.testing.MockClock) -> None:
    """A machine whose lease runs out is gone for the client and billed to the lease end."""
    async with open_client() as (sim, client):
        server = await client.launch(VERSION, "medium", 120)
        ready = await client.wait_until_ready(server.server_id)
        await trio.sleep(200)
        with pytest.raises(ServerNotFoundError):
            await client.status(server.server_id)
        (record,) = sim.billing()
    assert record.reason == "lease_expired"
    assert record.stopped_at == ready.estimated_stopping_at


async def test_wrong_token_is_auth_error(autojump_clock: trio.testing.MockClock) -> None:
    """A wrong token raises AuthError that names the env vars, not the token."""
    async with open_client(token="wrong-token-XYZ") as (_sim, client):
        with pytest.raises(AuthError) as info:
            await client.list_servers()
    assert info.value.status == 401
    assert "RUNCOMFY_API_TOKEN" in str(info.value)
    assert "wrong-token-XYZ" not in str(info.value)


async def test_wrong_user_id_is_auth_error(autojump_clock: trio.testing.MockClock) -> None:
    """A wrong user id raises AuthError."""
    async with open_client(user_id="not-me") as (_sim, client):
        with pytest.raises(AuthError):
            await client.list_workflows()


async def test_429_burst_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    """A burst of 429s is waited out (Retry-After) and the call succeeds."""
    async with open_client(faults=RunComfyFaults(retry_after=5.0)) as (sim, client):
        start = trio.current_time()
        sim.inject_rate_limit_burst(3)
        servers = await client.list_servers()
        waited = trio.current_time() - start
    assert servers == []
    assert sim.statistics().rate_limited == 3
    assert waited >= 3 * 5.0


async def test_endless_429_is_rate_limited_error(autojump_clock: trio.testing.MockClock) -> None:
    """429 on every attempt ends in RateLimitedError after the policy's attempts."""
    faults = RunComfyFaults(rate_limit_burst_probability=1.0, rate_limit_burst_length=100)
    policy = RunComfyPolicy(retry=RetryPolicy(attempts=3))
    async with open_client(faults=faults, policy=policy) as (sim, client):
        with pytest.raises(RateLimitedError):
            await client.list_servers()
    assert sim.statistics().rate_limited == 3


async def test_5xx_on_a_read_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    """A flaky API (20% 5xx) still answers reads through retries."""
    async with open_client(faults=RunComfyFaults(server_error_rate=0.2)) as (sim, client):
        results = [await client.list_servers() for _ in range(10)]
    assert results == [[]] * 10
    assert sim.statistics().server_errors > 0


async def test_persistent_5xx_is_an_error_with_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A read that always gets 5xx raises RunComfyError carrying the status."""
    policy = RunComfyPolicy(retry=RetryPolicy(attempts=2))
    async with open_client(faults=RunComfyFaults(server_error_rate=1.0), policy=policy) as (
        _sim,
        client,
    ):
        with pytest.raises(RunComfyError) as info:
            await client.list_servers()
    assert info.value.status in (500, 502, 503)


async def test_rejected_launch_is_outcome_unknown(autojump_clock: trio.testing.MockClock) -> None:
    """A 5xx on launch is never retried blindly: OutcomeUnknownError, nothing launched."""
    async with open_client(faults=RunComfyFaults(launch_reject_rate=1.0)) as (sim, client):
        with pytest.raises(OutcomeUnknownError) as info:
            await client.launch(VERSION, "medium", 600)
        servers = await client.list_servers()
    assert info.value.status == 500
    assert servers == []
    assert sim.statistics().launched == 0


async def test_ghost_launch_is_found_by_listing(autojump_clock: trio.testing.MockClock) -> None:
    """A launch that happened behind a 502 is OutcomeUnknownError; listing finds the machine."""
    async with open_client(faults=RunComfyFaults(launch_ghost_rate=1.0)) as (sim, client):
        with pytest.raises(OutcomeUnknownError):
            await client.launch(VERSION, "medium", 600)
        servers = await client.list_servers()
    assert [s.workflow_version_id for s in servers] == [VERSION]
    assert sim.running() == [servers[0].server_id]


async def test_bad_launch_is_launch_error(autojump_clock: trio.testing.MockClock) -> None:
    """A launch the API refuses (400, unknown server type) raises LaunchError."""
    async with open_client() as (_sim, client):
        with pytest.raises(LaunchError) as info:
            await client.launch(VERSION, "quantum-xl", 600)
    assert info.value.status == 400


async def test_launch_failure_status_error(autojump_clock: trio.testing.MockClock) -> None:
    """A machine that ends in Error makes wait_until_ready raise LaunchError; it costs 0."""
    async with open_client(faults=RunComfyFaults(launch_error_rate=1.0)) as (sim, client):
        server = await client.launch(VERSION, "medium", 600)
        with pytest.raises(LaunchError):
            await client.wait_until_ready(server.server_id)
        await client.stop(server.server_id)
        (record,) = sim.billing()
    assert record.cost_micros == 0
    assert record.reason == "never_ready"


async def test_stuck_starting_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    """A machine stuck in Starting makes wait_until_ready give up; stopping it costs 0."""
    async with open_client(faults=RunComfyFaults(stuck_starting_rate=1.0)) as (sim, client):
        server = await client.launch(VERSION, "medium", 3600)
        with pytest.raises(LaunchError, match="not Ready within 600 s"):
            await client.wait_until_ready(server.server_id, give_up_after=600)
        await client.stop(server.server_id)
        (record,) = sim.billing()
    assert record.cost_micros == 0


async def test_404_right_after_launch_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    """The first polls of a new machine answer 404; the client retries and gets its status."""
    faults = RunComfyFaults(not_found_polls_after_launch=3)
    async with open_client(faults=faults) as (_sim, client):
        server = await client.launch(VERSION, "medium", 600)
        status = await client.status(server.server_id)
    assert status.server_id == server.server_id


async def test_404_for_unknown_server_is_immediate(autojump_clock: trio.testing.MockClock) -> None:
    """A 404 for a server this client did not just launch is ServerNotFoundError at once."""
    async with open_client() as (_sim, client):
        start = trio.current_time()
        with pytest.raises(ServerNotFoundError, match="server nope not found"):
            await client.status("nope")
    assert trio.current_time() - start < 5


async def test_404_after_grace_is_not_found(autojump_clock: trio.testing.MockClock) -> None:
    """A machine that keeps answering 404 past the grace raises ServerNotFoundError."""
    faults = RunComfyFaults(not_found_polls_after_launch=10_000)
    policy = RunComfyPolicy(not_found_grace=30)
    async with open_client(faults=faults, policy=policy) as (_sim, client):
        server = await client.launch(VERSION, "medium", 600)
        with pytest.raises(ServerNotFoundError):
            await client.status(server.server_id)
        waited = trio.current_time()
    assert waited >= 30


async def test_slow_readiness(autojump_clock: trio.testing.MockClock) -> None:
    """slow_ready_rate=1 delays Ready by slow_ready_factor x ready_delay."""
    faults = RunComfyFaults(slow_ready_rate=1.0, slow_ready_factor=5.0)
    async with open_client(faults=faults) as (sim, client):
        server = await client.launch(VERSION, "medium", 3600)
        ready = await client.wait_until_ready(server.server_id, interval=10)
        (record,) = sim.billing()
    assert ready.service_ready_at is not None
    assert ready.service_ready_at - record.launched_at == pytest.approx(300.0)


async def test_vanishing_machine(autojump_clock: trio.testing.MockClock) -> None:
    """A machine that vanishes mid-job answers 404 and its bill stops at the vanishing."""
    faults = RunComfyFaults(vanish_rate=1.0, vanish_after=100.0)
    async with open_client(faults=faults) as (sim, client):
        server = await client.launch(VERSION, "medium", 3600)
        await client.wait_until_ready(server.server_id)
        await trio.sleep(150)
        with pytest.raises(ServerNotFoundError):
            await client.status(server.server_id)
        (record,) = sim.billing()
    assert record.reason == "vanished"
    assert record.billed_seconds == 100


async def test_unknown_status_kept_as_string(autojump_clock: trio.testing.MockClock) -> None:
    """An unknown current_status is kept as a string, and Ready still arrives."""
    faults = RunComfyFaults(unknown_status_rate=1.0, unknown_status="Warming")
    async with open_client(faults=faults) as (_sim, client):
        server = await client.launch(VERSION, "medium", 3600)
        ready = await client.wait_until_ready(server.server_id)
    assert server.status == "Warming"
    assert not server.is_known_status
    assert ready.is_ready


async def test_shared_bucket_prevents_429_storm(autojump_clock: trio.testing.MockClock) -> None:
    """30 concurrent callers through one shared bucket never see a 429."""
    async with open_client(timings=RunComfyTimings(burst=3)) as (sim, client):
        results: list[list[Server]] = []

        async def caller() -> None:
            results.append(await client.list_servers())

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(caller)
    assert len(results) == 30
    assert sim.statistics().rate_limited == 0


async def test_without_shared_limit_429s_happen_and_recover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a bucket far above the account limit the API answers 429s, and every call still
    succeeds because each 429 pauses the shared bucket."""
    greedy = TokenBucket(rate=1000.0, burst=1000)
    async with open_client(timings=RunComfyTimings(burst=3), bucket=greedy) as (sim, client):
        done = 0

        async def caller() -> None:
            nonlocal done
            await client.list_servers()
            done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(caller)
    assert done == 6
    assert sim.statistics().rate_limited > 0


def test_parse_timestamp_forms() -> None:
    """ISO with Z, with an offset, without a zone (UTC), epoch numbers and None all parse."""
    assert parse_timestamp("1970-01-01T00:00:10Z") == 10.0
    assert parse_timestamp("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_timestamp("1970-01-01T00:00:10.500000") == 10.5
    assert parse_timestamp(12) == 12.0
    assert parse_timestamp(None) is None


async def test_secrets_never_leak(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Forced failures: no exception message, log record or repr holds the token or a host."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    hosts: list[str] = []
    faults = RunComfyFaults(not_found_polls_after_launch=2, rate_limit_burst_length=2)
    policy = RunComfyPolicy(retry=RetryPolicy(attempts=2))
    async with open_client(faults=faults, policy=policy) as (sim, client):
        server = await client.launch(VERSION, "medium", 600)
        ready = await client.wait_until_ready(server.server_id)
        assert ready.url is not None
        hosts.append(httpx.URL(ready.url.reveal()).host)
        seen += [repr(ready), str(ready), repr(ready.url), f"{ready.url}", repr(client)]
        seen += [repr(await client.list_servers())]
        sim.faults = attrs.evolve(sim.faults, server_error_rate=1.0)
        for call in (client.list_servers(), client.status(server.server_id)):
            with pytest.raises(RunComfyError) as info:
                await call
            seen += [str(info.value), repr(info.value), *getattr(info.value, "__notes__", [])]
        sim.faults = attrs.evolve(sim.faults, server_error_rate=0.0, rate_limit_burst_probability=1)
        with pytest.raises(RateLimitedError) as limited:
            await client.extend(server.server_id, 100)
        seen += [str(limited.value), repr(limited.value)]
        sim.faults = RunComfyFaults()
        with pytest.raises(LaunchError) as refused:
            await client.launch(VERSION, "nope", 600)
        seen += [str(refused.value)]
    async with open_client(token="bad-" + TOKEN) as (_sim, bad):
        with pytest.raises(AuthError) as auth:
            await bad.list_servers()
        seen += [str(auth.value), repr(auth.value), repr(bad)]
    seen += [record.getMessage() for record in caplog.records]
    text = "\n".join(seen)
    assert caplog.records  # the failures were logged
    assert TOKEN not in text
    for host in hosts:
        assert host not in text
