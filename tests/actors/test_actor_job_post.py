"""A job's ``POST /prompt``: not cut by its attempt's end (a request cut on our side may still
reach ComfyUI after the attempt's cleanup), yet never a reason for a job or a run to wait on
a machine that is gone, and never cut while its attempt lives (found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import TEXT_TYPE, ComfyTimings, ComfyUISim

SLOW = json.loads(bundled_workflow())


async def test_a_run_stopping_does_not_wait_on_a_post_that_hangs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machines are stopped at once: nothing can run there, so the POST is moot."""
    sent = trio.Event()

    async def submit(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
        sent.set()
        await trio.sleep_forever()  # a black hole: no answer, no error

    monkeypatch.setattr(ComfyUIClient, "submit", submit)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        with trio.fail_after(3600):
            async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
                await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
                await sent.wait()
                stopping = trio.current_time()
            stopped = trio.current_time()
    assert stopped - stopping < 5


async def test_a_long_retry_after_on_post_prompt_is_waited_out_within_its_attempt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ComfyUI answers the first POST 429 with Retry-After: 35 (nothing queued): the client
    waits it out and posts again, in the same attempt."""
    real_http = ComfyUISim._http
    posts: list[float] = []

    async def http(self: Any, method: str, path: str, *args: Any) -> Any:
        if method == "POST" and self._strip_api(path) == "/prompt":
            posts.append(trio.current_time())
            if len(posts) == 1:
                return 429, b"429: Too Many Requests", TEXT_TYPE, [(b"retry-after", b"35")]
        return await real_http(self, method, path, *args)

    monkeypatch.setattr(ComfyUISim, "_http", http)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=1.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert (state.status, state.attempt) == ("succeeded", 1)
    assert posts[1] - posts[0] >= 35
