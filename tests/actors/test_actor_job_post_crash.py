"""A job actor that crashes while its POST /prompt is in flight is restarted within
POST_PATIENCE, not held until POST_CAP (found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, sim_config

import eventlog
from conjure_actors.actors import job as job_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import ActorCrashed, Event
from conjure_actors.sim.comfyui import TEXT_TYPE, ComfyTimings, ComfyUISim
from conjure_actors.testing import open_simulated_conjure

GRAPH = json.loads(bundled_workflow())


class _Boom:
    """A message the job actor's handler fails on (an unexpected bug)."""


async def test_a_job_crashing_during_its_post_restarts_within_post_patience(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """on_stop calls _bound_posts ("the incarnation ended: POST_PATIENCE more, no longer"),
    but the runtime runs on_stop only after the actor's nursery closed, i.e. after the
    shielded POST ended: a crashed incarnation is held up to POST_CAP (300 s), not 30 s."""
    real_http = ComfyUISim._http
    posting = trio.Event()

    async def http(self: Any, method: str, path: str, *args: Any) -> Any:
        if method == "POST" and self._strip_api(path) == "/prompt":
            posting.set()
            return 429, b"429: Too Many Requests", TEXT_TYPE, [(b"retry-after", b"120")]
        return await real_http(self, method, path, *args)

    monkeypatch.setattr(ComfyUISim, "_http", http)
    original = job_module.WorkflowActor._handle

    async def handle(self: Any, msg: Any) -> Any:
        if isinstance(msg, _Boom):
            raise RuntimeError("injected")
        return await original(self, msg)

    monkeypatch.setattr(job_module.WorkflowActor, "_handle", handle)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    crashed_at: float | None = None
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=1.0)) as cloud,
        open_simulated_conjure(
            cloud, log, sim_config(cloud, max_machines=1), wall=wall, out_dir=tmp_path
        ) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await posting.wait()
        await conjure._job_refs[job].tell(_Boom())
        t0 = trio.current_time()
        async with conjure.journal.subscribe(max_buffer=float("inf")) as records:
            with trio.fail_after(3600):
                while crashed_at is None:
                    record = await records.receive()
                    if isinstance(record.event, ActorCrashed):
                        crashed_at = trio.current_time()
    assert crashed_at is not None
    assert crashed_at - t0 <= job_module.POST_PATIENCE + 1, (
        f"the crash was contained (ActorCrashed, restart) only {crashed_at - t0:.0f} s later"
    )
