"""An expired job leaves serve's state and job index (QA11 finding 8: every job the service
ever ran stayed in memory and in every snapshot), while what a client reads of it does not
change: its GET is 404 as an unknown job's, its Idempotency-Key is still refused until the
key's own expiry (a restart included), ``/metrics`` still counts it, and a page of the job
list that ended with it goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for, wait_idle
from test_metrics import samples

import eventlog
from conjure_actors.actors import assets as assets_actor
from conjure_actors.actors.assets import Retention, SweepNow
from conjure_actors.domain.events import Event
from conjure_actors.service.app import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SETTINGS = Settings(retention=Retention(jobs=60.0, assets=60.0))
SUCCEEDED = ("conjure_jobs", (("status", "succeeded"),))


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test's own ``SweepNow`` sweeps."""
    monkeypatch.setattr(assets_actor, "SWEEP_INTERVAL", 1e9)


async def _submit(run: Any, key: str) -> Any:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    return await run.client.post(
        "/api/v2/jobs", json={"workflow": graph}, headers={"Idempotency-Key": key}
    )


async def _reads(run: Any, job_id: str) -> dict[str, Any]:
    """What a client reads of the expired job (and of an unknown one, to compare)."""
    again = await _submit(run, "k1")
    metrics = samples((await run.client.get("/metrics")).text)
    return {
        "get": (await run.client.get(f"/api/v2/jobs/{job_id}")).status_code,
        "unknown": (await run.client.get(f"/api/v2/jobs/{job_id[:-1]}0")).status_code,
        "reuse": (again.status_code, again.json()["error"]["code"]),
        "succeeded": metrics[SUCCEEDED],
    }


async def test_an_expired_job_leaves_the_state_and_reads_as_before(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, log=log, settings=SETTINGS) as run:
            made = await _submit(run, "k1")
            assert made.status_code == 201, made.text
            job_id: str = made.json()["id"]
            await wait_idle(run.service)
            await wait_for(run.service, lambda s: s.service.api_jobs[job_id].ended)
            await trio.sleep(61)
            await run.service.assets.ask(SweepNow(), timeout=30)
            state, index = run.service.state, run.service.index
            left = (
                job_id in state.jobs,
                job_id in state.service.api_jobs,
                job_id in state.service.job_outputs,
                index.order(job_id),
                index.counts["succeeded"],
            )
            first = await _reads(run, job_id)
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen(), settings=SETTINGS) as run:
            await run.service.assets.ask(SweepNow(), timeout=30)
            after_restart = await _reads(run, job_id)
    assert left == (False, False, False, None, 0)
    assert first == {
        "get": 404,
        "unknown": 404,
        "reuse": (422, "idempotency_key_reuse"),
        "succeeded": 1.0,
    }
    assert after_restart == first, "the key stays claimed by the job that expired"


async def test_a_page_that_ended_with_a_job_that_expired_goes_on(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """``cursor`` = the last job of a page, which expired before the next page was asked:
    the next page holds the jobs submitted before it (not 422 ``invalid_cursor``)."""
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=SETTINGS) as run:
            older = (await _submit(run, "k-older")).json()["id"]
            newer = (await _submit(run, "k-newer")).json()["id"]
            await run.client.post(f"/api/v2/jobs/{newer}/cancel")  # ends first
            page = (await run.client.get("/api/v2/jobs?limit=1")).json()
            await wait_idle(run.service)
            api = run.service.state.service.api_jobs
            await wait_for(run.service, lambda s: api[older].ended and api[newer].ended)
            deadlines = (api[newer].expires_at, api[older].expires_at)
            await trio.sleep(deadlines[0] - run.wall.now() + 0.01)
            await run.service.assets.ask(SweepNow(), timeout=30)
            state = run.service.state
            kept = (newer in state.jobs, older in state.jobs)
            listed = await run.client.get(f"/api/v2/jobs?limit=1&cursor={newer}")
    assert [j["id"] for j in page["jobs"]] == [newer]
    assert deadlines[0] < deadlines[1]
    assert kept == (False, True)
    assert listed.status_code == 200, listed.text
    assert [j["id"] for j in listed.json()["jobs"]] == [older]
