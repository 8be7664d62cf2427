"""open_conjure's start-up: what it depends on is checked before the log says the run began."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.conjure import ATTACH_PROBE_SECONDS
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event, MachineLaunchRequested, SystemStarted
from conjure_actors.domain.state import RESUMABLE_STATUSES
from conjure_actors.errgroups import meaningful
from conjure_actors.errors import UsageError


async def test_an_attached_comfyui_that_does_not_answer_is_the_usage_error_itself(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A dev machine that does not answer ends the start with the UsageError itself (no
    shutdown, no RunStoppedError), and the log never says the run started."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)

    async def start() -> None:
        async with (
            open_test_cloud(wall.now) as cloud,
            run_conjure(
                cloud, log, tmp_path, sim_config(cloud), wall, attach={"dev": "http://dev.invalid"}
            ),
        ):
            pytest.fail("the run started without its dev machine")

    # The test's cloud and journal run nurseries: what leaves them is a group.
    with trio.fail_after(600), pytest.raises(ExceptionGroup) as raised:
        await start()
    leaf = meaningful(raised.value)
    assert isinstance(leaf, UsageError)
    assert str(leaf).startswith("dev machine dev does not answer GET /system_stats")
    assert not [r for r in log.records() if isinstance(r.event, SystemStarted)]


class _SilentHost(httpx.AsyncBaseTransport):
    """The cloud's transport, except for ``silent.invalid``: a server that accepts every
    request and never answers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "silent.invalid":
            await trio.sleep_forever()
        return await self.inner.handle_async_request(request)


async def test_an_attached_comfyui_that_never_answers_is_refused_within_the_probe_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A dev machine that accepts and never answers is refused after ATTACH_PROBE_SECONDS,
    saying so, not after every retry's full request timeout (minutes)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)

    async def start() -> None:
        async with open_test_cloud(wall.now) as cloud:
            silent = SimpleNamespace(
                http_transport=lambda: _SilentHost(cloud.http_transport()),
                ws_connect=cloud.ws_connect,
            )
            attach = {"dev": "http://silent.invalid"}
            async with run_conjure(silent, log, tmp_path, sim_config(cloud), wall, attach=attach):
                pytest.fail("the run started without its dev machine")

    began = trio.current_time()
    with pytest.raises(ExceptionGroup) as raised:
        await start()
    leaf = meaningful(raised.value)
    assert str(leaf) == (
        "dev machine dev does not answer GET /system_stats "
        f"(no answer within {ATTACH_PROBE_SECONDS:g} s): is it running?"
    )
    assert trio.current_time() - began < ATTACH_PROBE_SECONDS + 1


async def _crash_with_a_job_queued(
    cloud: Any, log: eventlog.MemoryLog[Any], out: Path, config: Any, wall: TrioWallClock
) -> str:
    """Submit one job and crash before its machine is asked for; returns the job's id."""
    from actor_support import crash_when

    from conjure_actors.actors.example import bundled_workflow, example_sketch_png

    job = ""

    async def submit(conjure: Any) -> None:
        nonlocal job
        graph = json.loads(bundled_workflow())
        job = await conjure.submit(graph, image=example_sketch_png(), prompt="a fox")

    await crash_when(cloud, log, out, config, wall, submit)
    assert not [r for r in log.records() if isinstance(r.event, MachineLaunchRequested)]
    return job


async def test_a_resume_told_it_is_stopping_launches_nothing_for_its_jobs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A resume whose caller is stopping (a signal came during start-up) starts no
    resumed job: no launch is asked for, no machine runs, and the job stays unfinished."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        job = await _crash_with_a_job_queued(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        with trio.fail_after(600):
            async with run_conjure(
                cloud, log, tmp_path, config, wall, hold_resumed=lambda: True
            ) as conjure:
                await trio.sleep(300)  # a launch asked for at start-up would be under way
                state = conjure.state
            assert cloud.running() == []
        assert not [r for r in log.records() if isinstance(r.event, MachineLaunchRequested)]
        assert state.jobs[job].status in RESUMABLE_STATUSES


