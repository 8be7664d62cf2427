"""The API status of a job, from our job status and the service's facts (a pure view)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.service.v2_jobs import api_status


def _job(status: str, *, outputs: int = 0, finished_at: float | None = None) -> st.Job:
    job = st.Job(job_id="j", workflow_sha256="w", status=status, finished_at=finished_at)
    job.outputs = [
        st.OutputFile(
            node_id="9", filename=f"o{i}.png", path=f"/o/{i}", size=1, sha256="s", kind="image"
        )
        for i in range(outputs)
    ]
    return job


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (st.PENDING, "queued"),
        (st.QUEUED, "queued"),
        (st.INTERRUPTED, "queued"),
        (st.RUNNING, "running"),
        (st.RETRYING, "running"),
        (st.FAILED, "failed"),
        (st.CANCELLED, "canceled"),
        (st.SUCCEEDED, "succeeded"),
    ],
)
def test_our_statuses_map_onto_the_apis(ours: str, theirs: str) -> None:
    """Each of our job statuses reads as the spec's status."""
    assert api_status(_job(ours), None, se.ServiceState()) == theirs


def test_cancel_requested_reads_canceling_until_terminal() -> None:
    """An active job whose cancel was requested reads canceling; once cancelled, canceled."""
    api = se.ApiJob("j", {}, None, {}, accepted_at=0.0, expires_at=1.0, cancel_requested_at=0.5)
    assert api_status(_job(st.RUNNING), api, se.ServiceState()) == "canceling"
    assert api_status(_job(st.CANCELLED), api, se.ServiceState()) == "canceled"


def test_success_waits_for_outputs_to_become_assets_and_fails_once_given_up() -> None:
    """A succeeded job reads running until its outputs are assets, however long that takes;
    once the log says some were not stored, failed (outputs_not_stored), even if they all
    became assets later: never both."""
    job = _job(st.SUCCEEDED, outputs=2, finished_at=100.0)
    svc = se.ServiceState()
    svc.job_outputs["j"] = {"/o/0": "a0"}
    assert api_status(job, None, svc) == "running"
    svc.job_outputs["j"]["/o/1"] = "a1"
    assert api_status(job, None, svc) == "succeeded"
    svc.outputs_not_stored["j"] = se.OutputsNotStored(paths=["/o/1"], reason="r", at=101.0)
    assert api_status(job, None, svc) == "failed"


def test_a_job_error_names_the_server_s_folders_instead_of_spelling_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's error may quote a local file (its actor's OSError): the view names the
    output, data, working and home folders instead, and leaves other paths (a remote
    machine's) alone."""
    from types import SimpleNamespace

    from conjure_actors.service.v2_jobs import _error_view

    out, data, work = tmp_path / "out", tmp_path / "runs", tmp_path / "work"
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    service: Any = SimpleNamespace(
        conjure=SimpleNamespace(ctx=SimpleNamespace(out_dir=out)),
        blobs=SimpleNamespace(root=data / "serve.log.blobs" / "blobs"),
    )
    job = _job(st.FAILED)
    message = (
        f"its actor crashed 4 times, last: OSError: [Errno 28] '{out}/j/a.png', "
        f"'{data}/serve.log', '{work}/x', '{tmp_path}/home/.cache/y', '/app/ComfyUI/z.py'"
    )
    job.error = st.JobError(error_type="InternalError", message=message)
    view = _error_view(service, job)
    assert view is not None
    assert view["message"] == (
        "its actor crashed 4 times, last: OSError: [Errno 28] '<out>/j/a.png', "
        f"'<data>/serve.log', '<cwd>/{tmp_path.name}/work/x', '~/.cache/y', '/app/ComfyUI/z.py'"
    )
    assert str(tmp_path) not in view["message"]


def _viewed(job: st.Job, now: float) -> dict[str, Any]:
    """``job_view`` of ``job``, the only job of a service whose clock reads ``now``."""
    from types import SimpleNamespace

    from conjure_actors.service.v2_jobs import job_view

    state = st.State()
    state.jobs[job.job_id] = job
    service: Any = SimpleNamespace(
        state=state,
        conjure=SimpleNamespace(ctx=SimpleNamespace(now=lambda: now)),
        settings=SimpleNamespace(retention=SimpleNamespace(jobs=3600.0)),
        index=SimpleNamespace(position=lambda job: 0),
        node_classes=lambda sha: {},
    )
    return job_view(SimpleNamespace(scope={}), service, job.job_id)


def test_a_running_job_has_a_start_before_comfyui_executes_it() -> None:
    """A job whose machine took it (inputs uploading, or in ComfyUI's own queue) reads
    running with the time it got its machine: never running without a start."""
    job = _job(st.RUNNING)
    job.submitted_at, job.started_at = 100.0, 130.0
    view = _viewed(job, now=140.0)
    assert view["status"] == "running"
    assert view["started_at"] is not None
    assert view["metrics"] == {"queue_ms": 30_000, "execution_ms": None}


def test_the_metrics_time_comfyui_s_execution_once_it_began() -> None:
    """Once ComfyUI said the prompt began, queue_ms runs to that moment and execution_ms
    from it to the job's end."""
    job = _job(st.SUCCEEDED, finished_at=200.0)
    job.submitted_at, job.started_at, job.execution_started_at = 100.0, 130.0, 150.0
    view = _viewed(job, now=210.0)
    assert view["status"] == "succeeded"
    assert view["metrics"] == {"queue_ms": 50_000, "execution_ms": 50_000}


def test_a_job_requeued_after_a_start_reads_queued_without_one() -> None:
    """A job back in the queue (its machine lost) has no start until a machine takes it again."""
    job = _job(st.QUEUED)
    job.submitted_at, job.started_at = 100.0, 130.0
    view = _viewed(job, now=140.0)
    assert (view["status"], view["started_at"]) == ("queued", None)
    assert view["metrics"]["queue_ms"] is None
