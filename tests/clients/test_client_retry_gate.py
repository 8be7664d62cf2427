"""A call made in background work (a job's) waits for its turn at the gate again once its
answer is read, with its connection and its limiter token given back (found by review: a
response hook parked it with both held, so a foreground call could wait on the pool)."""

from __future__ import annotations

import random

import httpx
import trio
import trio.testing

from conjure_actors.clients.retry import RetryPolicy, send_with_retry
from conjure_actors.runtime import PriorityGate


async def test_a_background_call_waits_again_once_its_answer_is_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request arrives while the job's call is out: the call's caller goes on only at the
    gate's bound, after the answer was read and the limiter token returned."""
    gate = PriorityGate(max_wait=0.5, turn=0.0)
    limiter = trio.CapacityLimiter(1)

    async def attempt() -> httpx.Response:
        gate.enter()  # a request arrives while the call is out (the request hook let it go)
        return httpx.Response(204)

    with trio.fail_after(60), gate.background():
        answer = await send_with_retry(
            attempt, policy=RetryPolicy(), rng=random.Random(0), what="x", limiter=limiter
        )
        handled = trio.current_time()
    assert limiter.borrowed_tokens == 0
    gate.leave()
    assert answer.status_code == 204
    assert handled == 0.5


async def test_a_call_outside_background_work_does_not_wait() -> None:
    """A foreground caller (a request, the MachineActor) goes straight on with its answer."""
    gate = PriorityGate(max_wait=0.5, turn=0.0)

    async def attempt() -> httpx.Response:
        return httpx.Response(204)

    gate.enter()
    with trio.fail_after(1):
        answer = await send_with_retry(
            attempt, policy=RetryPolicy(), rng=random.Random(0), what="x"
        )
    gate.leave()
    assert answer.status_code == 204
