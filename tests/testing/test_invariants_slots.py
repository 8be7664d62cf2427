"""check_slots: no machine ever had more of our prompts in ComfyUI at once than its jobs
limit, folded from the log (it checks the leases the pool counts, so it must not use them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.prices import default_price_table
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.testing import invariants as inv

WF = "a" * 64


def _harness(events: list[Any]) -> Any:
    records = [SimpleNamespace(seq=i, event=e) for i, e in enumerate(events, 1)]
    return SimpleNamespace(log=SimpleNamespace(records=lambda: iter(records)))


def _one_slot_machine_with_two_jobs() -> list[Any]:
    events: list[Any] = [
        ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="j1", workflow_sha256=WF, at=1.0),
        ev.JobSubmitted(job_id="j2", workflow_sha256=WF, at=1.0),
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=60,
            at=1.0,
        ),
        ev.MachineLaunched(request_key="k", server_id="s1", at=2.0),
    ]
    state = initial_state()
    for e in events:
        apply(state, e)
    ready = decide.machine_ready(
        state,
        "s1",
        service_ready_at=10.0,
        estimated_stopping_at=None,
        table=default_price_table("pro"),
        at=10.0,
    )
    return [*events, ready]


def _prompt(job: str, at: float) -> list[Any]:
    return [
        ev.MachineLeased(server_id="s1", job_id=job, at=at),
        ev.JobStarted(job_id=job, server_id="s1", attempt=1, at=at),
        ev.PromptSubmitting(
            job_id=job, attempt=1, prompt_id=f"p-{job}", client_id="c", server_id="s1", at=at
        ),
    ]


def test_two_prompts_at_once_on_a_one_slot_machine_are_flagged() -> None:
    events = _one_slot_machine_with_two_jobs() + _prompt("j1", 11.0) + _prompt("j2", 12.0)
    (problem,) = inv.check_slots(_harness(events))
    assert "machine s1 (max_jobs 1) had the prompts of j1, j2 at once" in problem


def test_the_next_prompt_once_the_first_has_run_passes() -> None:
    events = (
        _one_slot_machine_with_two_jobs()
        + _prompt("j1", 11.0)
        + [ev.ExecutionSucceeded(job_id="j1", prompt_id="p-j1", at=11.5)]
        + _prompt("j2", 12.0)
    )
    assert inv.check_slots(_harness(events)) == []
