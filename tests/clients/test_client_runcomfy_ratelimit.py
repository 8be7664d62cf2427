"""The shared token bucket (clients/ratelimit.py) under MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients.ratelimit import TokenBucket


async def test_burst_then_rate(autojump_clock: trio.testing.MockClock) -> None:
    """The first `burst` tokens are immediate; then one per 1/rate seconds."""
    bucket = TokenBucket(rate=2.0, burst=3)
    times = []
    for _ in range(7):
        await bucket.acquire()
        times.append(trio.current_time())
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3:] == pytest.approx([0.5, 1.0, 1.5, 2.0])


async def test_pause_holds_every_caller(autojump_clock: trio.testing.MockClock) -> None:
    """After pause(s) nobody gets a token before s seconds, and the bucket restarts empty."""
    bucket = TokenBucket(rate=1.0, burst=5)
    bucket.pause(10.0)
    got: list[float] = []

    async def caller() -> None:
        await bucket.acquire()
        got.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller)
    assert got == pytest.approx([11.0, 12.0, 13.0])


async def test_waiters_are_served_in_arrival_order(autojump_clock: trio.testing.MockClock) -> None:
    """Waiting callers get their tokens first come, first served."""
    bucket = TokenBucket(rate=1.0, burst=1)
    order: list[int] = []

    async def caller(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(caller, i)
            await trio.sleep(0.01)
    assert order == [0, 1, 2, 3, 4]


async def test_acquire_nowait(autojump_clock: trio.testing.MockClock) -> None:
    """acquire_nowait takes a stored token or raises WouldBlock."""
    bucket = TokenBucket(rate=1.0, burst=1)
    bucket.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        bucket.acquire_nowait()
    await trio.sleep(1.0)
    bucket.acquire_nowait()
    assert bucket.statistics().acquired == 2


def test_bad_parameters() -> None:
    """A non-positive rate or a burst below one token is refused."""
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(burst=0.5)


@given(
    rate=st.floats(min_value=0.1, max_value=50),
    burst=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=25),
)
def test_never_more_than_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """In any window of length w, at most burst + rate * w tokens are handed out."""
    times: list[float] = []

    async def scenario() -> None:
        bucket = TokenBucket(rate=rate, burst=burst)
        for gap in gaps:
            await trio.sleep(gap)
            await bucket.acquire()
            times.append(trio.current_time())

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            assert j - i + 1 <= burst + rate * window + 1e-6
