"""Property: random RunComfy call sequences under random faults keep client and sim sane."""

from __future__ import annotations

import math
import random

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients.errors import ClientError
from conjure_actors.clients.retry import RetryPolicy
from conjure_actors.clients.runcomfy import RunComfyClient, RunComfyPolicy, Server
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.runcomfy import (
    HOBBY_PRICES_MICROS,
    RunComfyFaults,
    RunComfySim,
    RunComfyTimings,
    billed_seconds,
    cost_micros,
)

probability = st.sampled_from([0.0, 0.0, 0.1, 0.3])
faults_strategy = st.builds(
    RunComfyFaults,
    rate_limit_burst_probability=probability,
    server_error_rate=probability,
    launch_reject_rate=probability,
    launch_ghost_rate=probability,
    launch_error_rate=probability,
    stuck_starting_rate=probability,
    slow_ready_rate=probability,
    vanish_rate=probability,
    vanish_after=st.sampled_from([5.0, 200.0]),
    unknown_status_rate=probability,
    not_found_polls_after_launch=st.integers(0, 3),
)
operation = st.one_of(
    st.tuples(
        st.just("launch"), st.sampled_from(sorted(HOBBY_PRICES_MICROS)), st.integers(30, 900)
    ),
    st.tuples(st.just("status"), st.integers(0, 5)),
    st.tuples(st.just("extend"), st.integers(0, 5), st.integers(10, 900)),
    st.tuples(st.just("stop"), st.integers(0, 5)),
    st.tuples(st.just("list"), st.just(0)),
    st.tuples(st.just("sleep"), st.sampled_from([0.5, 10.0, 60.0, 400.0])),
)


@given(
    seed=st.integers(0, 2**16),
    faults=faults_strategy,
    ops=st.lists(operation, max_size=25),
)
@pytest.mark.slow
def test_random_calls_under_faults(
    seed: int, faults: RunComfyFaults, ops: list[tuple[object, ...]]
) -> None:
    """Only ClientErrors escape; bills follow the rule; every machine can be stopped at the end."""
    final: list[Server] = []

    async def scenario() -> None:
        sim = RunComfySim(
            user_id="u",
            tokens=["t"],
            seed=seed,
            faults=faults,
            timings=RunComfyTimings(ready_delay=20.0),
            wall=TrioWallClock().now,
        )
        policy = RunComfyPolicy(retry=RetryPolicy(attempts=4), not_found_grace=10.0)
        with trio.fail_after(10**6):
            await run(sim, policy)

    async def run(sim: RunComfySim, policy: RunComfyPolicy) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            transport = httpx.ASGITransport(app=sim.asgi)
            async with httpx.AsyncClient(transport=transport) as http:
                client = RunComfyClient(
                    "https://x", "u", "t", http=http, policy=policy, rng=random.Random(seed)
                )
                ids: list[str] = []
                for op in ops:
                    try:
                        match op:
                            case ("launch", server_type, duration):
                                ids.append(
                                    (await client.launch("v", server_type, duration)).server_id
                                )
                            case ("status", i) if ids:
                                await client.status(ids[i % len(ids)])
                            case ("extend", i, seconds) if ids:
                                await client.extend(ids[i % len(ids)], seconds)
                            case ("stop", i) if ids:
                                await client.stop(ids[i % len(ids)], missing_ok=True)
                            case ("list", _):
                                await client.list_servers()
                            case ("sleep", seconds):
                                await trio.sleep(seconds)
                    except ClientError:
                        pass  # an expected, typed failure under faults
                # Faults off: the account can always be cleaned up and listed exactly.
                sim.faults = attrs.evolve(RunComfyFaults(), not_found_polls_after_launch=0)
                for server in await client.list_servers():
                    await client.stop(server.server_id, missing_ok=True)
                assert sim.running() == []
                await trio.sleep(60)
                final.extend(await client.list_servers())
                records = sim.billing()
            nursery.cancel_scope.cancel()
        for record in records:
            assert record.stopped_at is not None
            if record.service_ready_at is None:
                assert record.billed_seconds == 0
            else:
                assert record.stopped_at >= record.service_ready_at
                assert record.billed_seconds == billed_seconds(
                    record.service_ready_at, record.stopped_at
                )
                assert record.billed_seconds <= math.ceil(
                    record.stopped_at - record.service_ready_at
                )
            assert record.cost_micros == cost_micros(
                record.rate_micros_per_hour, record.billed_seconds
            )

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert final == []
