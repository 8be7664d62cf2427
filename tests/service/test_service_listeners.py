"""A journal listener of the service that raises fails its task (and the service) instead
of being dropped silently, leaving the job index stale (found by review)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for

import eventlog
from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.service.app import Settings
from conjure_actors.service.jobindex import JobIndex, follow_jobs
from conjure_actors.service.previews import Previews

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_follow_jobs_does_not_swallow_a_failure_of_its_listener(tmp_path: Path) -> None:
    """A failure inside follow_jobs' listener (here: on_end raises once) must end the
    task with that error, as the subscriber task did; not leave the index stale while
    follow_jobs sleeps forever."""

    calls: list[str] = []

    def on_end(job_id: str) -> None:
        calls.append(job_id)
        if len(calls) == 1:
            raise RuntimeError("on_end broke")

    index = JobIndex()
    failed: list[BaseException] = []
    with trio.fail_after(10):
        try:
            async with (
                eventlog.open_journal(
                    tmp_path / "log", Event, apply=apply, initial=initial_state(), sync="none"
                ) as journal,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(functools.partial(follow_jobs, journal, index, on_end=on_end))
                await journal.append(
                    ev.WorkflowRegistered(sha256="w" * 64, name="w", graph_json="{}", at=1.0)
                )
                for job_id in ("j1", "j2"):
                    await journal.append(
                        decide.submit_job(
                            journal.state, job_id=job_id, workflow_sha256="w" * 64, at=1.0
                        )
                    )
                await journal.append(ev.JobCancelled(job_id="j1", reason="t", at=2.0))  # raises
                await journal.append(ev.JobCancelled(job_id="j2", reason="t", at=2.0))
                await trio.sleep(0.01)
                stale = set(index.active)
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            failed.append(exc)
    # Today: nothing raised, and j2 (cancelled in the log) is still "active" in the index.
    assert failed, f"the listener's failure was swallowed; the index is stale: {stale}"


async def test_a_failing_index_listener_fails_the_service_instead_of_refusing_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Service level: once follow_jobs' listener is dropped (job_ended raised once), jobs
    that end are never taken out of the index: with max_queue=2 the service answers 429
    queue_full to every submission although no job is queued or running. The failure must
    surface (the service fails with it) instead."""
    forget = Previews.forget
    raised: list[str] = []

    def flaky(self: Previews, job_id: str) -> None:
        if not raised:
            raised.append(job_id)
            raise RuntimeError("forget broke once")
        forget(self, job_id)

    monkeypatch.setattr(Previews, "forget", flaky)
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    surfaced = False
    with trio.fail_after(900):
        try:
            async with open_extras_service(tmp_path, settings=Settings(max_queue=2)) as run:
                for _ in range(3):  # the first job's end drops the listener; two more run
                    answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                    assert answer.status_code == 201, answer.text
                    job_id = answer.json()["id"]
                    await wait_for(run.service, lambda s, j=job_id: s.jobs[j].status == "succeeded")
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                # Today: 429 queue_full, index.active = the last two jobs, all succeeded.
                pytest.fail(
                    f"listener failure swallowed: {answer.status_code} "
                    f"{answer.json().get('error')}, index.active={run.service.index.active}"
                )
        except* RuntimeError as group:
            surfaced = group.subgroup(lambda e: "forget broke once" in str(e)) is not None
    assert surfaced
