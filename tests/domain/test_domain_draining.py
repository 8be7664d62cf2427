"""A machine's draining (``MachineDraining``) is a fact of the log: the fold keeps it on the
machine (for a resumed run's pool, ``replay`` and the live view), old logs fold without it."""

from __future__ import annotations

from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy as policy
from conjure_actors.domain.describe import describe, machine_status
from conjure_actors.domain.state import M_READY, M_STOPPING, Machine, State, apply, initial_state


def _ready(kind: str = "runcomfy") -> State:
    state = initial_state()
    state.machines["s-1"] = Machine("s-1", kind=kind, status=M_READY, leases=["j2"])
    return state


def test_draining_is_folded_onto_the_machine() -> None:
    """After ``MachineDraining`` the machine says why it drains; nothing else changes."""
    state = _ready()
    apply(state, ev.MachineDraining(server_id="s-1", reason="reattach_given_up", at=5.0))
    m = state.machines["s-1"]
    assert m.draining == "reattach_given_up"
    assert (m.status, m.leases) == (M_READY, ["j2"])
    assert state.anomaly_count == 0


def test_a_machine_of_an_old_log_does_not_drain() -> None:
    """A log written before the event folds machines that do not drain (the default)."""
    assert Machine("s-1").draining is None


def test_draining_after_the_machine_went_is_an_anomaly_that_changes_nothing() -> None:
    """The fold stays total: draining a stopped machine is recorded as an anomaly."""
    state = _ready()
    state.machines["s-1"].status = "stopped"
    apply(state, ev.MachineDraining(server_id="s-1", reason="reattach_given_up", at=5.0))
    assert state.machines["s-1"].draining is None
    assert state.anomaly_count == 1


def test_the_pool_drains_a_runcomfy_machine_once() -> None:
    """Decided for a RunComfy machine alive and not draining yet; not again, not for one
    stopping, nor for an attached ComfyUI (not ours to stop)."""
    state = _ready()
    drain = policy.drain_machine(state, "s-1", reason="reattach_given_up", at=5.0)
    assert drain == ev.MachineDraining(server_id="s-1", reason="reattach_given_up", at=5.0)
    apply(state, drain)
    assert policy.drain_machine(state, "s-1", reason="reattach_given_up", at=6.0) is None
    stopping = _ready()
    stopping.machines["s-1"].status = M_STOPPING
    assert policy.drain_machine(stopping, "s-1", reason="reattach_given_up", at=5.0) is None
    attached = _ready(kind="comfyui")
    assert policy.drain_machine(attached, "s-1", reason="reattach_given_up", at=5.0) is None
    assert policy.drain_machine(state, "nope", reason="reattach_given_up", at=5.0) is None


def test_a_draining_machine_is_shown_draining_with_its_reason() -> None:
    """``replay`` shows ``ready, draining (reason)``; once stopping or stopped, its status."""
    state = _ready()
    apply(state, ev.MachineDraining(server_id="s-1", reason="reattach_given_up", at=5.0))
    m = state.machines["s-1"]
    assert machine_status(m) == "ready, draining (reattach_given_up)"
    m.status = M_STOPPING
    assert machine_status(m) == "stopping"
    event = ev.MachineDraining(server_id="s-1", reason="reattach_given_up", at=5.0)
    subject, summary = describe(event)
    assert subject == "machine s-1"
    assert summary.startswith("draining (reattach_given_up)")
