"""Wall-clock time for events, derived from trio's clock so tests run under MockClock.

Events carry wall times (seconds since the epoch, float). Live runs read ``time.time()``
once and advance it by a clock that never steps (:class:`SystemWallClock`);
under ``trio.testing.MockClock`` a :class:`TrioWallClock` maps trio's virtual time onto a
fixed epoch so that an hour of simulated cloud passes in milliseconds and stays reproducible.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio


class WallClock(Protocol):
    """Anything that tells the wall time in seconds since the epoch."""

    def now(self) -> float: ...


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def _elapsed() -> float:
    """Seconds on a clock that never steps: ``CLOCK_BOOTTIME`` (counts a suspend too, as
    RunComfy's billing does), else the monotonic clock. (Which one is found once, at
    import: this runs for every event's time and record, issue 16.)"""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


_anchor: tuple[float, float] | None = None  # (time.time(), _elapsed()) at first use


class SystemWallClock:
    """The real wall clock, read once per process and advanced by a clock that never steps.

    ``time.time()`` steps (an NTP correction, a VM restored): a stop billed from the
    server's Ready time to a stepped-back ``now`` would bill minutes short (or nothing),
    and a step forward would bill time the cloud never charged. So the wall time is taken
    at the first reading (shared by every instance of the process: their times agree) and
    advanced by ``CLOCK_BOOTTIME``. A resumed run reads the wall afresh: a step between two
    runs shows in neither. A constant offset from RunComfy's clock is not corrected here:
    the RunComfy client measures it (``Date`` headers) and moves RunComfy's times onto
    this clock (``conjure_actors.clients.runcomfy``).
    """

    def now(self) -> float:
        global _anchor
        if _anchor is None:
            _anchor = (time.time(), _elapsed())
        wall, base = _anchor
        return wall + (_elapsed() - base)


class TrioWallClock:
    """``epoch + trio.current_time() - origin``: follows MockClock inside ``trio.run``."""

    def __init__(self, epoch: float = 1_795_000_000.0) -> None:
        self._epoch = epoch
        self._origin: float | None = None

    def now(self) -> float:
        t = trio.current_time()
        origin = self._origin
        if origin is None:
            origin = self._origin = t
        return self._epoch + (t - origin)
