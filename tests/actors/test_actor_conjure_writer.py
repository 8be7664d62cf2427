"""A run's start records the process that writes it, so that a start on a copy of its log
made meanwhile can tell that process still runs (QA8 Q2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event, SystemStarted
from conjure_actors.runtime.process import this_process


async def test_a_runs_start_names_the_process_that_writes_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Its SystemStarted holds this process's host name, pid, start time and boot."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(600):
        async with (
            open_test_cloud(wall.now) as cloud,
            run_conjure(cloud, log, tmp_path, sim_config(cloud), wall),
        ):
            pass
    (start,) = [r.event for r in log.records() if isinstance(r.event, SystemStarted)]
    me = this_process()
    recorded = (start.writer_host, start.writer_pid, start.writer_started, start.writer_boot_id)
    assert recorded == (me.host, me.pid, me.started, me.boot_id)
