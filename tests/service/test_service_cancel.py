"""A cancel request made durable (ApiJobCancelRequested) is carried out even when the process
stopped before the runtime cancel: after the restart the job ends canceled, not succeeded
on a paid machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service, wait_for, wait_idle

import eventlog
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_durable_cancel_request_is_carried_out_after_a_restart(
    tmp_path: Path, autojump_clock: Any
) -> None:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    log = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            job_id = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]

            async def stopped_before_the_runtime_cancel(*args: Any, **kwargs: Any) -> None:
                await trio.sleep_forever()  # the process dies here (kill -9, OOM, a deploy)

            run.service.conjure.cancel = stopped_before_the_runtime_cancel
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.client.post, f"/api/v2/jobs/{job_id}/cancel")
                await wait_for(
                    run.service,
                    lambda s: s.service.api_jobs[job_id].cancel_requested_at is not None,
                )
                nursery.cancel_scope.cancel()
        async with open_extras_service(tmp_path, log=log) as run:
            seen = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()["status"]
            await wait_idle(run.service)
            await trio.sleep(5)
            final = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()["status"]
    assert seen == "canceling"
    assert final == "canceled", final


async def _running_job(run: Any) -> str:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    job_id: str = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]
    await wait_for(run.service, lambda s: s.jobs[job_id].status == "running")
    return job_id


async def test_a_job_the_budget_cancelled_says_so_in_its_error(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Canceled because the budget was spent: error insufficient_credits (it was null, as
    for the client's own cancel, which a client could not tell it from)."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            job_id = await _running_job(run)
            r = await run.client.put("/api/conjure/budget", json={"usd": 0.000001})
            assert r.status_code == 200
            await wait_idle(run.service)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] == "canceled"
    assert job["error"]["code"] == "insufficient_credits"
    assert "PUT /api/conjure/budget" in job["error"]["message"]


async def test_the_clients_own_cancel_keeps_a_null_error(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """POST .../cancel: canceled, error null, as the contract's cancel leaves it."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            job_id = await _running_job(run)
            await run.client.post(f"/api/v2/jobs/{job_id}/cancel")
            await wait_idle(run.service)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert (job["status"], job["error"]) == ("canceled", None)
