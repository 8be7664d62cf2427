"""The job's retry schedule (``domain/retry``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.retry import Backoff


@given(st.integers(1, 20))
def test_backoff_is_monotone_and_capped(attempt: int) -> None:
    """Delays grow with the attempt number and never pass the cap."""
    b = Backoff(initial=1.0, factor=2.0, max_delay=30.0, max_attempts=5)
    assert b.delay(attempt) <= b.delay(attempt + 1) <= 30.0
