"""slots_taken: a lease must take a slot whenever its job's prompt may
still go to ComfyUI, whatever an earlier attempt's prompt did."""

from __future__ import annotations

from test_domain_decide import WF, base, ready

from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply


def _first_attempt_downloaded_badly(state: State) -> State:
    """j1's first prompt succeeded on s1 (max_jobs 1), its download failed: it gave the
    machine back and waits to retry (retrying, execution still "succeeded", server s1)."""
    apply(state, decide.lease_machine(state, "s1", "j1", at=12.0))
    apply(state, decide.start_job(state, "j1", "s1", at=12.0))
    apply(
        state,
        ev.PromptSubmitting(
            job_id="j1", attempt=1, prompt_id="p1", client_id="c", server_id="s1", at=12.0
        ),
    )
    apply(state, ev.PromptSubmitted(job_id="j1", prompt_id="p1", number=1, at=12.0))
    apply(state, ev.ExecutionStarted(job_id="j1", prompt_id="p1", at=12.5))
    apply(state, ev.ExecutionSucceeded(job_id="j1", prompt_id="p1", at=13.0))
    apply(state, decide.release_machine(state, "s1", "j1", at=14.0))
    apply(state, decide.retry_job(state, "j1", delay=1.0, reason="download failed", at=14.0))
    return state


def test_a_retry_leased_again_takes_its_slot_before_it_starts() -> None:
    """j1, re-leased s1 for its retry, will POST a new prompt: it takes s1's one slot from
    its MachineLeased on, though its last prompt (attempt 1) succeeded there."""
    state = _first_attempt_downloaded_badly(ready(base()))
    assert state.jobs["j1"].execution == "succeeded"  # attempt 1's, not reset by the retry
    apply(state, decide.lease_machine(state, "s1", "j1", at=20.0))
    assert decide.slots_taken(state, state.machines["s1"]) == 1


def test_a_one_slot_machine_never_runs_two_prompts_after_a_retry() -> None:
    """The overcommit that follows: j2 leases s1 beside the re-leased j1; once j1's
    JobStarted resets its execution, s1 (max_jobs 1) has two jobs with prompts to run."""
    state = _first_attempt_downloaded_badly(ready(base()))
    apply(state, decide.lease_machine(state, "s1", "j1", at=20.0))
    apply(state, ev.JobSubmitted(job_id="j2", workflow_sha256=WF, at=20.0))
    try:
        apply(state, decide.lease_machine(state, "s1", "j2", at=20.5))
    except decide.CommandRejectedError:
        return  # the fix: refused
    apply(state, decide.start_job(state, "j1", "s1", at=21.0))
    apply(state, decide.start_job(state, "j2", "s1", at=21.0))
    m = state.machines["s1"]
    assert decide.slots_taken(state, m) <= m.max_jobs, (m.leases, m.max_jobs)
