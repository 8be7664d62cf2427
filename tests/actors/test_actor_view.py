"""The live view's figures: the running node's name, the ETA, which jobs are listed, and the
rendered table."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hyp
from rich.console import Console

from conjure_actors.actors.view import job_eta, node_label, render_view, run_eta, shown_jobs
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


def _crowd(jobs: int = 30, machines: int = 3) -> tuple[st.State, list[str]]:
    """``jobs`` jobs (4 running, 4 succeeded, 1 failed, the rest waiting) on ``machines``
    machines with UUID server ids; the run began at 50."""
    ids = [f"job-{i:012x}" for i in range(jobs)]
    state = _state(*ids)
    for i, job_id in enumerate(ids[:4]):
        _running(state, job_id, started=100.0, done=1 + i % 3)
    for job_id in ids[4:8]:
        state.jobs[job_id].status = st.SUCCEEDED
        state.jobs[job_id].finished_at = 110.0
    failed = state.jobs[ids[8]]
    failed.status = st.FAILED
    failed.finished_at = 120.0
    failed.error = st.JobError(
        "PromptRejected",
        "server s rejected prompt 1f2e-44: node 16 (LoadImage) image: Invalid image file: x.png",
    )
    for k in range(machines):
        sid = f"2f1c9a7e-5b3d-4c8e-9f00-{k:012d}"
        state.machines[sid] = st.Machine(sid, status=st.M_READY, leases=[ids[k % 4]])
    state.system.started_at = 50.0
    return state, ids


def _render(state: st.State, ids: list[str], now: float, width: int, height: int) -> list[str]:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(render_view(state, now, ids, height=height, width=width))
    return console.export_text().rstrip("\n").splitlines()


def test_on_80x20_with_30_jobs_machines_and_total_cost_are_visible() -> None:
    """30 jobs on an 80x20 terminal: the view fits, every machine and the total cost are
    there, the job list is cut to fit and says what it left out."""
    state, ids = _crowd()
    lines = _render(state, ids, 130.0, 80, 20)
    assert len(lines) <= 20
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "total cost: $" in text
    for sid in state.machines:
        assert sid in text
    assert "... " in text
    assert "more" in text
    assert "waiting" in text
    assert "30 jobs: 4 running, 21 waiting, 4 succeeded, 1 failed" in text


# Building and rendering a crowd is ~25 ms an example: the inner loop runs 15, the slow
# tests 200.
@pytest.mark.slow
@given(jobs=hyp.integers(1, 60), machines=hyp.integers(0, 8), height=hyp.integers(14, 40))
@settings(max_examples=15, deadline=None)
def test_the_view_fits_any_terminal_and_keeps_cost_visible(
    jobs: int, machines: int, height: int
) -> None:
    """Whatever the number of jobs and machines, the view fits the terminal's height and
    the total cost line is in it."""
    _check_view_fits(jobs, machines, height)


@pytest.mark.slow
@given(jobs=hyp.integers(1, 60), machines=hyp.integers(0, 8), height=hyp.integers(14, 40))
@settings(max_examples=200, deadline=None)
def test_the_view_fits_any_terminal_over_many_examples(
    jobs: int, machines: int, height: int
) -> None:
    """The same property as above, over many more crowds and terminals."""
    _check_view_fits(jobs, machines, height)


def _check_view_fits(jobs: int, machines: int, height: int) -> None:
    state, ids = _crowd(max(jobs, 9), machines)
    lines = _render(state, ids, 130.0, 80, height)
    assert len(lines) <= height
    assert any("total cost: $" in line for line in lines)


def test_ids_are_never_cut() -> None:
    """Every listed job id and machine id is whole (users paste them)."""
    state, ids = _crowd()
    text = "\n".join(_render(state, ids, 130.0, 80, 20))
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("job-")]
    assert listed
    assert all(job_id in ids for job_id in listed)
    assert sum(sid in text for sid in state.machines) == len(state.machines)


def test_overall_progress_and_elapsed_are_shown() -> None:
    """The run's share done and the time since it began are on the second line."""
    state, ids = _crowd()
    lines = _render(state, ids, 130.0, 80, 20)
    assert "% done" in lines[1]
    assert "elapsed 80s" in lines[1]


def test_no_eta_right_after_execution_starts() -> None:
    """54% done one second into execution (cached nodes) gives no ETA, not "0s"."""
    state = _state("a")
    job = _running(state, "a", started=600.0, done=2)
    assert job_eta(state, job, 601.0) is None
    assert run_eta(0.54, 1.0) is None
    assert run_eta(0.5, 60.0) == 60.0


def test_a_failed_job_says_why_in_the_view() -> None:
    """The failed job's row and the last line give the node and ComfyUI's message."""
    state, ids = _crowd()
    lines = _render(state, ids, 130.0, 80, 20)
    assert lines[-1].startswith(f"last failed: {ids[8]}: node 16 (LoadImage) image: Invalid")
    row = next(line for line in lines if line.startswith(ids[8]))
    assert "node 16 (LoadImage)" in row


def test_machines_that_do_not_fit_are_counted_by_state() -> None:
    """12 machines on 80x20: five are listed (a quarter of the lines), the others counted by
    state, and the total cost still shows."""
    state, ids = _crowd(30, 12)
    lines = _render(state, ids, 130.0, 80, 20)
    assert len(lines) <= 20
    listed = [sid for sid in state.machines if any(line.startswith(sid) for line in lines)]
    assert len(listed) == 5
    assert any(line.startswith("... 7 more machines (7 busy)") for line in lines)
    assert any("total cost: $" in line for line in lines)


def test_a_draining_machine_says_draining() -> None:
    """A machine that drains (``MachineDraining``: no new job, stopped once its jobs end) is
    listed ``draining``, busy or not; once stopped, ``stopped``."""
    state, ids = _crowd(10, 2)
    busy, idle = state.machines.values()
    busy.draining = "reattach_given_up"
    idle.leases, idle.draining = [], "reattach_given_up"
    rows = [line for line in _render(state, ids, 130.0, 100, 30) if line.startswith("2f1c")]
    assert [row.split()[1] for row in rows] == ["draining", "draining"]
    idle.status = st.M_STOPPED
    rows = [line for line in _render(state, ids, 130.0, 100, 30) if line.startswith("2f1c")]
    assert [row.split()[1] for row in rows] == ["draining", "stopped"]
