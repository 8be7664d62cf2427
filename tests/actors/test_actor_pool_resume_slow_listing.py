"""A restart whose listings RunComfy slows (429s) keeps the log's machines for its jobs.

The log says a machine is Starting; it became Ready (billing) while the run was down. The
poll timer ticks while the start-up's listing, or the recovery's, is still being retried
through the rate limit: judged then, on the log's stale "Starting", the machine was stopped
as surplus (billed for nothing) before the recovery had even listed it, and the waiting job
launched a new one, a whole boot later (QA session 27, F1 addendum 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    crash_when,
    open_test_cloud,
    run_conjure,
    sim_config,
    submit_sketches,
    wait_for,
)

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event


def _after(log: eventlog.MemoryLog[Any], seq: int, kind: type) -> list[Any]:
    return [r.event for r in log.records() if r.seq > seq and isinstance(r.event, kind)]


def _slow_listings(cloud: Any, log: eventlog.MemoryLog[Any], *, skip: int, count: int) -> None:
    """Once the log holds a second ``SystemStarted`` (or at once with ``skip`` < 0: during
    the restart's start-up), answer ``count`` listings (``GET /servers``) with 429, after
    letting ``skip`` through."""
    sim = cloud.runcomfy
    handle = sim._handle
    left = {"skip": skip, "count": count}

    def slowed(scope: Any, body: bytes) -> Any:
        listing = scope["method"] == "GET" and scope["path"].rstrip("/").endswith("/servers")
        started = sum(isinstance(r.event, ev.SystemStarted) for r in log.records())
        if listing and left["count"] > 0 and (skip < 0 or started >= 2):
            if left["skip"] > 0:
                left["skip"] -= 1
            else:
                left["count"] -= 1
                sim._rate_limited += 1
                raise sim._too_many(2.0)
        return handle(scope, body)

    sim._handle = slowed


async def _resume_with_slow_listings(tmp_path: Path, *, skip: int) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=60.0) as cloud:
        config = sim_config(cloud, max_machines=1, poll_interval=2.0)
        jobs: list[str] = []

        async def booting(conjure: Any) -> None:
            jobs.extend(await submit_sketches(conjure, 1))
            with trio.fail_after(600):
                await wait_for(
                    conjure, lambda s: any(m.status == "starting" for m in s.machines.values())
                )

        await crash_when(cloud, log, tmp_path, config, wall, booting)
        await trio.sleep(120)  # down: the machine becomes Ready (billing) meanwhile
        (booted,) = cloud.running()
        log = log.reopen()
        crashed_at = log.last_seq
        _slow_listings(cloud, log, skip=skip, count=12)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert cloud.running() == []
    surplus = [e for e in _after(log, crashed_at, ev.MachineStopping) if e.reason == "surplus"]
    assert surplus == []
    assert _after(log, crashed_at, ev.MachineLaunchRequested) == []
    (job,) = jobs
    assert state.jobs[job].status == "succeeded"
    assert state.jobs[job].server_id == booted


@pytest.mark.slow
async def test_a_tick_while_the_start_up_listing_is_rate_limited_stops_no_machine_of_the_log(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The start-up's credential listing is retried through 429s for longer than a poll
    interval: the ticks meanwhile (before the recovery begins) stop nothing."""
    await _resume_with_slow_listings(tmp_path, skip=-1)


async def test_a_tick_while_the_recovery_listing_is_rate_limited_stops_no_machine_of_the_log(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The recovery's listing is retried through 429s for longer than a poll interval: the
    ticks meanwhile stop nothing; the machine, Ready in truth, runs the resumed job."""
    await _resume_with_slow_listings(tmp_path, skip=0)
