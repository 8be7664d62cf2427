"""The surplus rule (``surplus_starting``): machines still Starting that no waiting job
needs are stopped (RunComfy bills nothing before Ready), hedge 1 included, and never one
a waiting job needs; with ``launches_needed`` it never stops what it would launch again."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.machines_policy import launches_needed, surplus_starting


def test_unhedged_starting_machines_with_no_job_waiting_are_surplus() -> None:
    """Hedge 1, no job waiting (a Ready machine took them all): every Starting one is
    surplus; three jobs waiting for four Starting machines: one is."""
    assert surplus_starting(waiting=0, starting=4, jobs_per_machine=1, hedge=1) == 4
    assert surplus_starting(waiting=3, starting=4, jobs_per_machine=1, hedge=1) == 1
    assert surplus_starting(waiting=3, starting=2, jobs_per_machine=1, hedge=1) == 0


def test_surplus_counts_machines_by_their_slots() -> None:
    """Two jobs per machine: three waiting jobs need two machines, so one of three is
    surplus."""
    assert surplus_starting(waiting=3, starting=3, jobs_per_machine=2, hedge=1) == 1


@given(
    waiting=st.integers(0, 40),
    starting=st.integers(0, 40),
    jpm=st.integers(1, 4),
    hedge=st.integers(1, 4),
)
def test_the_machines_kept_are_exactly_what_the_waiting_jobs_need(
    waiting: int, starting: int, jpm: int, hedge: int
) -> None:
    """After the stop, never more Starting machines than the waiting jobs need beyond the
    hedge, and never fewer than they need (nor than there were): no waiting job loses the
    machine it caused."""
    stop = surplus_starting(waiting=waiting, starting=starting, jobs_per_machine=jpm, hedge=hedge)
    kept = starting - stop
    needed = math.ceil(waiting / jpm) * hedge
    assert 0 <= stop <= starting
    assert kept <= needed
    assert kept == min(starting, needed)


@given(
    waiting=st.integers(0, 40),
    starting=st.integers(0, 40),
    alive=st.integers(0, 60),
    max_machines=st.integers(1, 60),
    jpm=st.integers(1, 4),
    hedge=st.integers(1, 4),
)
def test_what_is_stopped_is_never_launched_again(
    waiting: int, starting: int, alive: int, max_machines: int, jpm: int, hedge: int
) -> None:
    """Stopping the surplus never makes ``launches_needed`` launch for the same demand
    (no stop-then-launch loop), and launching what it asks never leaves a surplus."""
    stop = surplus_starting(waiting=waiting, starting=starting, jobs_per_machine=jpm, hedge=hedge)
    kw = {"waiting": waiting, "max_machines": max_machines, "jobs_per_machine": jpm}
    if stop:
        assert launches_needed(starting=starting - stop, alive=alive, hedge=hedge, **kw) == 0
    n = launches_needed(starting=starting, alive=alive, hedge=hedge, **kw)
    if n:
        after = surplus_starting(
            waiting=waiting, starting=starting + n, jobs_per_machine=jpm, hedge=hedge
        )
        assert after == 0
