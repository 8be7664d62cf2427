"""The starter starts together the job actors it has answers for at once (``spawn_many``):
one scheduler pass for all their ``on_start`` s, not a job supervisor round trip (five
passes) after another. Ten machines freed together then start their next jobs in step
(issue 16: started five passes apart, they never ran in step again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    event_names,
    open_test_cloud,
    run_conjure,
    sim_config,
    submit_sketches,
)

import eventlog
from conjure_actors.actors.job import WorkflowActor
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event


class _Passes(trio.abc.Instrument):
    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


async def test_queued_jobs_cancelled_at_once_have_their_actors_start_in_one_pass(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four queued jobs (no machine yet) cancelled one after the other: the starter takes
    the four answers together, their actors' on_start run in one pass, and each job ends
    cancelled once."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    passes = _Passes()
    trio.lowlevel.add_instrument(passes)
    started: dict[str, list[int]] = {}
    on_start = WorkflowActor.on_start

    async def noting(self: WorkflowActor) -> None:
        started.setdefault(self.job_id, []).append(passes.passes)
        await on_start(self)

    monkeypatch.setattr(WorkflowActor, "on_start", noting)
    async with open_test_cloud(wall.now, ready_delay=600.0) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            jobs = await submit_sketches(conjure, 4)
            await trio.testing.wait_all_tasks_blocked()
            for job in jobs:
                await conjure.cancel(job, "user")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            statuses = [conjure.state.jobs[j].status for j in jobs]
            await conjure.shutdown()
    assert statuses == ["cancelled"] * 4
    assert [event_names(log, j).count("JobCancelled") for j in jobs] == [1] * 4
    assert sorted(started) == sorted(jobs)
    assert len({at for runs in started.values() for at in runs}) == 1, started
