"""Helpers for the actor tests: a runtime (open_conjure) over a MemoryLog journal against the
in-memory simulated cloud, all under MockClock. (Not ``conftest``: a test module imports
them by name, and another test folder has a conftest of its own.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import eventlog
from conjure_actors.actors.conjure import Conjure
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import Config, PoolConfig, RetryConfig, RunComfyConfig, Secret
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.runtime.events import ActorCrashed
from conjure_actors.testing import open_simulated_conjure
from conjure_actors.testing.runtime import open_conjure_on


async def _run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args)


def run_on_autojump(fn: Callable[..., Any], *args: Any) -> Any:
    """``trio.run(fn, *args)`` on an autojump MockClock, with worker threads run inline (as
    the ``autojump_clock`` fixture's tests do, tests/conftest.py says why): for property tests,
    which start a run per example. Under plain autojump a task waiting on an output's fsync
    counts as idle, and on a loaded machine mock time leaps ahead while the thread works."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trio.to_thread, "run_sync", _run_inline)
        return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def sim_config(cloud: Any, **pool: Any) -> Config:
    """A config aimed at ``cloud`` with test-friendly pool settings."""
    retry = pool.pop("retry", RetryConfig(initial=1.0, max_delay=5.0))
    budget = pool.pop("budget", None)
    base = Config(
        runcomfy=RunComfyConfig(
            user_id=cloud.user_id,
            api_token=Secret(cloud.token),
            base_url=cloud.base_url,
            workflow_version="wv-conjure-flux-mesh-1",
        ),
        pool=PoolConfig(**{"poll_interval": 2.0, "idle_timeout": 60.0, **pool}),
        retry=retry,
    )
    if budget is not None:
        base = attrs.evolve(base, budget=attrs.evolve(base.budget, usd=budget))
    return base


@asynccontextmanager
async def run_conjure(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    out_dir: Path,
    config: Config,
    wall: TrioWallClock,
    **kwargs: Any,
) -> AsyncIterator[Conjure]:
    """open_conjure over a journal on ``log`` (which may already hold a crashed run); on a
    clean exit, fails if an actor crashed (its supervisor's restart would hide the bug)."""
    async with open_simulated_conjure(
        cloud, log, config, wall=wall, out_dir=out_dir, **kwargs
    ) as conjure:
        yield conjure
    crashes = [r.event for r in log.records() if isinstance(r.event, ActorCrashed)]
    assert crashes == [], crashes


OpenCloud = Callable[..., Any]


async def wait_for(conjure: Conjure, predicate: Callable[[Any], bool]) -> None:
    """Wait until ``predicate(conjure.state)`` holds (checked after every record)."""
    async with conjure.journal.subscribe(max_buffer=float("inf")) as records:
        while not predicate(conjure.state):
            await records.receive()


async def crash_when(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    out_dir: Path,
    config: Config,
    wall: TrioWallClock,
    body: Callable[[Conjure], Any],
    **kwargs: Any,
) -> None:
    """Run ``body(conjure)``; when it returns, crash: drop what is not durable, then tear
    the runtime down (the journal stays open around it, failing every later append, as a
    dead process would write nothing more). ``kwargs`` go to ``open_conjure_on``."""
    async with eventlog.open_journal(
        log, Event, apply=apply, initial=initial_state(), clock=wall.now
    ) as journal:
        with trio.CancelScope() as scope:
            try:
                async with open_conjure_on(
                    cloud, journal, config, wall=wall, out_dir=out_dir, **kwargs
                ) as conjure:
                    await body(conjure)
                    log.crash()
                    scope.cancel()
            except* eventlog.EventLogError:
                pass  # appends refused by the crashed log: the dead process wrote nothing


async def crash_while_running(
    cloud: Any, log: eventlog.MemoryLog[Any], out_dir: Path, config: Config, wall: TrioWallClock
) -> str:
    """Run one job of the bundled workflow until its prompt runs, then crash (as
    :func:`crash_when`); the job's id."""
    job = ""

    async def until_started(conjure: Conjure) -> None:
        nonlocal job
        graph = json.loads(bundled_workflow())
        job = await conjure.submit(graph, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

    await crash_when(cloud, log, out_dir, config, wall, until_started)
    return job


@asynccontextmanager
async def open_test_cloud(
    wall: Any,
    *,
    ready_delay: float = 60.0,
    rc_faults: Any = None,
    comfy_faults: Any = None,
    timings: Any = None,
) -> AsyncIterator[Any]:
    """The simulated cloud for actor tests (in memory, on the test's wall clock)."""
    from conjure_actors.sim.cloud import CloudFaults, CloudTimings, open_simulated_cloud
    from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings
    from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings

    faults = CloudFaults(
        runcomfy=rc_faults or RunComfyFaults(), comfyui=comfy_faults or ComfyFaults()
    )
    cloud_timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=ready_delay), comfyui=timings or ComfyTimings()
    )
    async with open_simulated_cloud(
        seed=3, faults=faults, timings=cloud_timings, wall=wall
    ) as cloud:
        yield cloud


def event_names(log: eventlog.MemoryLog[Any], job: str) -> list[str]:
    """The type names of ``job``'s events in ``log``, in order."""
    return [
        type(r.event).__name__ for r in log.records() if getattr(r.event, "job_id", None) == job
    ]


def task_names(part: str) -> list[str]:
    """The names of the running tasks whose name contains ``part``, sorted."""
    names: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if part in task.name:
            names.append(task.name)
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return sorted(names)


async def submit_sketches(conjure: Conjure, n: int = 1, priority: int = 0) -> list[str]:
    """Submit ``n`` jobs of the bundled CONJURE workflow (the example sketch, prompt "x")."""
    graph = json.loads(bundled_workflow())
    return [
        await conjure.submit(graph, image=example_sketch_png(), prompt="x", priority=priority)
        for _ in range(n)
    ]


async def second_attempt_submitted(conjure: Conjure, log: eventlog.MemoryLog[Any], job: str) -> str:
    """Wait until ``job``'s second attempt has submitted its prompt; the first one's id."""
    with trio.fail_after(3600):
        await wait_for(
            conjure,
            lambda s: s.jobs[job].attempt == 2 and s.jobs[job].execution == "submitted",
        )
    return next(
        r.event.prompt_id for r in log.records() if type(r.event).__name__ == "PromptSubmitting"
    )


async def assert_prompt_stopped(cloud: Any, conjure: Conjure, job: str, first: str) -> Any:
    """30 s on, ``job``'s machine no longer runs prompt ``first`` (or was told to stop it:
    the simulator honours it at its next node step); returns the machine's simulator."""
    sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
    await trio.sleep(30)
    running = sim._running
    assert conjure.state.jobs[job].prompt_id != first
    assert running is None or running.prompt_id != first or sim._interrupt, (
        f"prompt {first[:8]} still runs on the paid machine; queue: {sim.queue_remaining}"
    )
    return sim


def prompt_left(sim: Any, prompt_id: str) -> str | None:
    """Whether prompt ``prompt_id`` waits in the machine's queue (``"pending"``) or runs there
    uninterrupted (``"running"``); None when it is neither (gone, or told to stop)."""
    if prompt_id in [item.prompt_id for *_, item in sim._pending]:
        return "pending"
    running = sim._running
    if running is not None and running.prompt_id == prompt_id and not sim._interrupt:
        return "running"
    return None
