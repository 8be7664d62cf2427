"""The live view's figures: the running node's name, the ETA, which jobs are listed, and the
rendered table."""

from __future__ import annotations

import json

from rich.console import Console

from conjure_actors.actors.view import job_eta, node_label, render_view, shown_jobs
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st

GRAPH = {
    "10": {"class_type": "LoadImage", "inputs": {}},
    "20": {"class_type": "KSampler", "inputs": {}},
    "30": {"class_type": "SaveImage", "inputs": {}},
    "40": {"class_type": "SaveGLB", "inputs": {}},
}


def _state(*job_ids: str) -> st.State:
    state = st.initial_state()
    st.apply(state, ev.WorkflowRegistered(sha256="w", name="w", graph_json=json.dumps(GRAPH), at=0))
    for i, job_id in enumerate(job_ids):
        st.apply(state, ev.JobSubmitted(job_id=job_id, workflow_sha256="w", at=float(i)))
    return state


def _running(state: st.State, job_id: str, *, started: float | None, done: int) -> st.Job:
    """A running job whose prompt began executing at ``started``, ``done`` of 4 nodes done."""
    job = state.jobs[job_id]
    job.status = st.RUNNING
    job.execution_started_at = started
    job.nodes = {node: st.NodeState("executed") for node in list(GRAPH)[:done]}
    job.current_node = list(GRAPH)[done] if done < len(GRAPH) else None
    return job


def test_node_label_names_the_class_type() -> None:
    state = _state("a")
    job = _running(state, "a", started=0.0, done=1)
    assert node_label(state, job) == "20 KSampler"


def test_node_label_of_a_node_missing_from_the_graph_is_its_id() -> None:
    state = _state("a")
    job = _running(state, "a", started=0.0, done=1)
    job.current_node = "99"
    assert node_label(state, job) == "99"


def test_eta_counts_from_the_start_of_execution_not_submission() -> None:
    """Submitted at 0, queued for a machine until 590, executing since 600: half done at
    610 means about 10 s left (not 610)."""
    state = _state("a")
    job = _running(state, "a", started=600.0, done=2)
    assert job_eta(state, job, 610.0) == 10.0


def test_no_eta_before_execution_starts() -> None:
    state = _state("a")
    job = _running(state, "a", started=None, done=0)
    assert job_eta(state, job, 610.0) is None


def test_execution_start_is_folded_from_the_log_and_reset_by_a_new_attempt() -> None:
    state = _state("a")
    st.apply(state, ev.JobQueued(job_id="a", at=1.0))
    st.apply(state, ev.JobStarted(job_id="a", attempt=1, server_id="s", at=2.0))
    st.apply(
        state,
        ev.PromptSubmitting(
            job_id="a", attempt=1, prompt_id="p", client_id="c", server_id="s", at=3.0
        ),
    )
    st.apply(state, ev.ExecutionStarted(job_id="a", prompt_id="p", at=5.0))
    assert state.jobs["a"].execution_started_at == 5.0
    st.apply(state, ev.JobRetrying(job_id="a", attempt=1, delay=1.0, reason="x", at=6.0))
    st.apply(state, ev.JobStarted(job_id="a", attempt=2, server_id="s", at=7.0))
    assert state.jobs["a"].execution_started_at is None
    assert state.anomalies == []


def test_shown_jobs_lists_running_then_waiting_then_latest_finished() -> None:
    state = _state("old", "new", "wait", "run")
    for job_id, at in (("old", 10.0), ("new", 20.0)):
        state.jobs[job_id].status = st.SUCCEEDED
        state.jobs[job_id].finished_at = at
    state.jobs["wait"].status = st.QUEUED
    _running(state, "run", started=0.0, done=1)
    shown = [j.job_id for j in shown_jobs(state, None, limit=3)]
    assert shown == ["run", "wait", "new"]


def test_render_view_shows_node_eta_machines_and_what_it_left_out() -> None:
    state = _state("a", "b", "c")
    _running(state, "a", started=100.0, done=2)
    state.machines["server-1"] = st.Machine("server-1", status=st.M_READY, leases=["a"])
    state.machines["server-1"].jobs_served = 3
    console = Console(record=True, width=120, color_system=None)
    console.print(render_view(state, 130.0, ["a", "b", "c"], limit=2))
    text = console.export_text()
    assert "30 SaveImage" in text
    assert "50%" in text
    assert "30s" in text
    assert "... 1 more" in text
    assert "busy" in text
    machine_line = next(line for line in text.splitlines() if "server-1" in line)
    assert machine_line.split()[1:3] == ["busy", "3"]
