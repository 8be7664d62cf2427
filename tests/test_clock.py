"""The live wall clock does not follow a step of the system's clock (billing spans)."""

from __future__ import annotations

import time

import pytest

from conjure_actors import clock


def test_a_step_back_of_the_system_clock_does_not_move_the_wall_clock_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """time.time() steps back 20 minutes (an NTP correction) between two readings: the
    wall clock still moves forward by the time that really passed, so a span billed from
    the first reading to the second is not 20 minutes short."""
    elapsed = [1000.0]
    system = [1_795_000_000.0]
    monkeypatch.setattr(clock, "_anchor", None)
    monkeypatch.setattr(clock, "_elapsed", lambda: elapsed[0])
    monkeypatch.setattr(time, "time", lambda: system[0])
    wall = clock.SystemWallClock()
    start = wall.now()
    assert start == 1_795_000_000.0
    elapsed[0] += 600.0
    system[0] += 600.0 - 1200.0  # ten minutes passed; the system clock stepped back 20
    assert wall.now() - start == 600.0
    assert clock.SystemWallClock().now() == wall.now()  # every instance agrees


def test_the_wall_clock_advances_with_real_time() -> None:
    """Unpatched: close to time.time() and never going back."""
    wall = clock.SystemWallClock()
    a = wall.now()
    b = wall.now()
    assert b >= a
    assert abs(a - time.time()) < 3600  # anchored on the system's wall time
