"""A machine adopted after a restart keeps the idle time the log gave it: its idle timeout
counts from its last release, not from the restart (each restart of a crash-looping service
would otherwise keep an idle machine billing one more idle timeout)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.state import M_READY, Machine, State, apply, initial_state


def _adopt(state: State, at: float) -> None:
    apply(
        state,
        ev.MachineAdopted(
            server_id="s-1",
            server_type="medium",
            status="Ready",
            service_ready_at=10.0,
            estimated_stopping_at=3600.0,
            rate_micros_per_hour=1_000_000,
            price_table_version="t1",
            at=at,
        ),
    )


def test_a_machine_idle_in_the_log_stays_idle_since_its_release() -> None:
    """Released at 100, adopted at 160: idle since 100."""
    state = initial_state()
    state.machines["s-1"] = Machine("s-1", status=M_READY, leases=[], idle_since=100.0)
    _adopt(state, at=160.0)
    assert state.machines["s-1"].idle_since == 100.0


def test_a_machine_busy_in_the_log_is_idle_from_its_adoption() -> None:
    """Its jobs' leases went with the crash: idle (for the pool) from the adoption on."""
    state = initial_state()
    state.machines["s-1"] = Machine("s-1", status=M_READY, leases=["j1"], idle_since=None)
    _adopt(state, at=160.0)
    assert state.machines["s-1"].idle_since == 160.0


def test_a_machine_unknown_to_the_log_is_idle_from_its_adoption() -> None:
    """Found by the listing alone (a launch whose answer the log lacks)."""
    state = initial_state()
    _adopt(state, at=160.0)
    assert state.machines["s-1"].idle_since == 160.0


@given(released=st.floats(0, 1e9), adopted=st.floats(0, 1e9))
def test_an_adopted_machine_is_idle_since_the_earlier_of_release_and_adoption(
    released: float, adopted: float
) -> None:
    """Whatever the clocks say, idle since no later than the adoption and no earlier than
    the release."""
    state = initial_state()
    state.machines["s-1"] = Machine("s-1", status=M_READY, leases=[], idle_since=released)
    _adopt(state, at=adopted)
    assert state.machines["s-1"].idle_since == min(released, adopted)
