"""The decide step: commands validated against the state, events out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hyp

from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.errors import CommandRejectedError, IllegalTransitionError
from conjure_actors.domain.prices import default_price_table
from conjure_actors.domain.state import (
    ACCRUE_INTERVAL,
    ACTIVE_STATUSES,
    JOB_STATUSES,
    LEGAL_TRANSITIONS,
    RESUMABLE_STATUSES,
    TERMINAL_STATUSES,
    State,
    apply,
    initial_state,
)

TABLE = default_price_table("pro")
WF = "e" * 64


def run(*events: Any) -> State:
    state = initial_state()
    for event in events:
        apply(state, event)
    return state


def base() -> State:
    return run(
        ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="j1", workflow_sha256=WF, at=1.0),
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=60,
            at=1.0,
        ),
        ev.MachineLaunched(request_key="k", server_id="s1", at=2.0),
    )


def ready(state: State, at: float = 10.0) -> State:
    return apply(
        state,
        decide.machine_ready(
            state, "s1", service_ready_at=at, estimated_stopping_at=None, table=TABLE, at=at
        ),
    )


def test_illegal_transition_names_job_from_and_to() -> None:
    """The error says which job, from which status, to which."""
    with pytest.raises(
        IllegalTransitionError, match=r"job j1: illegal transition succeeded -> running"
    ):
        decide.check_transition("j1", "succeeded", "running")


def test_terminal_statuses_lead_nowhere() -> None:
    """No transition leaves succeeded, failed or cancelled."""
    for terminal in ("succeeded", "failed", "cancelled"):
        for to in JOB_STATUSES:
            with pytest.raises(IllegalTransitionError):
                decide.check_transition("j", terminal, to)
    assert set(LEGAL_TRANSITIONS) == set(JOB_STATUSES)


def test_submit_refuses_a_duplicate_job_id() -> None:
    """A job id can be used once."""
    with pytest.raises(CommandRejectedError, match="already exists"):
        decide.submit_job(base(), job_id="j1", workflow_sha256=WF, at=3.0)


def test_submit_refuses_an_unregistered_workflow() -> None:
    """Jobs must refer to a registered graph, so a resume can rebuild the prompt."""
    with pytest.raises(CommandRejectedError, match="not registered"):
        decide.submit_job(base(), job_id="j2", workflow_sha256="0" * 64, at=3.0)


def test_ready_uses_the_price_table_rate_and_version() -> None:
    """MachineReady records the rate and the table version it was priced with."""
    event = decide.machine_ready(
        base(), "s1", service_ready_at=5.0, estimated_stopping_at=65.0, table=TABLE, at=5.0
    )
    assert event.rate_micros_per_hour == 790_000
    assert event.price_table_version == TABLE.version


def test_lease_respects_the_machine_job_limit() -> None:
    """A machine with max_jobs=1 cannot be leased to a second job."""
    state = ready(base())
    apply(state, ev.JobSubmitted(job_id="j2", workflow_sha256=WF, at=11.0))
    apply(state, decide.lease_machine(state, "s1", "j1", at=12.0))
    with pytest.raises(CommandRejectedError, match="1 of 1 jobs"):
        decide.lease_machine(state, "s1", "j2", at=13.0)


def test_start_requires_a_lease() -> None:
    """A job cannot start on a machine it does not hold."""
    state = ready(base())
    with pytest.raises(CommandRejectedError, match="no lease"):
        decide.start_job(state, "j1", "s1", at=12.0)


def test_succeed_requires_an_output() -> None:
    """A job without a verified output cannot succeed."""
    state = ready(base())
    apply(state, decide.lease_machine(state, "s1", "j1", at=12.0))
    apply(state, decide.start_job(state, "j1", "s1", at=12.0))
    with pytest.raises(CommandRejectedError, match="no saved output"):
        decide.succeed_job(state, "j1", at=13.0)


def test_pending_intents_list_what_recovery_must_reconcile() -> None:
    """Dangling launch requests and prompts, live machines and active jobs are listed."""
    state = ready(base())
    apply(
        state,
        ev.MachineLaunchRequested(
            request_key="k2",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=60,
            at=20.0,
        ),
    )
    apply(
        state,
        ev.PromptSubmitting(
            job_id="j1", attempt=1, prompt_id="p", client_id="c", server_id="s1", at=21.0
        ),
    )
    intents = decide.pending_intents(state)
    assert intents.launch_requests == ("k2",)
    assert intents.prompts == ("p",)
    assert intents.machines == ("s1",)
    assert intents.jobs == ("j1",)


# ------------------------------------------------------------ job lifecycle: interrupt, judge


def running(failures: int = 0) -> State:
    """j1 running attempt 1 on s1 (after ``failures`` failed attempts)."""
    state = ready(base())
    apply(state, decide.queue_job(state, "j1", at=11.0))
    apply(state, decide.lease_machine(state, "s1", "j1", at=11.0))
    apply(state, decide.start_job(state, "j1", "s1", at=11.0))
    for i in range(failures):
        apply(state, decide.retry_job(state, "j1", delay=1.0, reason="x", at=12.0 + i))
        apply(state, decide.start_job(state, "j1", "s1", at=12.5 + i))
    return state


def test_interrupted_job_is_neither_active_nor_terminal() -> None:
    """An interrupted job waits for a resume: not active (nothing works on it), not done."""
    state = running()
    apply(state, decide.interrupt_job(state, "j1", reason="interrupted", at=20.0))
    job = state.jobs["j1"]
    assert job.status == "interrupted"
    assert job.status not in ACTIVE_STATUSES
    assert job.status not in TERMINAL_STATUSES
    assert job.status in RESUMABLE_STATUSES
    assert job.server_id == "s1"


def test_resume_reattaches_a_job_whose_prompt_was_submitted() -> None:
    """JobResumed: running again when its prompt was submitted, so it is followed."""
    state = running()
    apply(
        state,
        ev.PromptSubmitting(
            job_id="j1", attempt=1, prompt_id="p", client_id="c", server_id="s1", at=12.0
        ),
    )
    apply(state, ev.PromptSubmitted(job_id="j1", prompt_id="p", number=1, at=12.0))
    apply(state, decide.interrupt_job(state, "j1", reason="interrupted", at=20.0))
    apply(state, decide.resume_job(state, "j1", at=30.0))
    assert (state.jobs["j1"].status, state.jobs["j1"].prompt_id) == ("running", "p")
    assert state.anomaly_count == 0


def test_resume_queues_a_job_without_a_prompt() -> None:
    """JobResumed of a job that never submitted: queued for a machine."""
    state = base()
    apply(state, decide.queue_job(state, "j1", at=2.0))
    apply(state, decide.interrupt_job(state, "j1", reason="interrupted", at=3.0))
    apply(state, decide.resume_job(state, "j1", at=4.0))
    assert state.jobs["j1"].status == "queued"
    assert state.anomaly_count == 0


def test_resume_refuses_a_job_that_is_not_interrupted() -> None:
    """Only an interrupted job is resumed."""
    with pytest.raises(CommandRejectedError, match="not interrupted"):
        decide.resume_job(base(), "j1", at=2.0)


def test_a_cancelled_job_cannot_be_interrupted() -> None:
    """A job the user cancelled stays cancelled."""
    state = base()
    apply(state, decide.cancel_job(state, "j1", reason="user", at=2.0))
    with pytest.raises(IllegalTransitionError):
        decide.interrupt_job(state, "j1", reason="interrupted", at=3.0)


def test_judge_requeues_after_a_lost_machine_without_counting_a_failure() -> None:
    """A lost machine: JobQueued, and failures stay as they were."""
    state = running()
    event = decide.judge_failure(
        state,
        "j1",
        decide.AttemptFailure("machine_lost", "machine s1 lost"),
        max_attempts=3,
        delay=2.0,
        at=20.0,
    )
    assert isinstance(event, ev.JobQueued)
    apply(state, event)
    assert state.jobs["j1"].failures == 0


def test_judge_fails_a_fatal_error_at_once() -> None:
    """A fatal failure (e.g. a rejected prompt) fails the job, not retryable."""
    event = decide.judge_failure(
        running(),
        "j1",
        decide.AttemptFailure("fatal", "bad graph", "PromptRejected"),
        max_attempts=3,
        delay=2.0,
        at=20.0,
    )
    assert isinstance(event, ev.JobFailed)
    assert (event.error_type, event.retryable) == ("PromptRejected", False)


def test_judge_retries_until_the_last_attempt() -> None:
    """Retryable failures: JobRetrying with the delay, then RetriesExhausted."""
    failure = decide.AttemptFailure("retryable", "node 5 failed")
    first = decide.judge_failure(running(0), "j1", failure, max_attempts=3, delay=4.0, at=20.0)
    assert isinstance(first, ev.JobRetrying)
    assert first.delay == 4.0
    last = decide.judge_failure(running(2), "j1", failure, max_attempts=3, delay=4.0, at=20.0)
    assert isinstance(last, ev.JobFailed)
    assert (last.error_type, last.retryable) == ("RetriesExhausted", True)


def test_judge_does_nothing_for_an_ended_job() -> None:
    """A failure reported after the job ended decides nothing."""
    state = running()
    apply(state, decide.cancel_job(state, "j1", reason="user", at=20.0))
    failure = decide.AttemptFailure("retryable", "late")
    assert decide.judge_failure(state, "j1", failure, max_attempts=3, delay=1.0, at=21) is None


def test_job_crashed_fails_the_job_past_its_own_limit() -> None:
    """Crashes up to the per-job limit let the job go on; one more fails it."""
    state = running()
    assert decide.job_crashed(state, "j1", crashes=3, max_crashes=3, error="E", at=20) is None
    failed = decide.job_crashed(state, "j1", crashes=4, max_crashes=3, error="KeyError: x", at=20)
    assert isinstance(failed, ev.JobFailed)
    assert failed.error_type == "InternalError"
    assert "KeyError: x" in failed.message


@settings(max_examples=60, deadline=None)
@given(
    failures=hyp.integers(0, 4),
    kind=hyp.sampled_from(["fatal", "retryable", "machine_lost"]),
    max_attempts=hyp.integers(1, 5),
)
def test_judged_events_always_apply_cleanly(failures: int, kind: str, max_attempts: int) -> None:
    """Whatever judge_failure decides for a running job is a legal move (no anomaly), and a
    job fails at the latest on its max_attempts-th failure."""
    state = running(min(failures, max_attempts - 1))
    failure = decide.AttemptFailure(kind, "x")  # type: ignore[arg-type]
    event = decide.judge_failure(state, "j1", failure, max_attempts=max_attempts, delay=1, at=30)
    assert event is not None
    apply(state, event)
    assert state.anomaly_count == 0
    assert state.jobs["j1"].failures < max_attempts


def test_a_resumed_job_gets_what_it_had_left_from_the_run_that_resumes_it() -> None:
    """The total timeout counts from submission, then from the start of a later run, less
    what the job used before: here a run that crashed with its last record at 0.5 s, which
    may have lived ACCRUE_INTERVAL more (the 5000 s gap after it is not counted)."""
    state = base()
    apply(state, ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=0.5))
    assert decide.job_deadline(state, "j1", total_timeout=100.0) == 101.0
    apply(state, ev.SystemStarted(run_id="r2", version="0", mode="simulated", at=5000.0))
    used = 0.5 + ACCRUE_INTERVAL - 1.0  # its submission at 1.0 to the crashed run's end
    assert decide.job_deadline(state, "j1", total_timeout=100.0) == 5100.0 - used


@settings(max_examples=60, deadline=None)
@given(max_lost=hyp.integers(1, 5), losses=hyp.integers(1, 8))
def test_machines_lost_requeue_up_to_the_limit_then_fail(max_lost: int, losses: int) -> None:
    """Each lost machine requeues the job (counted in ``machines_lost``) until the
    ``max_lost``-th, which fails it ``MachineLost``; nothing is requeued past it."""
    state = running()
    for k in range(1, losses + 1):
        event = decide.judge_failure(
            state,
            "j1",
            decide.AttemptFailure("machine_lost", f"machine s{k} lost"),
            max_attempts=3,
            delay=1.0,
            at=20.0 + k,
            max_lost=max_lost,
        )
        if k < max_lost:
            assert isinstance(event, ev.JobQueued)
            apply(state, event)
            assert state.jobs["j1"].machines_lost == k
            apply(
                state, ev.JobStarted(job_id="j1", attempt=k + 1, server_id=f"s{k + 1}", at=20.5 + k)
            )
        else:
            assert isinstance(event, ev.JobFailed)
            assert event.error_type == "MachineLost"
            break
    assert state.anomaly_count == 0
