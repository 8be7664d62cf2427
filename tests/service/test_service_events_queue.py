"""A queued job's event stream sends its ``queue_position`` as it moves (the contract's
``x-sse-events.status``: "including ... queue_position updates while queued"); QA's D4: the
stream sent ``queued, 3`` then ``running``, nothing as the jobs ahead were canceled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from extras_support import open_extras_service, sse_events, wait_for

from conjure_actors.config import Config
from conjure_actors.domain import state as st
from conjure_actors.sim.timings import ComfyTimings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


@pytest.mark.slow
async def test_a_queued_jobs_stream_sends_each_new_queue_position(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """One machine, five jobs: the last one's stream says 4, 3, 2, 1 as the three queued
    before it are canceled one by one, then ``running`` once the first is canceled."""
    graph = json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())
    config = Config()
    config = attrs.evolve(config, pool=attrs.evolve(config.pool, max_machines=1))
    got: list[Any] = []
    with trio.fail_after(3600):
        async with open_extras_service(
            tmp_path, config=config, comfy=ComfyTimings(scale=100)
        ) as run:
            ids = []
            for _ in range(5):
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
                await trio.sleep(0.01)  # submitted at distinct times: the queue's order
            await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.RUNNING)
            last = ids[-1]
            polled = []

            async def watch() -> None:
                got.extend(await sse_events(run.app, f"/api/v2/jobs/{last}/events"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.testing.wait_all_tasks_blocked()  # the stream sent its snapshot
                for job_id in ids[1:4]:
                    await run.client.post(f"/api/v2/jobs/{job_id}/cancel")
                    await wait_for(
                        run.service, lambda s, j=job_id: s.jobs[j].status == st.CANCELLED
                    )
                    await trio.testing.wait_all_tasks_blocked()  # the stream's turn
                    polled.append((await run.client.get(f"/api/v2/jobs/{last}")).json())
                await run.client.post(f"/api/v2/jobs/{ids[0]}/cancel")
                await wait_for(run.service, lambda s: s.jobs[last].status == st.RUNNING)
                await trio.testing.wait_all_tasks_blocked()  # the stream's turn
                await run.client.post(f"/api/v2/jobs/{last}/cancel")
    assert [(p["status"], p["queue_position"]) for p in polled] == [
        ("queued", 3),
        ("queued", 2),
        ("queued", 1),
    ]
    statuses = [(d["status"], d["queue_position"]) for _, name, d in got if name == "status"]
    assert statuses[:5] == [
        ("queued", 4),
        ("queued", 3),
        ("queued", 2),
        ("queued", 1),
        ("running", None),
    ], statuses
