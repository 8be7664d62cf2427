"""Approvals in flight: what the CostActor approved but the pool has not logged yet counts."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from conjure_actors.domain import cost_policy
from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import Reservation
from conjure_actors.domain.state import State, apply, initial_state

LEASE = 100_000  # micros: one lease of the server type every ask is for


def _request(state: State, key: str) -> None:
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


@example(leases=1, extra=LEASE // 2, already=0, steps=["ask", "ask"])  # the race itself
@given(
    leases=st.integers(min_value=0, max_value=3),
    extra=st.integers(min_value=0, max_value=LEASE - 1),
    already=st.integers(min_value=0, max_value=3),
    steps=st.lists(st.sampled_from(["ask", "ask", "log", "unused"]), max_size=30),
)
def test_approved_plus_committed_never_exceeds_the_limit(
    leases: int, extra: int, already: int, steps: list[str]
) -> None:
    """Any sequence of asks, logged launches and unused approvals stays within the limit."""
    limit = leases * LEASE + extra
    state = initial_state()
    apply(state, ev.BudgetSet(limit_micros=limit, at=0.0))
    for i in range(already):
        _request(state, f"old-{i}")
    reservations: list[Reservation] = []
    seen = cost_policy.request_keys(state)
    logged = 0
    for n, step in enumerate(steps):
        reserved = cost_policy.reserved_micros(reservations)
        if step == "ask":
            refused = cost_policy.check_launch(
                state,
                f"job-{n}",
                estimate=LEASE,
                lease_micros=LEASE,
                now=0.0,
                at=0.0,
                reserved=reserved,
            )
            if refused is None:
                reservations.append(Reservation(f"job-{n}", LEASE, expires_at=60.0))
            else:
                assert refused.remaining_micros < LEASE
        elif step == "log" and reservations:
            _request(state, f"new-{logged}")
            logged += 1
        elif step == "unused" and reservations:
            reservations.pop()
        keys = cost_policy.request_keys(state)  # the CostActor's look before its next answer
        reservations = cost_policy.settle_reservations(
            reservations, new_launches=len(keys - seen), now=0.0
        )
        seen = keys
        committed = cost_policy.committed_micros(state, 0.0, lease_micros=LEASE)
        pending = cost_policy.reserved_micros(reservations)
        if committed > limit:  # only what was there before any ask can be over
            assert already * LEASE > limit
            assert (pending, logged) == (0, 0)
        else:
            assert committed + pending <= limit


@given(
    ttl=st.floats(min_value=0.0, max_value=120.0),
    now=st.floats(min_value=0.0, max_value=120.0),
    n=st.integers(min_value=0, max_value=5),
    used=st.integers(min_value=0, max_value=7),
)
def test_settling_drops_the_used_oldest_first_and_the_expired(
    ttl: float, now: float, n: int, used: int
) -> None:
    """Each new launch uses the oldest approval; an approval expired at ``now`` is gone."""
    pending = [Reservation(f"j{i}", LEASE, expires_at=ttl + i) for i in range(n)]
    left = cost_policy.settle_reservations(pending, new_launches=used, now=now)
    assert left == [r for r in pending[used:] if r.expires_at > now]


def test_a_refusal_counts_the_reserved_as_committed() -> None:
    """The remaining budget a refusal reports excludes the approvals in flight."""
    state = initial_state()
    apply(state, ev.BudgetSet(limit_micros=3 * LEASE, at=0.0))
    refused = cost_policy.check_launch(
        state, "j", estimate=2 * LEASE, lease_micros=LEASE, now=0.0, at=0.0, reserved=2 * LEASE
    )
    assert refused is not None
    assert refused.remaining_micros == LEASE
    assert (
        cost_policy.check_launch(
            state, "j", estimate=LEASE, lease_micros=LEASE, now=0.0, at=0.0, reserved=2 * LEASE
        )
        is None
    )
