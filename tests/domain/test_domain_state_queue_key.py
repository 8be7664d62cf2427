"""``state.queue_key``: the one order of the jobs waiting for a machine (the pool serves by
it, ``queue_position`` counts by it): priority first, then the fold's submission order."""

from __future__ import annotations

from conjure_actors.domain import events as ev
from conjure_actors.domain.state import Job, apply, initial_state, queue_key


def test_submission_order_is_the_logs_whatever_the_clock_says() -> None:
    """Jobs submitted at the same instant, or with the clock set back between them, are
    numbered in the order the log has them; a submission logged twice takes no number."""
    state = initial_state()
    apply(state, ev.WorkflowRegistered(sha256="wf", name="wf", graph_json="{}", at=0.0))
    for job_id, at in [("a", 5.0), ("b", 5.0), ("c", 2.0), ("a", 9.0), ("d", 1.0)]:
        apply(state, ev.JobSubmitted(job_id=job_id, workflow_sha256="wf", at=at))
    assert [(j.job_id, j.order) for j in state.jobs.values()] == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
        ("d", 3),
    ]


def test_queue_key_puts_higher_priority_first_then_submission_order() -> None:
    """Higher priority first; within a priority, the job submitted first."""
    jobs = [
        Job("late-high", "wf", priority=5, order=3),
        Job("first-low", "wf", priority=0, order=0),
        Job("early-high", "wf", priority=5, order=1),
        Job("second-low", "wf", priority=0, order=2),
    ]
    assert [j.job_id for j in sorted(jobs, key=queue_key)] == [
        "early-high",
        "late-high",
        "first-low",
        "second-low",
    ]
