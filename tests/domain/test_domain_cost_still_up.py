"""A machine whose stop's 200 showed it still up (``MachineStopped.still_up``: the DELETE
did not take) bills on until it goes: the budget's spend and commitment count it as a
running machine (to now, and the rest of its lease), not at the bill to that 200."""

from __future__ import annotations

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import committed_micros, spent_micros
from conjure_actors.domain.prices import cost_micros, machine_cost_micros
from conjure_actors.domain.state import State, apply, initial_state

RATE = 990_000


def _stopped_still_up(*, ready: float, end: float, stopped: float) -> State:
    state = initial_state()
    apply(
        state,
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=int(end - ready),
            at=0.0,
        ),
    )
    apply(state, ev.MachineLaunched(request_key="k", server_id="s", at=0.0))
    apply(
        state,
        ev.MachineReady(
            server_id="s",
            service_ready_at=ready,
            estimated_stopping_at=end,
            rate_micros_per_hour=RATE,
            price_table_version="t",
            at=ready,
        ),
    )
    apply(state, ev.MachineStopping(server_id="s", reason="idle", at=stopped))
    seconds = int(stopped - ready)
    apply(
        state,
        ev.MachineStopped(
            server_id="s",
            stopped_at=stopped,
            billed_seconds=seconds,
            cost_micros=cost_micros(RATE, seconds),
            still_up=True,
            at=stopped,
        ),
    )
    return state


def test_the_spend_counts_a_machine_whose_stop_did_not_take_up_to_now() -> None:
    state = _stopped_still_up(ready=0.0, end=1800.0, stopped=100.0)
    assert spent_micros(state, 600.0) == machine_cost_micros(RATE, 0.0, 600.0)
    assert spent_micros(state, 5000.0) == machine_cost_micros(RATE, 0.0, 1800.0)


def test_the_commitment_counts_the_rest_of_its_lease() -> None:
    state = _stopped_still_up(ready=0.0, end=1800.0, stopped=100.0)
    assert committed_micros(state, 600.0, lease_micros=0) == machine_cost_micros(
        RATE, 0.0, 1800.0
    ) - machine_cost_micros(RATE, 0.0, 600.0)
