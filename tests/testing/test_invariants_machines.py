"""check_machines matches each machine the runtime does not hold to an open launch intent
one-to-one, by the marker the intent asked for, not by count."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from conjure_actors.domain.state import LaunchRequest
from conjure_actors.testing import invariants as inv


def _h(intents: list[LaunchRequest], machines: dict[str, tuple[str, str, int]]) -> Any:
    sims = {
        sid: SimpleNamespace(server_type=t, workflow_version_id=v, estimated_duration=d)
        for sid, (t, v, d) in machines.items()
    }
    return SimpleNamespace(
        running=True,
        state=SimpleNamespace(machines={}, launch_requests={r.request_key: r for r in intents}),
        cloud=SimpleNamespace(runcomfy=SimpleNamespace(_machines=sims), running=lambda: list(sims)),
    )


def _intent(key: str, duration: int) -> LaunchRequest:
    return LaunchRequest(key, "medium", "v1", duration, 1, 0.0)


def test_a_machine_no_open_intent_asked_for_is_flagged_though_an_intent_is_open() -> None:
    """Before: one unknown machine and one open intent passed (by count), though the
    machine does not echo the intent's estimated_duration (not that launch's machine)."""
    h = _h([_intent("k1", 3601)], {"s1": ("medium", "v1", 7200)})
    assert inv.check_machines(h) != []


def test_two_machines_cannot_both_be_one_intents() -> None:
    h = _h(
        [_intent("k1", 3601), _intent("k2", 3602)],
        {"s1": ("medium", "v1", 3601), "s2": ("medium", "v1", 3601)},
    )
    (problem,) = inv.check_machines(h)
    assert "1 machine(s)" in problem


def test_each_machine_matched_to_its_own_intent_passes() -> None:
    h = _h(
        [_intent("k1", 3601), _intent("k2", 3602)],
        {"s1": ("medium", "v1", 3602), "s2": ("medium", "v1", 3601)},
    )
    assert inv.check_machines(h) == []
