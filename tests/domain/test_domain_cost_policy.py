"""The ledger's policies (pure functions of ``domain/cost_policy``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import (
    BudgetLevel,
    accruals,
    budget_events,
    budget_level,
    check_launch,
    check_renewal,
    committed_micros,
    launch_allowed,
    spent_micros,
)
from conjure_actors.domain.prices import machine_cost_micros
from conjure_actors.domain.state import State, apply, initial_state


def _ready(state: State, sid: str, rate: int, ready: float, end: float | None) -> None:
    apply(
        state,
        ev.MachineLaunchRequested(
            request_key=f"k-{sid}",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=600,
            at=0.0,
        ),
    )
    apply(state, ev.MachineLaunched(request_key=f"k-{sid}", server_id=sid, at=0.0))
    apply(
        state,
        ev.MachineReady(
            server_id=sid,
            service_ready_at=ready,
            estimated_stopping_at=end,
            rate_micros_per_hour=rate,
            price_table_version="t",
            at=ready,
        ),
    )


@given(
    st.lists(
        st.tuples(st.integers(1, 10_000_000), st.floats(0, 1e5), st.floats(0, 1e5)), max_size=5
    ),
    st.floats(0, 2e5),
)
def test_spent_plus_committed_is_cost_to_lease_end(
    specs: list[tuple[int, float, float]], now: float
) -> None:
    """Spent so far plus the commitment equals each machine's cost to its lease end."""
    state = initial_state()
    for i, (rate, ready, lease) in enumerate(specs):
        _ready(state, f"s{i}", rate, ready, ready + lease)
    total = spent_micros(state, now) + committed_micros(state, now, lease_micros=0)
    expected = sum(
        machine_cost_micros(rate, ready, max(min(now, ready + lease), ready + lease))
        for rate, ready, lease in specs
    )
    assert total == expected


def test_committed_counts_one_lease_per_machine_starting_or_launching() -> None:
    """A launch intent and a Starting machine each commit one lease."""
    state = initial_state()
    apply(
        state,
        ev.MachineLaunchRequested(
            request_key="a",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=600,
            at=0.0,
        ),
    )
    apply(
        state,
        ev.MachineLaunchRequested(
            request_key="b",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=600,
            at=0.0,
        ),
    )
    apply(state, ev.MachineLaunched(request_key="b", server_id="s", at=0.0))
    assert committed_micros(state, 10.0, lease_micros=7) == 14


def test_launch_refused_when_estimate_crosses_limit() -> None:
    """A launch whose estimate would cross the budget is refused; no limit allows all."""
    assert launch_allowed(limit=1000, spent=400, committed=100, estimate=500)
    assert not launch_allowed(limit=1000, spent=400, committed=100, estimate=501)
    assert launch_allowed(limit=None, spent=10**12, committed=0, estimate=10**12)


def test_check_launch_logs_the_refusal_with_what_remains() -> None:
    """Over the limit the decision is a ``LaunchRefused`` saying what remains."""
    state = initial_state()
    apply(state, ev.BudgetSet(limit_micros=1000, at=0.0))
    assert check_launch(state, "j", estimate=1000, lease_micros=0, now=0, at=0) is None
    refused = check_launch(state, "j", estimate=1001, lease_micros=0, now=0, at=1.0)
    assert refused == ev.LaunchRefused(
        job_id="j", estimate_micros=1001, remaining_micros=1000, at=1.0
    )


def test_budget_levels() -> None:
    """Warn at the warning fraction, exceeded at 100%."""
    assert budget_level(spent=799, limit=1000, warn_fraction=0.8) is BudgetLevel.OK
    assert budget_level(spent=800, limit=1000, warn_fraction=0.8) is BudgetLevel.WARN
    assert budget_level(spent=500, limit=1000, warn_fraction=0.5) is BudgetLevel.WARN
    assert budget_level(spent=1000, limit=1000, warn_fraction=0.8) is BudgetLevel.EXCEEDED
    assert budget_level(spent=10**9, limit=None, warn_fraction=0.8) is BudgetLevel.OK


def test_budget_events_use_the_configured_warning_fraction_once() -> None:
    """``warn_fraction`` decides the warning; each budget event is due once."""
    state = initial_state()
    apply(state, ev.BudgetSet(limit_micros=3_600_000, at=0.0))
    _ready(state, "s", 3_600_000, 0.0, None)  # 1 µ$ per second... x1000: 1000 µ$/s
    assert budget_events(state, now=1000.0, warn_fraction=0.5, at=1.0) == []
    due = budget_events(state, now=1800.0, warn_fraction=0.5, at=2.0)
    assert [type(e) for e in due] == [ev.BudgetWarning]
    for e in due:
        apply(state, e)
    assert budget_events(state, now=1900.0, warn_fraction=0.5, at=3.0) == []
    due = budget_events(state, now=3600.0, warn_fraction=0.5, at=4.0)
    assert [type(e) for e in due] == [ev.BudgetExceeded]


def test_accruals_are_cumulative_and_stop_at_the_lease_end() -> None:
    """An accrual is the machine's cost so far, never past its lease's end."""
    state = initial_state()
    _ready(state, "s", 3_600_000, 100.0, 160.0)
    (a,) = accruals(state, now=130.0, at=130.0)
    assert (a.amount_micros, a.until) == (30_000, 130.0)
    apply(state, a)
    (b,) = accruals(state, now=500.0, at=500.0)
    assert (b.amount_micros, b.until) == (60_000, 160.0)
    apply(state, b)
    assert accruals(state, now=600.0, at=600.0) == []


def test_a_renewal_is_judged_on_the_time_it_adds_past_the_lease_end() -> None:
    """$3.60/h (1000 micro-USD a second), Ready at 0, lease to 60, renewed at 40 to run 60
    s more: it adds 40 s (the 20 s left are committed already), not a whole lease."""
    state = initial_state()
    _ready(state, "s1", 3_600_000, 0.0, 60.0)
    apply(state, ev.BudgetSet(limit_micros=100_000, at=0.0))  # 40 spent + 20 committed
    kwargs = {"seconds": 60.0, "lease_micros": 60_000, "now": 40.0}
    assert check_renewal(state, "s1", **kwargs)  # 40 + 20 + 40 = 100: fits
    apply(state, ev.BudgetSet(limit_micros=99_999, at=0.0))
    assert not check_renewal(state, "s1", **kwargs)