async def test_a_job_held_at_a_stopped_start_up_runs_on_the_next_resume(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The job a stopping start-up held is resumable: the next resume runs it to the end."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        job = await _crash_with_a_job_queued(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall, hold_resumed=lambda: True):
            pass
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
        assert cloud.running() == []


async def _crash_with_a_launch_in_flight(
    cloud: Any, log: eventlog.MemoryLog[Any], out: Path, config: Any, wall: TrioWallClock
) -> tuple[str, str]:
    """Submit one job and crash once its launch intent is logged; returns the job's id and
    the intent's key."""
    from actor_support import crash_when, wait_for

    from conjure_actors.actors.example import bundled_workflow, example_sketch_png

    job = ""

    async def launching(conjure: Any) -> None:
        nonlocal job
        graph = json.loads(bundled_workflow())
        job = await conjure.submit(graph, image=example_sketch_png(), prompt="a fox")
        with trio.fail_after(600):
            await wait_for(conjure, lambda s: bool(s.launch_requests))

    await crash_when(cloud, log, out, config, wall, launching, mode="simulated")
    (intent,) = [r.event for r in log.records() if isinstance(r.event, MachineLaunchRequested)]
    return job, intent.request_key


async def test_a_resume_on_a_fresh_simulated_cloud_closes_the_old_launches_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A simulated run crashed with a launch in flight; its embedded cloud ended with it.
    The resume, on a new embedded cloud (``fresh_cloud``), closes that intent at its
    reconcile (nothing can ever list its machine) instead of waiting NOT_VISIBLE_GRACE
    (60 s) for it, and the job runs to the end on a machine of the new cloud."""
    from conjure_actors.actors.pool import ORPHANED_LAUNCH
    from conjure_actors.domain.events import MachineLaunchFailed
    from conjure_actors.domain.machines_policy import NOT_VISIBLE_GRACE

    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as gone:
        job, key = await _crash_with_a_launch_in_flight(
            gone, log, tmp_path, sim_config(gone, max_machines=1), wall
        )
    log = log.reopen()
    async with open_test_cloud(wall.now) as cloud:
        t0 = trio.current_time()
        async with run_conjure(
            cloud,
            log,
            tmp_path,
            sim_config(cloud, max_machines=1),
            wall,
            mode="simulated",
            fresh_cloud=True,
        ) as conjure:
            # start-up (its reconcile) is over: the old launch is closed already
            assert trio.current_time() - t0 < NOT_VISIBLE_GRACE
            assert key not in conjure.state.launch_requests
            closed = [
                r.event
                for r in log.records()
                if isinstance(r.event, MachineLaunchFailed) and r.event.request_key == key
            ]
            assert [c.reason for c in closed] == [ORPHANED_LAUNCH]
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert cloud.running() == []
    assert state.jobs[job].status == "succeeded", state.jobs[job].error


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "simulated"}, {"mode": "runcomfy", "fresh_cloud": True}],
    ids=["not-fresh", "runcomfy"],
)
async def test_a_resume_not_on_a_fresh_simulated_cloud_keeps_the_old_launches_open_a_while(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    """The same resume without ``fresh_cloud``, or on RunComfy (never taken for fresh: a
    launch in flight may have started a machine a later listing shows): the intent stays
    open past the reconcile and is closed only after NOT_VISIBLE_GRACE; the job runs."""
    from conjure_actors.domain.events import MachineLaunchFailed
    from conjure_actors.domain.machines_policy import NOT_VISIBLE_GRACE

    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as gone:
        job, key = await _crash_with_a_launch_in_flight(
            gone, log, tmp_path, sim_config(gone, max_machines=1), wall
        )
    log = log.reopen()
    async with open_test_cloud(wall.now) as cloud:
        t0 = wall.now()
        async with run_conjure(
            cloud, log, tmp_path, sim_config(cloud, max_machines=1), wall, **kwargs
        ) as conjure:
            assert key in conjure.state.launch_requests
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert cloud.running() == []
    (closed,) = [
        r.event
        for r in log.records()
        if isinstance(r.event, MachineLaunchFailed) and r.event.request_key == key
    ]
    assert closed.reason == "no server found for this launch"
    assert closed.at - t0 >= NOT_VISIBLE_GRACE
    assert state.jobs[job].status == "succeeded", state.jobs[job].error
