"""serve's health probe says when launching stopped because launches kept failing (the jobs
waiting then failed; QA found a serve answering ``ok`` while it refused every job), and is
``ok`` again once the next job launches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from extras_support import open_extras_service, wait_for

from conjure_actors.config import Config, PoolConfig
from conjure_actors.domain import state as st

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def _graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())
    return graph


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_health_is_degraded_while_launches_keep_failing(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Boots end in Error: the job fails, the probe is 200 ``degraded`` naming it; the cloud
    heals, the next job runs, the probe is ``ok``."""
    config = Config(pool=PoolConfig(max_launch_attempts=2, max_machines=1))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            rc = run.cloud.runcomfy
            rc.faults = attrs.evolve(rc.faults, launch_error_rate=1.0)
            first = (await run.client.post("/api/v2/jobs", json={"workflow": _graph()})).json()
            await wait_for(run.service, lambda s: s.jobs[first["id"]].status == st.FAILED)
            degraded = (await run.client.get("/api/v2/health")).json()
            rc.faults = attrs.evolve(rc.faults, launch_error_rate=0.0)
            second = (await run.client.post("/api/v2/jobs", json={"workflow": _graph()})).json()
            await wait_for(run.service, lambda s: s.jobs[second["id"]].status == st.SUCCEEDED)
            healthy = (await run.client.get("/api/v2/health")).json()
    assert degraded["status"] == "degraded"
    assert "2 launches in a row never became Ready" in degraded["reason"]
    assert "next job submitted launches again" in degraded["reason"]
    assert healthy["status"] == "ok"
