"""An idle machine adopted after a restart stops at its idle timeout counted from its last
release, as the log says, not from the restart: a process down longer than the timeout
finds the machine past it and stops it at once (each restart of a crash-looping service
kept it billing one more idle timeout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event

IDLE = 60.0
DOWN = 100.0  # the process is down this long, longer than the idle timeout


async def test_an_idle_machine_past_its_timeout_at_a_restart_is_stopped_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Released, then the process dies and restarts more than the idle timeout later: the
    adopted machine is stopped within a poll of the restart, not a whole idle timeout
    after it."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud, max_machines=1, idle_timeout=IDLE, lease_seconds=3600.0)

        async def until_done(conjure: Any) -> None:
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

        await crash_when(cloud, log, tmp_path, config, wall, until_done)
        log = log.reopen()
        (released,) = [r.event for r in log.records() if isinstance(r.event, ev.MachineReleased)]
        await trio.sleep(DOWN)
        restart = wall.now()
        assert released.at + IDLE < restart  # past its idle timeout at the restart
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.machines[released.server_id].status != "ready")
            await conjure.shutdown()
        (stopping,) = [r.event for r in log.records() if isinstance(r.event, ev.MachineStopping)]
        assert stopping.server_id == released.server_id
        assert stopping.at - restart < 10.0, (stopping.at - restart, stopping.reason)
