"""The pool and cost policies (pure functions)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.actors.policy import (
    Backoff,
    Billable,
    BudgetLevel,
    MachineView,
    budget_level,
    committed_micros,
    idle_expired,
    launch_allowed,
    launches_needed,
    pick_machine,
    priority_order,
    renewed_duration,
    should_renew,
    spent_micros,
)
from conjure_actors.domain.prices import machine_cost_micros


def _m(
    sid: str,
    *,
    ready: bool = True,
    healthy: bool = True,
    version: str | None = "v1",
    leases: int = 0,
    stopping: bool = False,
) -> MachineView:
    return MachineView(sid, ready, healthy, version, leases, stopping)


def test_pick_prefers_ready_machine_of_same_version() -> None:
    """A Ready healthy machine of the job's workflow version is reused."""
    machines = [_m("a", version="v2"), _m("b", ready=False), _m("c")]
    assert pick_machine(machines, "v1", 1) == "c"


def test_pick_skips_full_unhealthy_and_stopping() -> None:
    """Full, unhealthy and stopping machines are never picked."""
    machines = [_m("a", leases=1), _m("b", healthy=False), _m("c", stopping=True)]
    assert pick_machine(machines, "v1", 1) is None


def test_pick_least_loaded_first() -> None:
    """With several jobs per machine, the least loaded machine is picked."""
    machines = [_m("a", leases=2), _m("b", leases=1)]
    assert pick_machine(machines, "v1", 3) == "b"


def test_pick_only_server_restricts_choice() -> None:
    """Recovery re-attaching a prompt gets that machine or nothing."""
    machines = [_m("a"), _m("b")]
    assert pick_machine(machines, "v1", 1, only_server="b") == "b"
    assert pick_machine([_m("a")], "v1", 1, only_server="b") is None


@given(
    waiting=st.integers(0, 50),
    starting=st.integers(0, 10),
    alive=st.integers(0, 10),
    max_machines=st.integers(1, 10),
    per=st.integers(1, 4),
)
def test_launches_never_exceed_cap_or_demand(
    waiting: int, starting: int, alive: int, max_machines: int, per: int
) -> None:
    """Launches never push past max_machines nor exceed the unmet demand."""
    alive = max(alive, starting)
    n = launches_needed(
        waiting=waiting,
        starting=starting,
        alive=alive,
        max_machines=max_machines,
        jobs_per_machine=per,
    )
    assert n >= 0
    assert alive + n <= max(alive, max_machines)
    assert (n + starting) * per < waiting + per or n == 0


def test_renew_only_when_work_remains_and_lease_short() -> None:
    """A lease is renewed near its end only while work remains."""
    assert should_renew(now=100, estimated_stopping_at=150, renew_margin=60, work_remains=True)
    assert not should_renew(now=100, estimated_stopping_at=150, renew_margin=60, work_remains=False)
    assert not should_renew(now=100, estimated_stopping_at=500, renew_margin=60, work_remains=True)


@given(st.floats(0, 10_000), st.floats(0, 10_000), st.floats(1, 3600))
def test_renewed_duration_covers_the_lease(ready: float, delta: float, lease: float) -> None:
    """The renewed duration keeps the machine at least ``lease`` seconds from now."""
    now = ready + delta
    d = renewed_duration(now=now, service_ready_at=ready, lease_seconds=lease)
    assert ready + d >= now + lease - 1e-6


def test_idle_expiry() -> None:
    """A machine idle for the timeout is expired; one never idle is not."""
    assert idle_expired(now=200, idle_since=80, idle_timeout=120)
    assert not idle_expired(now=199, idle_since=80, idle_timeout=120)
    assert not idle_expired(now=1e9, idle_since=None, idle_timeout=1)


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
    machines = [Billable(rate, ready, ready + lease) for rate, ready, lease in specs]
    total = spent_micros(machines, now) + committed_micros(machines, now)
    expected = sum(
        machine_cost_micros(
            m.rate_micros_per_hour,
            m.service_ready_at,
            max(min(now, m.estimated_stopping_at), m.estimated_stopping_at),
        )
        for m in machines
        if m.estimated_stopping_at is not None
    )
    assert total == expected


def test_launch_refused_when_estimate_crosses_limit() -> None:
    """A launch whose estimate would cross the budget is refused; no limit allows all."""
    assert launch_allowed(limit=1000, spent=400, committed=100, estimate=500)
    assert not launch_allowed(limit=1000, spent=400, committed=100, estimate=501)
    assert launch_allowed(limit=None, spent=10**12, committed=0, estimate=10**12)


def test_budget_levels() -> None:
    """Warn at 80%, exceeded at 100%."""
    assert budget_level(spent=799, limit=1000, warn_fraction=0.8) is BudgetLevel.OK
    assert budget_level(spent=800, limit=1000, warn_fraction=0.8) is BudgetLevel.WARN
    assert budget_level(spent=1000, limit=1000, warn_fraction=0.8) is BudgetLevel.EXCEEDED
    assert budget_level(spent=10**9, limit=None, warn_fraction=0.8) is BudgetLevel.OK


@given(st.integers(1, 20))
def test_backoff_is_monotone_and_capped(attempt: int) -> None:
    """Delays grow with the attempt number and never pass the cap."""
    b = Backoff(initial=1.0, factor=2.0, max_delay=30.0, max_attempts=5)
    assert b.delay(attempt) <= b.delay(attempt + 1) <= 30.0
    assert b.exhausted(5)
    assert not b.exhausted(4)


def test_priority_order_higher_first_then_fifo() -> None:
    """Higher priority first; ties in arrival order."""
    assert priority_order([(0, 1), (5, 2), (0, 0), (5, 3)]) == [1, 3, 2, 0]
