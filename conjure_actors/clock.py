"""Wall-clock time for events, derived from trio's clock so tests run under MockClock.

Events carry wall times (seconds since the epoch, float). Live runs read ``time.time()``;
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


class SystemWallClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class TrioWallClock:
    """``epoch + trio.current_time() - origin``: follows MockClock inside ``trio.run``."""

    def __init__(self, epoch: float = 1_795_000_000.0) -> None:
        self._epoch = epoch
        self._origin: float | None = None

    def now(self) -> float:
        t = trio.current_time()
        if self._origin is None:
            self._origin = t
        return self._epoch + (t - self._origin)
