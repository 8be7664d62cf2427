"""The run's summary of a run whose resume found gone a machine with its stop unanswered,
billed to its lease's end (``cost_policy.unanswered_stops``): its cost is "at most"."""

from __future__ import annotations

from conjure_actors.actors.view import summarize, summary_lines
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import LOST_WHILE_DOWN, State, apply, initial_state


def _resumed(*, stopped_at: float, billed_seconds: int, cost: int) -> State:
    """``s1`` Ready at 10 (lease to 556), its stop decided at 28; the resume found it gone
    and billed it to ``stopped_at``."""
    state = initial_state()
    for event in (
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="wv",
            estimated_duration=600,
            at=0.0,
        ),
        ev.MachineLaunched(request_key="k", server_id="s1", at=1.0),
        ev.MachineReady(
            server_id="s1",
            service_ready_at=10.0,
            estimated_stopping_at=556.0,
            rate_micros_per_hour=990_000,
            price_table_version="t",
            at=10.0,
        ),
        ev.MachineStopping(server_id="s1", reason="interrupted", at=28.0),
        ev.MachineLost(server_id="s1", reason=LOST_WHILE_DOWN, at=901.0),
        ev.MachineStopped(
            server_id="s1",
            stopped_at=stopped_at,
            billed_seconds=billed_seconds,
            cost_micros=cost,
            at=901.0,
        ),
    ):
        apply(state, event)
    return state


def _cost_line(state: State) -> str:
    lines = summary_lines(summarize(state), seconds=1.0, out_dir="out", log_path="r.log", mode="x")
    (line,) = [x for x in lines if x.startswith("cost:")]
    return line


def test_a_bill_to_the_lease_end_makes_the_runs_cost_at_most() -> None:
    """QA: "cost: $0.1540" for $0.005 spent; the figure is the most it can have cost."""
    state = _resumed(stopped_at=556.0, billed_seconds=546, cost=150_150)
    assert _cost_line(state) == "cost: at most $0.1502 (t)"


def test_a_bill_past_the_stop_is_the_runs_cost() -> None:
    """Gone before its lease's end, billed a settle time past its stop: no "at most"."""
    state = _resumed(stopped_at=58.0, billed_seconds=48, cost=13_200)
    assert _cost_line(state) == "cost: $0.0132 (t)"


def test_the_json_summary_and_the_costs_endpoint_flag_a_bill_at_most() -> None:
    """Machine-readable outputs carry the bound too (they gave the figure without it)."""
    from conjure_actors.actors.view import summary_record
    from conjure_actors.service.extras import costs_view

    bound = _resumed(stopped_at=556.0, billed_seconds=546, cost=150_150)
    exact = _resumed(stopped_at=58.0, billed_seconds=48, cost=13_200)
    record = summary_record(bound, None, seconds=1.0, out_dir="o", log_path="r.log", mode="x")
    assert record["cost"]["at_most"] is True
    record = summary_record(exact, None, seconds=1.0, out_dir="o", log_path="r.log", mode="x")
    assert record["cost"]["at_most"] is False
    view = costs_view(bound, 1000.0, lease_micros=0)
    assert view["ledger_at_most"] is True
    assert [m["cost_at_most"] for m in view["machines"]] == [True]
    assert costs_view(exact, 1000.0, lease_micros=0)["ledger_at_most"] is False
