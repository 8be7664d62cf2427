"""Timeouts, retries and jittered exponential backoff shared by the ComfyUI and RunComfy clients.

Vocabulary:

- *attempt*: one HTTP exchange. Every attempt runs under its own deadline
  (``RetryPolicy.request_timeout``, enforced with ``trio.move_on_after`` so that it follows
  ``MockClock`` even over an in-memory transport, where httpx's own timeouts never fire).
- *retryable*: a connect error (nothing reached the server), a 429, or a 5xx. A 429 or 503 that
  carries ``Retry-After`` waits at least that long.
- *idempotent*: safe to send twice. A request that is not idempotent (``POST /prompt``) and
  times out, or loses its connection after it was sent, raises :class:`OutcomeUnknownError`:
  the caller reconciles (looks its id up) instead of sending it again blindly.

Messages never include a URL: callers pass ``what`` (for example ``"POST /prompt on server
abc"``) and a ``scrub`` function that removes secrets from any text borrowed from httpx.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

import attrs
import httpx
import trio

from conjure_actors.clients.errors import OutcomeUnknownError, TransportError
from conjure_actors.runtime.gate import background_checkpoint

__all__ = [
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "connect_problem",
    "lost_problem",
    "parse_retry_after",
    "send_with_retry",
]

log = logging.getLogger("conjure_actors.clients")

RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


@attrs.frozen
class RetryPolicy:
    """How long to wait for one attempt, how many attempts, and how to space them.

    ``delay(n)`` is "full jitter" backoff: uniform in ``[(1 - jitter) * d, d]`` where
    ``d = min(max_delay, base_delay * multiplier ** n)``. Full jitter spreads the retries of
    many clients that failed together (a server restart, a 429 burst) instead of having them
    come back in lock-step.
    """

    attempts: int = 5
    base_delay: float = 0.25
    multiplier: float = 2.0
    max_delay: float = 8.0
    jitter: float = 1.0
    request_timeout: float = 30.0
    max_retry_after: float = 120.0

    def __attrs_post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be within [0, 1]")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * self.multiplier**attempt)
        return ceiling * (1.0 - self.jitter * rng.random())

    def delays(self, rng: random.Random) -> Iterator[float]:
        """An endless series of backoff delays (for polling loops), capped at ``max_delay``."""
        n = 0
        while True:
            yield self.delay(n, rng)
            n += 1


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now (delta-seconds or HTTP-date); ``None`` if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def connect_problem(exc: BaseException) -> str:
    """Why a connection could not be made, in words: ``cannot connect (the host name does
    not resolve)``. Never an exception's class name, nor httpx's text (which may name the
    host of a machine's secret URL): the caller says where it tried to connect, if it may."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "cannot connect (no answer to the connection)"
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "cannot connect (the host name does not resolve)"
        if isinstance(cause, ConnectionRefusedError):
            return "cannot connect (connection refused)"
        cause = cause.__cause__ or cause.__context__
    return "cannot connect"


def lost_problem(exc: httpx.TransportError, scrub: Callable[[str], str]) -> str:
    """Why a request sent got no answer, in words (never an exception's class name)."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    detail = scrub(str(exc))
    return f"connection lost ({detail})" if detail else "connection lost"


def _identity(text: str) -> str:
    return text


async def send_with_retry(
    attempt: Callable[[], Awaitable[httpx.Response]],
    *,
    policy: RetryPolicy,
    rng: random.Random,
    what: str,
    idempotent: bool = True,
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES,
    scrub: Callable[[str], str] = _identity,
    limiter: trio.CapacityLimiter | None = None,
) -> httpx.Response:
    """Run ``attempt`` until it answers with a non-retryable status, or give up.

    Returns the last response, which may still carry a retryable status once the attempts
    are used up (the caller maps it to its own error, e.g. ``RateLimitedError``).
    Raises :class:`TransportError` when every attempt failed to connect or to read, and
    :class:`OutcomeUnknownError` when a non-idempotent request may have reached the server.
    ``limiter`` bounds concurrent attempts; waiting for it does not count against the
    attempt's deadline (a request still waiting was certainly not sent).
    """
    # The attempt runs inline under ONE cancel scope (its deadline), with no helper
    # coroutine or context manager around it: every request of both clients passes here.
    last_problem = "no attempt made"
    for n in range(policy.attempts):
        response: httpx.Response | None = None
        if limiter is not None:
            try:  # a free token needs no trip through the scheduler (the request yields)
                limiter.acquire_nowait()
            except trio.WouldBlock:
                await limiter.acquire()
        try:
            with trio.move_on_after(policy.request_timeout) as scope:
                try:
                    response = await attempt()
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    # Nothing reached the server: always safe to retry.
                    last_problem = connect_problem(exc)
                except httpx.TransportError as exc:
                    # Sent (maybe) but no answer: the outcome is unknown for a non-idempotent
                    # call.
                    last_problem = lost_problem(exc, scrub)
                    if not idempotent:
                        raise OutcomeUnknownError(
                            f"{what}: sent, but {last_problem}; "
                            "look the request up before sending it again"
                        ) from None
        finally:
            if limiter is not None:
                limiter.release()
        if response is not None:
            # Background work (a job's call) waits for its turn again once its answer is
            # read, with its connection and its limiter token given back.
            await background_checkpoint()
        if scope.cancelled_caught:
            last_problem = f"no answer within {policy.request_timeout:g} s"
            if not idempotent:
                raise OutcomeUnknownError(
                    f"{what}: {last_problem}; look the request up before sending it again"
                )
        wait = policy.delay(n, rng)
        if response is not None:
            if response.status_code not in retry_statuses:
                return response
            if n == policy.attempts - 1:
                return response
            last_problem = f"HTTP {response.status_code}"
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                wait = max(wait, min(retry_after, policy.max_retry_after))
        if n == policy.attempts - 1:
            break
        log.info(
            "%s: %s; retry %d/%d in %.2f s", what, last_problem, n + 1, policy.attempts - 1, wait
        )
        await trio.sleep(wait)
    raise TransportError(f"{what} failed after {policy.attempts} attempts: {last_problem}")
