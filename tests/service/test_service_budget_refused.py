"""A job the budget left without a machine (its launch refused, none running) reads on
``GET /api/v2/jobs/{id}`` as the budget's other refusals do: ``insufficient_credits``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service, wait_idle

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_job_whose_launch_the_budget_refused_fails_insufficient_credits(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A budget below one lease: the job fails with code ``insufficient_credits`` (it was
    ``no_machine``, "...: budget"), its message the figures and what to do."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            r = await run.client.put("/api/conjure/budget", json={"usd": 0.01})
            assert r.status_code == 200
            r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            job_id = r.json()["id"]
            await wait_idle(run.service)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "insufficient_credits"
    message = job["error"]["message"]
    assert "the budget cannot cover a launch: needs $" in message
    assert "of the $0.0100 budget left after $0.0000 spent" in message
    assert message.endswith("PUT /api/conjure/budget)")
