"""``cost_policy.at_most_bills``: which bills are bounds, not exact (QA8 Q4: a machine a
resume found gone with no stop of it in the log was billed as exact)."""

from __future__ import annotations

from conjure_actors.domain import cost_policy
from conjure_actors.domain import state as st


def _gone(state: st.State, sid: str, *, stop_decided: float | None = None, **kw: object) -> None:
    """A machine lost while the run was down, billed to 1,100 s (Ready at 1,000 s, its
    lease to 1,600 s)."""
    state.machines[sid] = st.Machine(
        server_id=sid,
        status=st.M_STOPPED,
        service_ready_at=1000.0,
        estimated_stopping_at=1600.0,
        stop_requested_at=stop_decided,
        stopped_at=1100.0,
        lost_reason=st.LOST_WHILE_DOWN,
        **kw,  # type: ignore[arg-type]
    )


def test_a_machine_found_gone_with_no_stop_logged_is_billed_at_most() -> None:
    """No ``MachineStopping``: a bound (found gone before or after its lease's end); a stop
    decided and found gone before its lease's end (billed past the decision: the settle
    rule), a machine stopped with an answer and an attached one are exact."""
    state = st.initial_state()
    _gone(state, "unlogged")
    _gone(state, "settled", stop_decided=1090.0)
    _gone(state, "attached", kind="comfyui")
    state.machines["answered"] = st.Machine(
        server_id="answered", status=st.M_STOPPED, stop_requested_at=1090.0, stopped_at=1095.0
    )
    assert cost_policy.at_most_bills(state) == {"unlogged"}
    (u,) = cost_policy.unknown_ends(state)
    assert (u.server_id, u.billed_until, u.upto) == ("unlogged", 1100.0, "found_gone")
