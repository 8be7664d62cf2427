"""How ``replay`` tells a job's outputs not stored (``ApiJobOutputsNotStored``)."""

from __future__ import annotations

from conjure_actors.domain import service_events as se
from conjure_actors.domain.describe import describe, event_subject


def test_outputs_not_stored_say_how_many_why_and_that_the_api_reads_the_job_failed() -> None:
    """One line under the job: how many outputs, why, and that the job service reads the
    job failed (the job's own end, succeeded, is told on its own line)."""
    event = se.ApiJobOutputsNotStored(
        job_id="j1",
        paths=("/srv/out/j1/a.png", "/srv/out/j1/b.glb"),
        reason="the server's asset store refuses writes: Read-only file system",
        at=1.0,
    )
    subject, text = describe(event)
    assert subject == event_subject(event) == "job j1"
    assert "2 output(s) not stored as assets" in text
    assert "Read-only file system" in text
    assert "the job service reads it failed (outputs_not_stored)" in text
    assert "\n" not in text
