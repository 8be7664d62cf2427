"""Supervision policy values: backoff arithmetic and spec validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.runtime import Actor, ActorSpec, Backoff, Intensity

backoffs = st.builds(
    Backoff,
    initial=st.floats(min_value=0, max_value=100),
    factor=st.floats(min_value=1, max_value=10),
    max=st.floats(min_value=0, max_value=1000),
    jitter=st.floats(min_value=0, max_value=1),
)


@given(backoff=backoffs, k=st.integers(min_value=0, max_value=10_000), seed=st.integers())
def test_backoff_delay_stays_within_zero_and_max(backoff: Backoff, k: int, seed: int) -> None:
    """Any backoff, any restart count: 0 <= delay <= max, and finite."""
    delay = backoff.delay(k, random.Random(seed))
    assert 0 <= delay <= backoff.max
    assert math.isfinite(delay)


@given(backoff=backoffs.map(lambda b: Backoff(b.initial, b.factor, b.max, 0.0)))
def test_backoff_without_jitter_never_shrinks(backoff: Backoff) -> None:
    """With jitter 0 the delay is non-decreasing in the restart count."""
    rng = random.Random(0)
    delays = [backoff.delay(k, rng) for k in range(40)]
    assert delays == sorted(delays)


def test_bad_policy_values_are_refused() -> None:
    """Negative intensities and backoff factors below 1 raise ValueError at construction."""
    with pytest.raises(ValueError, match="max_restarts"):
        Intensity(-1, 5)
    with pytest.raises(ValueError, match="period"):
        Intensity(1, 0)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


@pytest.mark.parametrize("name", ["", "a/b"])
def test_actor_names_must_be_one_path_segment(name: str) -> None:
    """Empty names and names with '/' are refused."""
    with pytest.raises(ValueError, match="name"):
        ActorSpec(Actor, name)


@pytest.mark.parametrize("size", [0, -1, 1.5])
def test_mailbox_size_must_be_positive_integer_or_inf(size: float) -> None:
    """Mailbox sizes are positive integers or math.inf."""
    with pytest.raises(ValueError, match="mailbox_size"):
        ActorSpec(Actor, "a", mailbox_size=size)
