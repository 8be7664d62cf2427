"""``cost_policy.starting_over_budget``: after a change of the budget, the machines still
Starting whose first lease it no longer covers, the newest first, only as many as needed
(QA G15)."""

from __future__ import annotations

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import starting_over_budget
from conjure_actors.domain.state import State, apply, initial_state

NOW = 1_000.0
LEASE = 165_000


def _starting(n: int, limit: int | None) -> State:
    state = initial_state()
    for i in range(n):
        key = f"k{i}"
        apply(
            state,
            ev.MachineLaunchRequested(
                request_key=key,
                server_type="medium",
                workflow_version="v1",
                estimated_duration=600,
                at=0.0,
            ),
        )
        apply(state, ev.MachineLaunched(request_key=key, server_id=f"s{i}", at=0.0))
    apply(state, ev.BudgetSet(limit_micros=limit, at=NOW))
    return state


def test_only_the_starting_machines_the_budget_no_longer_covers_are_stopped() -> None:
    assert starting_over_budget(_starting(3, 3 * LEASE), lease_micros=LEASE, now=NOW) == []
    two = starting_over_budget(_starting(3, 2 * LEASE), lease_micros=LEASE, now=NOW)
    assert two == ["s2"]
    assert starting_over_budget(_starting(3, LEASE - 1), lease_micros=LEASE, now=NOW) == [
        "s2",
        "s1",
        "s0",
    ]
    assert starting_over_budget(_starting(3, None), lease_micros=LEASE, now=NOW) == []
