"""``POST /api/conjure/estimate``'s ``within_budget`` agrees with what the budget then does:
a job that needs a launch the budget refuses is not "within budget"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service, wait_idle

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_job_whose_launch_the_budget_would_refuse_is_not_within_budget(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A budget above the job's estimate but below the lease its launch commits: the
    estimate said ``within_budget: true``, and the job then failed for the budget."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            body = (await run.client.post("/api/conjure/estimate", json={})).json()
            usd = (body["estimate_micros"] + 1_000) / 1_000_000  # the job fits, a lease not
            assert (await run.client.put("/api/conjure/budget", json={"usd": usd})).is_success
            body = (await run.client.post("/api/conjure/estimate", json={})).json()
            r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            job_id = r.json()["id"]
            await wait_idle(run.service)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "insufficient_credits"
    assert body["within_budget"] is False
