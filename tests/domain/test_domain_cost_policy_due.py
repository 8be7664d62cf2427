"""When the budget's next event falls due (``cost_policy.budget_due_at``: the CostActor's
timer waits for it) and when a waiting job is no longer leased a machine
(``cost_policy.lease_refused``)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from test_domain_cost_policy import _ready  # a machine Ready at a rate, until a lease end

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import (
    DUE_HORIZON,
    DUE_PRECISION,
    budget_due_at,
    budget_events,
    lease_refused,
    spent_micros,
)
from conjure_actors.domain.state import State, apply, initial_state

NOW = 1_000.0
WARN = 0.8


def _state(specs: list[tuple[int, float, float | None]], limit: int) -> State:
    """Machines Ready (rate, seconds before NOW, lease seconds after NOW or None) under
    a budget of ``limit`` micro-USD."""
    state = initial_state()
    for i, (rate, before, lease) in enumerate(specs):
        _ready(state, f"s{i}", rate, NOW - before, None if lease is None else NOW + lease)
    apply(state, ev.BudgetSet(limit_micros=limit, at=NOW))
    return state


def _due(state: State) -> list[str]:
    return [type(e).__name__ for e in budget_events(state, now=NOW, warn_fraction=WARN, at=NOW)]


def _due_at(state: State, t: float) -> list[str]:
    return [type(e).__name__ for e in budget_events(state, now=t, warn_fraction=WARN, at=t)]


_SPECS = st.lists(
    st.tuples(
        st.integers(1, 20_000_000),
        st.floats(0, 3600),
        st.one_of(st.none(), st.floats(0, 7200)),
    ),
    min_size=1,
    max_size=4,
)


@given(_SPECS, st.integers(0, 2_000_000), st.booleans())
def test_the_next_budget_event_is_due_at_the_spends_own_crossing(
    specs: list[tuple[int, float, float | None]], limit: int, warned: bool
) -> None:
    """The event due next (the warning, once warned the excess) falls due at the moment
    ``budget_due_at`` says, and not ``DUE_PRECISION`` before it; ``None``: not within the
    horizon (the leases end first)."""
    state = _state(specs, limit)
    if warned:
        apply(state, ev.BudgetWarning(spent_micros=0, limit_micros=limit, at=NOW))
    expected = "BudgetExceeded" if warned else "BudgetWarning"
    at = budget_due_at(state, now=NOW, warn_fraction=WARN)
    if at is None:
        assert _due_at(state, NOW + DUE_HORIZON) == []
        return
    assert at >= NOW
    assert expected in _due_at(state, at)
    if at > NOW:
        assert _due_at(state, max(NOW, at - DUE_PRECISION)) == []


@given(_SPECS, st.integers(1, 2_000_000))
def test_the_warning_is_due_before_the_excess(
    specs: list[tuple[int, float, float | None]], limit: int
) -> None:
    """Not yet warned: what falls due first is the warning, at its own crossing, never
    after the excess's (both at once only when one billed second crosses both)."""
    state = _state(specs, limit)
    warn_at = budget_due_at(state, now=NOW, warn_fraction=WARN)
    apply(state, ev.BudgetWarning(spent_micros=0, limit_micros=limit, at=NOW))
    excess_at = budget_due_at(state, now=NOW, warn_fraction=WARN)
    if excess_at is not None:
        assert warn_at is not None
        assert warn_at <= excess_at


@given(_SPECS, st.integers(1, 2_000_000), st.floats(0, 600))
def test_the_spend_at_a_stop_exceeds_the_limit_by_at_most_the_stops_latency(
    specs: list[tuple[int, float, float | None]], limit: int, latency: float
) -> None:
    """Every machine stopped ``latency`` seconds after the excess falls due: the spend is
    over the limit by at most what the machines bill in that latency plus one billed second
    each (the billing rule bills whole seconds, so the crossing's second is billed whole)."""
    state = _state(specs, limit)
    apply(state, ev.BudgetWarning(spent_micros=0, limit_micros=limit, at=NOW))
    at = budget_due_at(state, now=NOW, warn_fraction=WARN)
    if at is None or at == NOW:
        return  # never, or already over before anything was planned
    over = spent_micros(state, at + latency) - limit
    slack = sum(math.ceil(rate * (latency + 1 + DUE_PRECISION) / 3600) for rate, _, _ in specs)
    assert over <= slack


def test_nothing_is_due_without_a_limit_or_once_exceeded() -> None:
    """No limit, or the excess already logged: no budget event is planned."""
    state = initial_state()
    _ready(state, "s", 990_000, NOW, None)
    assert budget_due_at(state, now=NOW, warn_fraction=WARN) is None
    apply(state, ev.BudgetSet(limit_micros=10, at=NOW))
    apply(state, ev.BudgetExceeded(spent_micros=10, limit_micros=10, at=NOW))
    assert budget_due_at(state, now=NOW + 60, warn_fraction=WARN) is None


def test_a_crossing_already_past_is_due_now() -> None:
    """The spend already over the warning (a machine seen Ready late): due at once."""
    state = _state([(3_600_000, 100.0, None)], 100)  # $1/s for 100 s: 100_000 > 100
    assert _due(state) == ["BudgetWarning", "BudgetExceeded"]
    assert budget_due_at(state, now=NOW, warn_fraction=WARN) == NOW


def test_a_waiting_job_is_refused_a_lease_once_the_spend_reaches_the_limit() -> None:
    """Before the limit, a lease (in a paid lease) is not refused; at it, it is, even
    before the excess is logged; once logged, too; without a limit, never."""
    state = _state([(3_600_000, 0.0, None)], 10_000)  # 1_000 micro-USD a second
    assert not lease_refused(state, now=NOW + 9.0)  # 9 s billed
    assert lease_refused(state, now=NOW + 9.5)  # 10 s billed (whole seconds): the limit
    apply(state, ev.BudgetExceeded(spent_micros=10_000, limit_micros=10_000, at=NOW + 10))
    assert lease_refused(state, now=NOW + 10.0)
    apply(state, ev.BudgetSet(limit_micros=None, at=NOW + 11))
    assert not lease_refused(state, now=NOW + 20.0)
