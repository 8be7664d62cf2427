"""``cost_policy.partial_renewal``: when a whole renewal of a busy machine does not fit the
budget, the most whole seconds that do (QA G13), and none for an idle machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_domain_cost_policy_due import NOW, _state

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import (
    MIN_PARTIAL_RENEWAL,
    committed_micros,
    partial_renewal,
    renewal_estimate,
    spent_micros,
)
from conjure_actors.domain.state import State, apply

LEASE = 600.0
RATE = 990_000


def _busy(state: State) -> State:
    apply(state, ev.MachineLeased(server_id="s0", job_id="j", at=NOW))
    return state


@given(before=st.integers(1, 500), left_lease=st.integers(1, 100), room=st.integers(0, 200_000))
def test_the_partial_renewal_is_the_most_that_fits(before: int, left_lease: int, room: int) -> None:
    base = _state([(RATE, float(before), float(left_lease))], limit=10**9)
    lease = 165_000
    used = spent_micros(base, NOW) + committed_micros(base, NOW, lease_micros=lease)
    state = _busy(_state([(RATE, float(before), float(left_lease))], limit=used + room))
    s = partial_renewal(state, "s0", seconds=LEASE, lease_micros=lease, now=NOW)
    if s == 0:
        assert (
            renewal_estimate(state, "s0", seconds=left_lease + MIN_PARTIAL_RENEWAL, now=NOW) > room
            or (left_lease + MIN_PARTIAL_RENEWAL >= LEASE)
            or renewal_estimate(state, "s0", seconds=LEASE, now=NOW) <= room
        )
        return
    assert left_lease + MIN_PARTIAL_RENEWAL <= s < LEASE
    assert renewal_estimate(state, "s0", seconds=s, now=NOW) <= room
    assert renewal_estimate(state, "s0", seconds=s + 1, now=NOW) > room or s + 1 >= LEASE


def test_an_idle_machine_gets_no_partial_renewal() -> None:
    state = _state([(RATE, 100.0, 30.0)], limit=10**9)
    lease = 165_000
    used = spent_micros(state, NOW) + committed_micros(state, NOW, lease_micros=lease)
    state = _state([(RATE, 100.0, 30.0)], limit=used + 50_000)
    assert partial_renewal(state, "s0", seconds=LEASE, lease_micros=lease, now=NOW) == 0
    assert partial_renewal(_busy(state), "s0", seconds=LEASE, lease_micros=lease, now=NOW) > 0
