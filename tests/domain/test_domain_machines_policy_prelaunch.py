"""Predictive pre-launch (``domain/machines_policy``): the arrival rate over a sliding
window, the target it gives, and how many machines to launch for it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.machines_policy import (
    arrival_rate,
    prelaunch_target,
    prelaunches_needed,
)

rates = st.floats(0, 10, allow_nan=False)
services = st.floats(0, 3600, allow_nan=False)
factors = st.floats(0, 5, allow_nan=False)
caps = st.integers(0, 50)
times = st.lists(st.floats(0, 10_000, allow_nan=False), max_size=30).map(sorted)


@given(rates, services, factors, caps)
def test_target_never_exceeds_the_cap(rate: float, service: float, factor: float, cap: int) -> None:
    """The target is between 0 and the cap, whatever the rate, service time and factor."""
    target = prelaunch_target(rate=rate, service_seconds=service, factor=factor, cap=cap)
    assert 0 <= target <= cap


@given(services, factors, caps)
def test_no_arrival_means_no_prelaunch(service: float, factor: float, cap: int) -> None:
    """Zero arrivals in the window: rate 0, target 0, nothing to launch."""
    rate = arrival_rate([], now=100.0, window=60.0)
    target = prelaunch_target(rate=rate, service_seconds=service, factor=factor, cap=cap)
    assert (rate, target) == (0.0, 0)
    assert prelaunches_needed(target=target, alive=0, max_machines=10) == 0


@given(rates, rates, services, factors, caps)
def test_target_is_monotone_in_the_rate(
    a: float, b: float, service: float, factor: float, cap: int
) -> None:
    """A higher arrival rate never asks for fewer machines."""
    low, high = sorted((a, b))
    kw = {"service_seconds": service, "factor": factor, "cap": cap}
    assert prelaunch_target(rate=low, **kw) <= prelaunch_target(rate=high, **kw)


def test_target_is_littles_law_rounded_up() -> None:
    """One job a minute, each keeping a machine 5 minutes, factor 1.5: 7.5, so 8 machines."""
    assert prelaunch_target(rate=1 / 60, service_seconds=300, factor=1.5, cap=20) == 8


@given(times, st.floats(0, 10_000, allow_nan=False), st.floats(0.1, 5000, allow_nan=False))
def test_rate_counts_the_window_only(arrivals: list[float], now: float, window: float) -> None:
    """The rate is the arrivals in (now - window, now] over the window."""
    expected = sum(now - window < t <= now for t in arrivals) / window
    assert math.isclose(arrival_rate(arrivals, now=now, window=window), expected)


@given(times, st.floats(0, 10_000, allow_nan=False), st.floats(0, 10_000, allow_nan=False))
def test_rate_is_monotone_in_arrivals(arrivals: list[float], extra: float, now: float) -> None:
    """One more arrival never lowers the rate."""
    more = sorted([*arrivals, extra])
    assert arrival_rate(more, now=now, window=600.0) >= arrival_rate(
        arrivals, now=now, window=600.0
    )


@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 50))
def test_prelaunches_fill_up_to_the_target_within_max_machines(
    target: int, alive: int, max_machines: int
) -> None:
    """Launches bring the alive machines up to the target, never past max_machines, and
    none when enough are alive."""
    n = prelaunches_needed(target=target, alive=alive, max_machines=max_machines)
    assert n >= 0
    assert n == 0 or alive + n <= min(target, max_machines)
    if alive < min(target, max_machines):
        assert alive + n == min(target, max_machines)
