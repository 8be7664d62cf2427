"""A job's ``expires_at`` in its views (QA: a terminal status frame, sent once, carried a
"now"-based expiry until the job's end was logged, unlike the GET a moment later)."""

from __future__ import annotations

from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.service.v2_jobs import job_expires_at


def test_an_ended_job_whose_end_is_not_logged_expires_from_its_end() -> None:
    """Its terminal status frame (sent once) and a later GET say the same expiry: its end +
    the retention, not a retention from when the frame was built."""
    job = st.Job(job_id="j", workflow_sha256="0" * 64, submitted_at=10.0)
    job.status, job.finished_at = st.SUCCEEDED, 100.0
    api = se.ApiJob(
        job_id="j",
        labels={},
        idempotency_key=None,
        input_assets={},
        accepted_at=10.0,
        expires_at=50.0,
    )
    assert job_expires_at(job, api, keep=1000.0, now=400.0) == 1100.0
    job.status, job.finished_at = st.RUNNING, None
    assert job_expires_at(job, api, keep=1000.0, now=400.0) == 1400.0
