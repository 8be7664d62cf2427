"""The runtime's budget stop reaches the MachineActor even when its mailbox is full."""

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
from conjure_actors.actors.messages import StopAllMachines, StopLaunching
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.runtime import ActorRef
from conjure_actors.runtime.errors import MailboxFullError
from conjure_actors.sim.comfyui import ComfyTimings


async def test_the_budget_stop_is_delivered_through_a_full_pool_mailbox(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget is exceeded while the MachineActor's mailbox is full (a ``tell_nowait``
    to it would raise ``MailboxFullError``): the stop waits for room instead of being
    dropped (or crashing the CostActor), so every machine is stopped and the job ends."""
    real = ActorRef.tell_nowait
    refused: list[str] = []

    def full_for_stops(self: ActorRef, msg: object) -> None:
        if isinstance(msg, StopAllMachines | StopLaunching):
            refused.append(type(msg).__name__)
            raise MailboxFullError(f"mailbox of actor {self.path} is full")
        real(self, msg)

    monkeypatch.setattr(ActorRef, "tell_nowait", full_for_stops)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    slow = ComfyTimings(scale=10_000.0)  # the job would run for hours
    async with open_test_cloud(wall.now, timings=slow) as cloud:
        config = sim_config(cloud, max_machines=1, lease_seconds=3600.0)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
            )
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "running")
                await trio.sleep(60)
                await conjure.set_budget(0.001)  # already spent more
                await wait_for(conjure, lambda s: s.budget.exceeded)
                await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
                await wait_for(
                    conjure, lambda s: all(m.status == "stopped" for m in s.machines.values())
                )
            assert cloud.running() == []
            assert conjure.state.system.stop_reason is None  # the run itself goes on
        assert refused == []  # never tried: it cannot drop a stop
