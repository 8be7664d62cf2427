"""Near the budget, a busy machine whose whole lease renewal does not fit is renewed for
what the budget still covers, so its job finishes (QA G13: it died at its lease's end
mid-job with budget left that would have finished it; the work paid and thrown away)."""

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
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import budget_micros, spent_micros
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

DONE = ("succeeded", "failed", "cancelled")


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_busy_machine_is_renewed_for_what_the_budget_covers_and_its_job_finishes(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # medium ($0.99/h), 40 s lease (to 37 s from Ready) renewed 15 s before its end; the
    # job runs to ~53 s from Ready. $0.0165: the first lease ($0.0102) and ~23 s more; a
    # whole renewal (40 s from the ask, ~23 s from Ready: to ~63 s, $0.0173) does not fit.
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, ready_delay=3.0, timings=ComfyTimings.real(scale=0.35)) as cloud,
        run_conjure(
            cloud,
            log,
            tmp_path,
            sim_config(cloud, max_machines=1, lease_seconds=40.0, renew_margin=15.0, budget=0.0165),
            wall,
        ) as conjure,
    ):
        job = await conjure.submit(
            json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
        )
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].status in DONE)
            await wait_for(conjure, lambda s: all(m.stopped_at for m in s.machines.values()))
        state = conjure.state
        spent = spent_micros(state, conjure.ctx.now())
    assert state.jobs[job].status == "succeeded"
    (renewed,) = [r.event for r in log.records() if isinstance(r.event, ev.LeaseRenewed)]
    (machine,) = state.machines.values()
    assert machine.service_ready_at is not None
    assert renewed.estimated_stopping_at - machine.service_ready_at < 63  # not a whole lease
    limit = budget_micros(0.0165)
    assert limit is not None
    assert spent <= limit
