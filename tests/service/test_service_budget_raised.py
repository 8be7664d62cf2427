"""A budget exceeded in a service that runs for days is not the end: once the operator
raises it (``PUT /api/conjure/budget``), new jobs get machines again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from extras_support import open_extras_service, png, wait_for, wait_idle

PROMPT = "a carved wooden fox"


async def _submit(run: Any) -> str:
    r = await run.client.post(
        "/api/conjure/jobs",
        files={"image": ("sketch.png", png(), "image/png")},
        data={"prompt": PROMPT},
    )
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_raised_budget_lets_new_jobs_run_after_one_was_exceeded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_extras_service(tmp_path) as run:
        first = await _submit(run)
        await wait_for(run.service, lambda s: s.jobs[first].status == "running")
        r = await run.client.put("/api/conjure/budget", json={"usd": 0.000001})
        assert r.status_code == 200
        await wait_idle(run.service)
        assert run.service.state.budget.exceeded
        assert run.service.state.jobs[first].status == "cancelled"
        r = await run.client.put("/api/conjure/budget", json={"usd": None})
        assert r.status_code == 200
        second = await _submit(run)
        await wait_idle(run.service)
        assert run.service.state.jobs[second].status == "succeeded", run.service.state.jobs[
            second
        ].error
