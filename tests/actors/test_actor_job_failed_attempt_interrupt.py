"""Every failed attempt whose prompt may still run stops it, not only a timed-out one: an
unknown outcome whose lookup fails, a resumed job whose lookup fails (found by review: the
old prompt ran on the paid machine for nobody and the retry's queued behind it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    assert_prompt_stopped,
    open_test_cloud,
    run_conjure,
    second_attempt_submitted,
    sim_config,
    wait_for,
)

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients import errors as cerr
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

SLOW = json.loads(bundled_workflow())


async def test_an_unknown_outcome_whose_lookup_fails_stops_its_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_submit = ComfyUIClient.submit
    real_find = ComfyUIClient.find_prompt
    calls = {"submit": 0, "find": 0}

    async def submit(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
        calls["submit"] += 1
        answer = await real_submit(self, *args, **kwargs)
        if calls["submit"] == 1:  # queued, but its answer is lost on the way back
            raise cerr.OutcomeUnknownError("POST /prompt: connection reset")
        return answer

    async def find_prompt(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
        calls["find"] += 1
        if calls["find"] == 1:  # the same blip
            raise cerr.TransportError("GET /queue: connection reset")
        return await real_find(self, *args, **kwargs)

    monkeypatch.setattr(ComfyUIClient, "submit", submit)
    monkeypatch.setattr(ComfyUIClient, "find_prompt", find_prompt)

    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        retry = RetryConfig(
            initial=1.0, max_attempts=2, attempt_timeout=600.0, total_timeout=3000.0
        )
        config = sim_config(cloud, max_machines=1, retry=retry)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            first = await second_attempt_submitted(conjure, log, job)
            await assert_prompt_stopped(cloud, conjure, job, first)


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_resumed_job_whose_lookup_fails_stops_its_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash while the prompt runs; on resume the lookup of the prompt (_find) fails once
    (a transient error): it is looked up again and followed (re-attached), until the
    attempt's deadline (this prompt runs longer); the job retries with a new prompt, and the
    old one must not keep running on the machine."""
    from actor_support import crash_when

    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        retry = RetryConfig(
            initial=1.0, max_attempts=3, attempt_timeout=600.0, total_timeout=3000.0
        )
        config = sim_config(cloud, max_machines=1, retry=retry)
        job = ""

        async def until_started(conjure: Any) -> None:
            nonlocal job
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

        await crash_when(cloud, log, tmp_path, config, wall, until_started)
        log = log.reopen()
        real_find = ComfyUIClient.find_prompt
        calls = {"find": 0}

        async def find_prompt(self: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
            calls["find"] += 1
            if calls["find"] == 1:
                raise cerr.TransportError("GET /queue: connection reset")
            return await real_find(self, *args, **kwargs)

        monkeypatch.setattr(ComfyUIClient, "find_prompt", find_prompt)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            first = conjure.state.jobs[job].prompt_id
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: (
                        s.jobs[job].prompt_id != first and s.jobs[job].execution == "submitted"
                    ),
                )
            await assert_prompt_stopped(cloud, conjure, job, first)
            assert calls["find"] >= 1
