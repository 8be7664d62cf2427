"""The bill of a machine whose stop was in flight when the run went down (``MachineStopping``
logged, no answer) and that the resume found gone (``machines_policy.gone_at`` with
``stop_in_flight``; ``cost_policy.unanswered_stops`` and its line)."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import unanswered_stop_line, unanswered_stops
from conjure_actors.domain.machines_policy import STOP_SETTLE, gone_at, lost_bill
from conjure_actors.domain.prices import default_price_table, format_usd, machine_cost_micros
from conjure_actors.domain.state import LOST_WHILE_DOWN, Machine, State, apply, initial_state

TABLE = default_price_table()
RATE = TABLE.rate("medium")


def _stopping(*, ready: float | None, decided: float, lease_end: float | None) -> State:
    """A state whose machine ``s`` (launched 60 s before ``ready``, or at 0 never seen
    Ready, with a 600 s launch duration) has its stop decided at ``decided``, unanswered."""
    state = initial_state()
    state.machines["s"] = Machine(
        server_id="s",
        status="stopping",
        server_type="medium",
        launched_at=0.0 if ready is None else ready - 60.0,
        launch_duration=600,
        service_ready_at=ready,
        estimated_stopping_at=lease_end,
        rate_micros_per_hour=RATE if ready is not None else 0,
        price_table_version=TABLE.version if ready is not None else "",
        stop_requested_at=decided,
    )
    return state


def _lose(state: State, found_gone: float) -> ev.MachineStopped:
    """What the resume logs for ``s`` found gone at ``found_gone`` (its loss, its bill)."""
    m = state.machines["s"]
    end = gone_at(m, found_gone, stop_in_flight=True)
    bill = lost_bill(state, "s", gone_at=end, lease_seconds=600.0, table=TABLE, at=found_gone)
    apply(state, ev.MachineLost(server_id="s", reason=LOST_WHILE_DOWN, at=found_gone))
    apply(state, bill)
    return bill


def test_found_gone_before_its_lease_end_it_is_billed_past_the_decision() -> None:
    """Found gone before its lease's end, it was stopped by its DELETE, whose answer (where
    billing ends) came after the decision: billed STOP_SETTLE past it, not to it (that was
    under the cloud's bill by the answer's wait: 3 s where the simulator billed 4 s), nor
    to the resume (minutes of a run that was down)."""
    m = _stopping(ready=100.0, decided=300.0, lease_end=1000.0).machines["s"]
    assert gone_at(m, 900.0, stop_in_flight=True) == 300.0 + STOP_SETTLE
    assert gone_at(m, 310.0, stop_in_flight=True) == 310.0  # found gone sooner than that


def test_never_seen_ready_its_lease_ends_at_the_earliest_a_launch_duration_after_launch() -> None:
    """Stopped while Starting: before its launch's duration has passed it was stopped by its
    DELETE (billed from the launch to STOP_SETTLE past the decision, at most); after, it
    may have become Ready and run its lease: billed the lease, as any machine lost unseen."""
    state = _stopping(ready=None, decided=100.0, lease_end=None)
    assert gone_at(state.machines["s"], 200.0, stop_in_flight=True) == 100.0 + STOP_SETTLE
    assert gone_at(state.machines["s"], 700.0, stop_in_flight=True) == 700.0
    assert _lose(state, 700.0).billed_seconds == 600


@given(
    ready=st.floats(0.0, 1e6),
    to_decision=st.floats(0.0, 4000.0),
    lease=st.floats(60.0, 3600.0),
    answered_after=st.none() | st.floats(0.0, STOP_SETTLE),
    found_after=st.floats(0.0, 7200.0),
)
def test_the_bill_is_between_the_clouds_and_the_lease_end_or_the_resume(
    ready: float,
    to_decision: float,
    lease: float,
    answered_after: float | None,
    found_after: float,
) -> None:
    """Whenever the stop's DELETE took (answered within STOP_SETTLE of the decision), or
    never left (the machine ran to its lease's end), the bill of the machine the resume
    finds gone is never below what the cloud billed, and never above its bill to its
    lease's end or to when it was found gone, whichever came first."""
    lease_end = ready + lease
    decided = ready + to_decision
    assume(decided < lease_end)
    went = lease_end if answered_after is None else min(decided + answered_after, lease_end)
    found_gone = went + found_after  # (a DELETE that never left: listed until its lease end)
    state = _stopping(ready=ready, decided=decided, lease_end=lease_end)
    bill = _lose(state, found_gone)
    cloud = machine_cost_micros(RATE, ready, went)
    most = machine_cost_micros(RATE, ready, min(lease_end, found_gone))
    assert cloud <= bill.cost_micros <= most


def test_a_bill_to_the_lease_end_says_it_is_the_most_and_what_it_most_likely_cost() -> None:
    """Found gone after its lease's end (QA: 546 s billed, the cloud's 18 s): the line says
    the bill is the most it can have cost, why, what it cost at the decision, and that
    RunComfy's bill is the exact one."""
    state = _stopping(ready=100.0, decided=118.0, lease_end=646.0)
    bill = _lose(state, 5000.0)
    assert bill.billed_seconds == 546
    (u,) = unanswered_stops(state)
    assert (u.upto, u.cost_micros, u.billed_until) == ("lease_end", bill.cost_micros, 646.0)
    line = unanswered_stop_line(u, now=5000.0)
    assert line.startswith("machine s: its stop, decided at 00:01:58 UTC, was not answered")
    assert f"billed at most {format_usd(bill.cost_micros)}, to its lease's end" in line
    assert f"if it did, about {format_usd(machine_cost_micros(RATE, 100.0, 118.0))}" in line
    assert line.endswith("; RunComfy's bill is exact")


def test_a_bill_past_the_decision_says_the_delete_stopped_it() -> None:
    """Found gone before its lease's end: billed STOP_SETTLE past the decision, and said so."""
    state = _stopping(ready=100.0, decided=118.0, lease_end=646.0)
    _lose(state, 400.0)
    (u,) = unanswered_stops(state)
    assert (u.upto, u.billed_until) == ("settle", 118.0 + STOP_SETTLE)
    assert "to 30 s after that decision" in unanswered_stop_line(u, now=400.0)


def test_a_machine_lost_otherwise_is_not_an_unanswered_stop() -> None:
    """A machine lost while Ready (no stop decided) is not told as a stop in flight."""
    state = _stopping(ready=100.0, decided=118.0, lease_end=646.0)
    state.machines["s"].status = "ready"
    state.machines["s"].stop_requested_at = None
    _lose(state, 400.0)
    assert unanswered_stops(state) == []
