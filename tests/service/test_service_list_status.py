"""``GET /api/v2/jobs?status=queued,running`` (QA6's F2, parity with comfy-api-proxy): the
jobs whose API status is one of a comma list of the v2 statuses, newest first, paged by
cursor; an unknown status is 400. A filter within queued, running and canceling is
answered from the job index (its candidates cover every job the API says is so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from extras_support import open_extras_service, wait_for
from hypothesis import given, settings
from hypothesis import strategies as hs

from conjure_actors.config import Config
from conjure_actors.domain import state as st
from conjure_actors.service.jobindex import JobIndex
from conjure_actors.sim.timings import ComfyTimings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_the_list_filters_by_status_newest_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """One machine, five jobs: one runs, one is canceled, three wait. Each filter lists its
    jobs newest first; a comma list their union; pages of one follow the cursor."""
    graph = json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())
    config = Config()
    config = attrs.evolve(config, pool=attrs.evolve(config.pool, max_machines=1))
    async with open_extras_service(tmp_path, config=config, comfy=ComfyTimings(scale=100)) as run:
        ids = []
        for _ in range(5):
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            ids.append(answer.json()["id"])
            await trio.sleep(0.01)  # submitted at distinct times: the queue's order
        await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.RUNNING)
        await run.client.post(f"/api/v2/jobs/{ids[2]}/cancel")
        await wait_for(run.service, lambda s: s.jobs[ids[2]].status == st.CANCELLED)

        async def listed(**params: Any) -> list[str]:
            answer = await run.client.get("/api/v2/jobs", params=params)
            assert answer.status_code == 200, answer.text
            return [job["id"] for job in answer.json()["jobs"]]

        queued = await listed(status="queued")
        running = await listed(status="running")
        both = await listed(status="queued,running")
        canceled = await listed(status="canceled")
        repeated = await listed(status=["running", "canceled"])
        first = (
            await run.client.get("/api/v2/jobs", params={"status": "queued", "limit": 1})
        ).json()
        second = await listed(status="queued", limit=1, cursor=first["next_cursor"])
        await run.client.post(f"/api/v2/jobs/{ids[0]}/cancel")
    assert queued == [ids[4], ids[3], ids[1]]
    assert running == [ids[0]]
    assert both == [ids[4], ids[3], ids[1], ids[0]]
    assert canceled == [ids[2]]
    assert repeated == [ids[2], ids[0]]
    assert [job["id"] for job in first["jobs"]] == [ids[4]]
    assert second == [ids[3]]


async def test_an_unknown_status_is_400_naming_the_statuses(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_extras_service(tmp_path) as run:
        bad = await run.client.get("/api/v2/jobs", params={"status": "queued,pending"})
        empty = await run.client.get("/api/v2/jobs", params={"status": ""})
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == (
        "'status' names 'pending': use a comma list of queued, running, succeeded,"
        " canceling, canceled, failed, expired (e.g. status=queued,running)"
    )
    assert "\n" not in error["message"]
    assert empty.status_code == 400


_STATUS_STEPS = hs.lists(
    hs.tuples(hs.integers(0, 7), hs.sampled_from(st.JOB_STATUSES), hs.floats(0, 2000)),
    max_size=60,
)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(_STATUS_STEPS, hs.floats(0, 2000))
def test_the_indexs_candidates_cover_the_active_and_lately_succeeded_jobs(
    steps: list[tuple[int, str, float]], since: float
) -> None:
    """Whatever the order of status changes: the index's active jobs and those it says
    succeeded since ``since`` include every non-terminal job and every job that succeeded
    at or after ``since`` (within the horizon), and its order is the jobs' first-seen order."""
    jobs: dict[str, st.Job] = {}
    index = JobIndex()
    newest_end = 0.0
    for n, status, at in steps:
        job_id = f"job-{n}"
        job = jobs.get(job_id) or st.Job(job_id, "wf")
        finished = at if status in st.TERMINAL_STATUSES else None
        if status == job.status:
            finished = job.finished_at  # an update repeated: the job's end stays
        jobs[job_id] = attrs.evolve(job, status=status, finished_at=finished)
        if status == st.SUCCEEDED and job.status != st.SUCCEEDED:
            newest_end = max(newest_end, at)
        index.update(jobs[job_id])
    since = max(since, newest_end - 600.0)  # the index keeps ENDED_HORIZON of them
    candidates = index.active | set(index.succeeded_since(since))
    expected = {
        j.job_id
        for j in jobs.values()
        if j.status not in st.TERMINAL_STATUSES
        or (j.status == st.SUCCEEDED and j.finished_at is not None and j.finished_at >= since)
    }
    assert expected <= candidates
    assert sorted(jobs, key=lambda jid: index.order(jid) or 0) == list(jobs)
