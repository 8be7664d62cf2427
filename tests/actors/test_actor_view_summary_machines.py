"""The run's summary counts as "used" only machines that ran a job: a hedge spare or a
launch stopped while Starting is launched, not used (``run --jobs 2`` said "2 used" of two
machines, one of which ran nothing)."""

from __future__ import annotations

from conjure_actors.actors.view import machines_line, summarize
from conjure_actors.domain import state as st


def _state(served: list[int]) -> st.State:
    state = st.initial_state()
    for k, jobs in enumerate(served):
        state.machines[f"s-{k}"] = st.Machine(f"s-{k}", status=st.M_STOPPED, jobs_served=jobs)
    return state


def test_every_machine_ran_a_job_all_used() -> None:
    """Two machines, each ran a job: ``2 used``."""
    assert machines_line(summarize(_state([1, 3])), "simulated") == "machines: 2 used (simulated)"


def test_a_machine_that_ran_nothing_is_not_used() -> None:
    """Two machines, one ran nothing: ``2 (1 ran jobs; ...)``."""
    line = machines_line(summarize(_state([1, 0])), "runcomfy")
    assert line == "machines: 2 (1 ran jobs; runcomfy)"


def test_no_machine() -> None:
    """None launched: ``0 used``."""
    assert machines_line(summarize(_state([])), "simulated") == "machines: 0 used (simulated)"
