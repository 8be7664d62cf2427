"""A POST /prompt in flight when the job's (or attempt's) deadline passes: the deadline still
holds, within POST_PATIENCE (found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.actors.job import POST_PATIENCE
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain.events import Event, PromptSubmitting
from conjure_actors.sim.comfyui import TEXT_TYPE, ComfyTimings, ComfyUISim

GRAPH = json.loads(bundled_workflow())


async def test_the_job_deadline_is_kept_while_its_post_is_rate_limited(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ComfyUI answers every POST /prompt 429 Retry-After: 120. The job's total timeout
    (200 s from submission) must still end the job at 200 s, as it did before 559774f."""
    real_http = ComfyUISim._http

    async def http(self: Any, method: str, path: str, *args: Any) -> Any:
        if method == "POST" and self._strip_api(path) == "/prompt":
            return 429, b"429: Too Many Requests", TEXT_TYPE, [(b"retry-after", b"120")]
        return await real_http(self, method, path, *args)

    monkeypatch.setattr(ComfyUISim, "_http", http)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=1.0)) as cloud:
        config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=200.0))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            t0 = trio.current_time()
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
            elapsed = trio.current_time() - t0
            failed = conjure.state.jobs[job]
    posted = [r.event for r in log.records() if isinstance(r.event, PromptSubmitting)]
    assert posted, "the POST was never tried"
    assert failed.error is not None
    assert failed.error.error_type == "Timeout"
    # 559774f/2f0950c: "the POST now has 30 s from its attempt's end" (the deadline ends it)
    assert elapsed <= 200.0 + POST_PATIENCE + 1, (
        f"the job failed {elapsed:.0f} s after submission (deadline 200 s)"
    )
