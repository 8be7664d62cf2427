"""A job's v2 ``progress`` (QA6's F4): a job queued again after its machine was lost shows
none of the lost attempt's progress (value 0, and a message saying why it waits), and while
an attempt runs its progress never goes down and never counts the node it stopped in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.service.v2_jobs import job_progress

N_NODES = 6
CLASSES = {str(i): "KSampler" if i == 3 else f"Node{i}" for i in range(1, N_NODES + 1)}
GRAPH = {nid: {"class_type": cls, "inputs": {}} for nid, cls in CLASSES.items()}
JOB = "j1"


def _submitted() -> tuple[st.State, list[Any]]:
    events: list[Any] = [
        ev.WorkflowRegistered(sha256="w" * 64, name="g", graph_json=json.dumps(GRAPH), at=0.0),
        ev.JobSubmitted(job_id=JOB, workflow_sha256="w" * 64, at=0.0),
        ev.JobQueued(job_id=JOB, at=0.0),
    ]
    return st.apply_all(st.State(), events), events


def _attempt_start(attempt: int) -> list[Any]:
    prompt = f"p{attempt}"
    return [
        ev.JobStarted(job_id=JOB, attempt=attempt, server_id="s1", at=1.0),
        ev.PromptSubmitting(
            job_id=JOB, attempt=attempt, prompt_id=prompt, client_id="c", server_id="s1", at=1.0
        ),
        ev.PromptSubmitted(job_id=JOB, prompt_id=prompt, number=1.0, at=1.0),
        ev.ExecutionStarted(job_id=JOB, prompt_id=prompt, at=1.0),
    ]


def _running_in_node_3(attempt: int = 1) -> st.State:
    """Attempt ``attempt`` ran nodes 1 and 2 (no "executed": no UI output) and is at step
    12/30 of node 3 (a KSampler)."""
    state, _ = _submitted()
    p = f"p{attempt}"
    return st.apply_all(
        state,
        [
            *_attempt_start(attempt),
            ev.NodeStarted(job_id=JOB, prompt_id=p, node_id="1", at=2.0),
            ev.NodeStarted(job_id=JOB, prompt_id=p, node_id="2", at=2.0),
            ev.NodeStarted(job_id=JOB, prompt_id=p, node_id="3", at=2.0),
            ev.NodeProgress(job_id=JOB, prompt_id=p, node_id="3", value=12, max=30, at=2.0),
        ],
    )


def test_a_job_queued_for_its_first_machine_has_no_progress() -> None:
    state, _ = _submitted()
    assert job_progress(state.jobs[JOB], CLASSES) is None


@pytest.mark.parametrize(
    "end",
    [
        ev.JobCancelled(job_id=JOB, reason="canceled by the user", at=2.0),
        ev.JobFailed(job_id=JOB, error_type="no_machine", message="no machine", at=2.0),
        ev.JobFailed(job_id=JOB, error_type="not_resumable", message="extra_data", at=2.0),
    ],
)
def test_a_job_that_ended_before_any_machine_ran_it_has_no_progress(end: Any) -> None:
    """QA10 F4: it ended with value 0 of N nodes, a "0 %" bar on a job that never started."""
    state, _ = _submitted()
    state = st.apply(state, end)
    assert state.jobs[JOB].status in st.TERMINAL_STATUSES
    assert job_progress(state.jobs[JOB], CLASSES) is None


def test_a_running_job_counts_the_nodes_before_the_current_one_done() -> None:
    progress = job_progress(_running_in_node_3().jobs[JOB], CLASSES)
    assert progress is not None
    assert progress["nodes_done"] == 2
    assert progress["value"] == (2 + 12 / 30) / N_NODES
    assert progress["message"] == "KSampler 12/30"


def test_a_job_whose_machine_was_lost_shows_no_stale_progress_and_says_why() -> None:
    """QA6 F4: the lost attempt's 84 % (its interrupted node counted done) stayed on the
    queued job; now value 0 and a message a page shows ("restarting")."""
    state = st.apply(
        _running_in_node_3(), ev.JobQueued(job_id=JOB, reason="machine s1 lost", at=3.0)
    )
    progress = job_progress(state.jobs[JOB], CLASSES)
    assert progress is not None
    assert (progress["value"], progress["nodes_done"], progress["current_node"]) == (0.0, 0, None)
    assert progress["message"] == (
        "the machine running this job was lost: it waits for a machine to run it again (attempt 2)"
    )
    assert "s1" not in progress["message"]  # the log's reason names the machine: not a client's


def test_a_job_started_again_says_so_until_its_prompt_is_sent() -> None:
    """The next attempt got a machine: the wait's message gives way (the event stream sends
    no null progress, so a page would keep "it waits for a machine" while it runs)."""
    state = st.apply_all(
        _running_in_node_3(),
        [
            ev.JobQueued(job_id=JOB, reason="machine s1 lost", at=3.0),
            ev.JobStarted(job_id=JOB, attempt=2, server_id="s2", at=4.0),
        ],
    )
    progress = job_progress(state.jobs[JOB], CLASSES)
    assert progress is not None
    assert (progress["value"], progress["message"]) == (0.0, "starting again (attempt 2)")


def test_a_job_queued_again_on_a_restart_says_the_server_restarted() -> None:
    state = st.apply(_running_in_node_3(), ev.JobQueued(job_id=JOB, reason="resumed", at=3.0))
    progress = job_progress(state.jobs[JOB], CLASSES)
    assert progress is not None
    assert progress["message"].startswith("the server restarted while this job ran")


def test_the_node_an_attempt_stopped_in_is_not_counted_done() -> None:
    """A retrying job (the API's running) keeps its attempt's progress, not one node more."""
    before = job_progress(_running_in_node_3().jobs[JOB], CLASSES)
    state = st.apply_all(
        _running_in_node_3(),
        [
            ev.ExecutionInterrupted(job_id=JOB, prompt_id="p1", at=3.0),
            ev.JobRetrying(job_id=JOB, attempt=1, delay=5.0, reason="x", at=3.0),
        ],
    )
    after = job_progress(state.jobs[JOB], CLASSES)
    assert before is not None
    assert after is not None
    assert after["nodes_done"] == 2
    assert after["value"] == before["value"]


# ---------------------------------------------------------------- any sequence of events

_ENDS = ("lost", "interrupted", "failed", "retrying", "succeeded", "cancelled", "cut")


@hs.composite
def _attempt(draw: Any, attempt: int) -> tuple[list[Any], str]:
    """One attempt's events as ComfyUI reports them (cached nodes first, then one node at
    a time, its steps counting up), cut anywhere, and how it ends."""
    p = f"p{attempt}"
    at = float(attempt)
    out: list[Any] = _attempt_start(attempt)
    order = draw(hs.permutations(list(CLASSES)))
    n_cached = draw(hs.integers(0, 2))
    if n_cached:
        out.append(ev.NodeCached(job_id=JOB, prompt_id=p, nodes=tuple(order[:n_cached]), at=at))
    started = order[n_cached : n_cached + draw(hs.integers(0, N_NODES - n_cached))]
    # The node an attempt stops in: the one running (started, not executed), else the next.
    stopped_in: str | None = None
    for node_id in started:
        out.append(ev.NodeStarted(job_id=JOB, prompt_id=p, node_id=node_id, at=at))
        steps = draw(hs.sampled_from([0, 1, 4, 30]))
        if steps:
            values = sorted(draw(hs.lists(hs.integers(0, steps), max_size=4)))
            out.extend(
                ev.NodeProgress(job_id=JOB, prompt_id=p, node_id=node_id, value=v, max=steps, at=at)
                for v in values
            )
        stopped_in = node_id
        if draw(hs.booleans()):
            out.append(ev.NodeExecuted(job_id=JOB, prompt_id=p, node_id=node_id, at=at))
            rest = order[n_cached + len(started) :]
            stopped_in = rest[0] if rest else None
    end = draw(hs.sampled_from(_ENDS))
    if end == "lost":
        out.append(ev.JobQueued(job_id=JOB, reason="machine s1 lost", at=at))
    elif end == "interrupted":
        node = draw(hs.sampled_from([None, stopped_in]))
        out.append(ev.ExecutionInterrupted(job_id=JOB, prompt_id=p, node_id=node, at=at))
        out.append(ev.JobRetrying(job_id=JOB, attempt=attempt, delay=1, reason="x", at=at))
    elif end == "failed":
        out.append(
            ev.ExecutionFailed(
                job_id=JOB, prompt_id=p, node_id=stopped_in, exception_type="E", message="m", at=at
            )
        )
        out.append(ev.JobFailed(job_id=JOB, error_type="E", message="m", at=at))
    elif end == "retrying":
        out.append(ev.JobRetrying(job_id=JOB, attempt=attempt, delay=1, reason="x", at=at))
    elif end == "succeeded":
        out.append(ev.ExecutionSucceeded(job_id=JOB, prompt_id=p, at=at))
        out.append(ev.JobSucceeded(job_id=JOB, at=at))
    elif end == "cancelled":
        out.append(ev.JobCancelled(job_id=JOB, reason="client", at=at))
    return out, end


@hs.composite
def _job_events(draw: Any) -> list[Any]:
    events: list[Any] = []
    for attempt in range(1, 4):
        more, end = draw(_attempt(attempt))
        events.extend(more)
        if end in ("failed", "succeeded", "cancelled", "cut"):
            break
    return events


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(_job_events())
def test_progress_is_null_or_zero_while_queued_and_never_goes_down_in_an_attempt(
    events: list[Any],
) -> None:
    """For any sequence of a job's events: while it waits, no progress (its first wait) or
    0 with the reason; else a value in [0, 1] and nodes done that never go down within an
    attempt; a succeeded job is at 1."""
    state, _ = _submitted()
    job = state.jobs[JOB]
    last: tuple[int, float, int] | None = None  # (attempt, value, nodes_done)
    for event in events:
        st.apply(state, event)
        progress = job_progress(job, CLASSES)
        if job.status in (st.PENDING, st.QUEUED, st.INTERRUPTED):
            if job.attempt == 0:
                assert progress is None
            else:
                assert progress is not None
                assert (progress["value"], progress["nodes_done"]) == (0.0, 0)
                assert progress["message"]
            last = None
            continue
        if progress is None:
            continue
        assert 0.0 <= progress["value"] <= 1.0
        assert 0 <= progress["nodes_done"] <= progress["nodes_total"] == N_NODES
        if job.status == st.SUCCEEDED:
            assert progress["value"] == 1.0
        if last is not None and last[0] == job.attempt:
            assert progress["value"] >= last[1], (event, progress, last)
            assert progress["nodes_done"] >= last[2], (event, progress, last)
        last = (job.attempt, progress["value"], progress["nodes_done"])
    assert not state.anomalies
