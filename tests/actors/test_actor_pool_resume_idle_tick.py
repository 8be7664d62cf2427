"""A job the log re-queues takes the machine the log left idle, even when the restart comes
after its idle timeout and RunComfy rate-limits the start-up's or the recovery's listing
(review, session 27): a tick, or a poll that listed first, idle-stopped it on the log's
stale state before the recovery had listed it or the job had asked, and the job waited a
boot on a second paid machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for
from test_actor_pool_resume_slow_listing import _slow_listings

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event

IDLE = 60.0
DOWN = 100.0


@pytest.mark.slow
@pytest.mark.parametrize("skip", [None, -1, 0])
async def test_resumed_job_gets_the_idle_adopted_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, skip: int | None
) -> None:
    """``skip``: which listing RunComfy rate-limits (-1: the start-up's, 0: the recovery's;
    None: none); the only stop is the run's own, and the job ran on the log's machine."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(
            cloud, max_machines=1, idle_timeout=IDLE, lease_seconds=3600.0, poll_interval=2.0
        )
        second = ""

        async def until_done(conjure: Any) -> None:
            nonlocal second
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
            )
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: (
                        s.jobs[job].status == "succeeded"
                        and all(m.idle_since is not None for m in s.machines.values())
                    ),
                )
            second = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="y"
            )

        await crash_when(cloud, log, tmp_path, config, wall, until_done)
        log = log.reopen()
        crashed_at = log.last_seq
        (released,) = [r.event for r in log.records() if isinstance(r.event, ev.MachineReleased)]
        await trio.sleep(DOWN)
        if skip is not None:
            _slow_listings(cloud, log, skip=skip, count=12)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[second].status == "succeeded")
            state = conjure.state
            await conjure.shutdown()
        stops = [
            r.event
            for r in log.records()
            if r.seq > crashed_at and isinstance(r.event, ev.MachineStopping)
        ]
        assert [s.reason for s in stops] == ["done"], stops
        assert state.jobs[second].server_id == released.server_id
