"""``RefusalsTold``: which refused launches are news (logged), and which the pool's
repeated ask of the same job on the same figures is not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import RefusalsTold


def _refused(job_id: str, remaining: int = 35_000, estimate: int = 165_000) -> ev.LaunchRefused:
    return ev.LaunchRefused(
        job_id=job_id, estimate_micros=estimate, remaining_micros=remaining, at=1.0
    )


def test_the_same_job_on_the_same_figures_is_told_once() -> None:
    """The pool's asks repeated while nothing changed: one line."""
    told = RefusalsTold()
    assert [told.is_news(_refused("j1"), 200_000) for _ in range(3)] == [True, False, False]


def test_another_job_waiting_is_news() -> None:
    """What waits changed: the new job's refusal is told."""
    told = RefusalsTold()
    assert told.is_news(_refused("j1"), 200_000)
    assert told.is_news(_refused("j2"), 200_000)
    assert not told.is_news(_refused("j1"), 200_000)


@given(
    change=st.sampled_from(["remaining", "estimate", "limit"]),
    delta=st.integers(min_value=1, max_value=10**6),
)
def test_a_change_of_figures_is_news(change: str, delta: int) -> None:
    """What is left, what a lease needs, or the budget moved: told again."""
    told = RefusalsTold()
    assert told.is_news(_refused("j1"), 200_000)
    remaining = 35_000 + delta if change == "remaining" else 35_000
    estimate = 165_000 + delta if change == "estimate" else 165_000
    limit = 200_000 + delta if change == "limit" else 200_000
    assert told.is_news(_refused("j1", remaining, estimate), limit)


def test_a_grant_in_between_makes_the_next_refusal_news() -> None:
    """``forget`` (a launch granted, the budget set): the same refusal is told again."""
    told = RefusalsTold()
    assert told.is_news(_refused("j1"), 200_000)
    told.forget()
    assert told.is_news(_refused("j1"), 200_000)
