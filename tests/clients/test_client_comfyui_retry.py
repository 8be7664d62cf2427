"""Tests of the shared retry helpers (``conjure_actors.clients.retry``)."""

from __future__ import annotations

import random

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients.errors import OutcomeUnknownError, TransportError
from conjure_actors.clients.retry import RetryPolicy, parse_retry_after, send_with_retry

REQUEST = httpx.Request("GET", "http://secret-host.invalid/x")


@given(attempt=st.integers(0, 40), seed=st.integers(0, 2**32))
def test_delay_stays_within_jitter_band(attempt: int, seed: int) -> None:
    """Every backoff delay lies in [(1 - jitter) * ceiling, ceiling]."""
    policy = RetryPolicy(base_delay=0.5, max_delay=5.0, jitter=0.5)
    ceiling = min(5.0, 0.5 * 2.0**attempt)
    d = policy.delay(attempt, random.Random(seed))
    assert 0.5 * ceiling - 1e-12 <= d <= ceiling + 1e-12


def test_retry_after_parses_seconds_and_dates() -> None:
    """Retry-After accepts delta-seconds and HTTP-dates; garbage gives None."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0) == pytest.approx(6.0)


async def test_retries_429_honouring_retry_after(autojump_clock: trio.abc.Clock) -> None:
    """A 429 with Retry-After: 7 waits at least 7 s before the next attempt."""
    answers = [httpx.Response(429, headers={"retry-after": "7"}), httpx.Response(200)]
    times: list[float] = []

    async def attempt() -> httpx.Response:
        times.append(trio.current_time())
        return answers.pop(0)

    response = await send_with_retry(
        attempt, policy=RetryPolicy(), rng=random.Random(1), what="GET /x"
    )
    assert response.status_code == 200
    assert times[1] - times[0] >= 7.0


async def test_connect_errors_exhaust_into_transport_error(autojump_clock: trio.abc.Clock) -> None:
    """Connect errors are retried, then raise TransportError without the URL."""
    calls = 0

    async def attempt() -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused secret-host.invalid", request=REQUEST)

    with pytest.raises(TransportError) as info:
        await send_with_retry(
            attempt,
            policy=RetryPolicy(attempts=3),
            rng=random.Random(1),
            what="GET /x on server s1",
            scrub=lambda s: s.replace("secret-host.invalid", "server s1"),
        )
    assert calls == 3
    assert "secret-host" not in str(info.value)


async def test_timeout_on_non_idempotent_is_outcome_unknown(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A POST that never answers raises OutcomeUnknownError after one attempt."""

    async def attempt() -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(OutcomeUnknownError):
        await send_with_retry(
            attempt,
            policy=RetryPolicy(request_timeout=5.0),
            rng=random.Random(1),
            what="POST /prompt",
            idempotent=False,
        )


async def test_exhausted_5xx_returns_last_response(autojump_clock: trio.abc.Clock) -> None:
    """After the last attempt a retryable status is handed back to the caller."""

    async def attempt() -> httpx.Response:
        return httpx.Response(503)

    response = await send_with_retry(
        attempt, policy=RetryPolicy(attempts=2), rng=random.Random(1), what="GET /x"
    )
    assert response.status_code == 503


async def test_waiting_for_the_limiter_is_not_a_timeout(autojump_clock: trio.abc.Clock) -> None:
    """A POST queued 100 s behind a busy limiter is sent, not reported as outcome unknown."""
    limiter = trio.CapacityLimiter(1)

    async def attempt() -> httpx.Response:
        return httpx.Response(200)

    async with trio.open_nursery() as nursery:
        await limiter.acquire_on_behalf_of("other")
        nursery.start_soon(_release_later, limiter)
        response = await send_with_retry(
            attempt,
            policy=RetryPolicy(request_timeout=5.0),
            rng=random.Random(1),
            what="POST /prompt",
            idempotent=False,
            limiter=limiter,
        )
    assert response.status_code == 200
    assert trio.current_time() >= 100.0


async def _release_later(limiter: trio.CapacityLimiter) -> None:
    await trio.sleep(100.0)
    limiter.release_on_behalf_of("other")


async def test_the_limiter_token_comes_back_after_a_timed_out_attempt(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Attempts that time out give their limiter token back, every one of them."""
    limiter = trio.CapacityLimiter(1)

    async def attempt() -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(TransportError, match="no answer within 5 s"):
        await send_with_retry(
            attempt,
            policy=RetryPolicy(attempts=3, request_timeout=5.0),
            rng=random.Random(1),
            what="GET /queue",
            limiter=limiter,
        )
    assert limiter.borrowed_tokens == 0
