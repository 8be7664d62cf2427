"""A trio token bucket: one per RunComfy account, shared by every caller.

RunComfy allows about one request per second per account with short bursts. Every actor
that talks to the account goes through the same :class:`TokenBucket`, so the account as a
whole stays under the limit however many machines and jobs are in flight.

The bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second. A caller
takes one token per request. Waiting callers queue on a fair :class:`trio.Lock`, so they are
served in arrival order and a slow caller is never starved by a stream of fast ones.

When the server still answers 429 (another process shares the account, or the clocks
disagree), :meth:`TokenBucket.pause` empties the bucket and holds every caller until the
server's ``Retry-After`` has passed: one 429 slows everyone down at once instead of each
caller discovering the limit on its own (a "429 storm").

Time is ``trio.current_time()``, so the bucket follows ``trio.testing.MockClock``.
"""

from __future__ import annotations

from typing import Final

import attrs
import trio

_EPSILON: Final = 1e-9
_MIN_SLEEP: Final = 1e-6


@attrs.frozen
class BucketStatistics:
    """A snapshot of a :class:`TokenBucket`."""

    rate: float
    burst: float
    tokens: float
    waiting: int
    acquired: int
    paused_until: float | None


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; ``acquire`` takes one."""

    def __init__(self, rate: float = 1.0, burst: float = 2.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens per second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1 token, got {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None
        self._not_before = float("-inf")
        self._lock = trio.Lock()
        self._waiting = 0
        self._acquired = 0

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
        if now <= self._last:  # still inside a pause (refill restarts at its end)
            return
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        """Wait (in arrival order) until a token is available, then take it."""
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    now = trio.current_time()
                    if now < self._not_before:
                        await trio.sleep_until(self._not_before)
                        continue
                    self._refill(now)
                    if self._tokens >= 1.0 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        self._acquired += 1
                        return
                    # Never sleep less than a microsecond: float rounding could otherwise
                    # leave the bucket a hair short of a token forever.
                    await trio.sleep(max(_MIN_SLEEP, (1.0 - self._tokens) / self.rate))
        finally:
            self._waiting -= 1

    def acquire_nowait(self) -> None:
        """Take a token now or raise :class:`trio.WouldBlock`."""
        now = trio.current_time()
        if self._lock.locked() or now < self._not_before:
            raise trio.WouldBlock
        self._refill(now)
        if self._tokens < 1.0 - _EPSILON:
            raise trio.WouldBlock
        self._tokens = max(0.0, self._tokens - 1.0)
        self._acquired += 1

    def pause(self, seconds: float) -> None:
        """The server said "slow down": hold every caller for ``seconds``, then start empty."""
        now = trio.current_time()
        self._refill(now)
        until = now + max(0.0, seconds)
        if until > self._not_before:
            self._not_before = until
        # Refill restarts from the end of the pause with an empty bucket: the server's
        # own bucket is empty too, so a burst right after the pause would be refused.
        self._tokens = 0.0
        self._last = self._not_before

    def statistics(self) -> BucketStatistics:
        """Tokens available now, callers waiting, tokens handed out, pause deadline."""
        now = trio.current_time()
        if now >= self._not_before:
            self._refill(now)
        paused = self._not_before if now < self._not_before else None
        return BucketStatistics(
            rate=self.rate,
            burst=self.burst,
            tokens=self._tokens,
            waiting=self._waiting,
            acquired=self._acquired,
            paused_until=paused,
        )
