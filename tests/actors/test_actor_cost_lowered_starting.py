"""A budget lowered while a machine is still Starting (free to stop: RunComfy bills from
Ready) stops it before it turns Ready when its first lease no longer fits, and the job
waiting for it fails ``BudgetRefused``, unpaid, as a refused launch (QA G15: it turned
Ready, took the job, billed to the lowered limit, and the job was cancelled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event

DONE = ("succeeded", "failed", "cancelled")


async def test_a_budget_lowered_under_a_starting_machine_stops_it_unbilled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, ready_delay=20.0) as cloud,
        run_conjure(
            cloud, log, tmp_path, sim_config(cloud, max_machines=1, budget=1.0), wall
        ) as conjure,
    ):
        job = await conjure.submit(
            json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
        )
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: bool(s.machines))
            await conjure.set_budget(0.01)  # PUT /api/conjure/budget: less than a lease
            await wait_for(conjure, lambda s: s.jobs[job].status in DONE)
            await wait_for(conjure, lambda s: all(m.stopped_at for m in s.machines.values()))
        state = conjure.state
    assert state.jobs[job].status == "failed"
    assert state.jobs[job].error.error_type == "BudgetRefused"
    (machine,) = state.machines.values()
    assert machine.stop_reason == "budget"
    assert machine.service_ready_at is None  # never Ready: never billed
    assert not [r for r in log.records() if isinstance(r.event, ev.MachineReady)]
