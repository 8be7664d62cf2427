"""``queue_position`` is 1 for the next job to run (QA6's F6), as the peer comfy-api-proxy
counts it: a page's "you are #N in line" and its ``if (job.queue_position)`` hold for the
next job too (it read 0)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import trio
from extras_support import open_extras_service

from conjure_actors.config import Config

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_the_next_job_to_run_is_at_position_1(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No machine yet: the first job submitted waits at 1, the second at 2 (submission
    answer and poll alike)."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    config = Config()
    config = attrs.evolve(config, pool=attrs.evolve(config.pool, max_machines=1))
    async with open_extras_service(tmp_path, config=config) as run:
        first = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()
        await trio.sleep(0.01)  # submitted at distinct times: the queue's order
        second = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()
        polled = (await run.client.get(f"/api/v2/jobs/{first['id']}")).json()
    assert (first["status"], first["queue_position"]) == ("queued", 1)
    assert (second["status"], second["queue_position"]) == ("queued", 2)
    assert polled["queue_position"] in (1, None)  # 1 while it waits; None once it runs
