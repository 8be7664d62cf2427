"""The pool serves the jobs waiting for a machine in one order, the one the service's
``queue_position`` counts by (``state.queue_key``: priority first, then submission order),
whatever queued them: their submission, a requeue, a restart's resume (QA11 F5: after a
restart the job that had been running, submitted first, ran last while the API said it was
next)."""

from __future__ import annotations

import itertools
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
from hypothesis import given
from hypothesis import strategies as hst

import eventlog
from conjure_actors.actors.messages import Reply
from conjure_actors.actors.pool import _queue_place, _Waiter, _WaitQueue
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.service.jobindex import JobIndex
from conjure_actors.sim.comfyui import ComfyTimings


def leases_in_queue_order(log: eventlog.MemoryLog[Any]) -> list[str]:
    """The jobs leased a machine, in the log's order, each checked against the queue the
    API showed just before it: at every lease, the waiting jobs in ``queue_position`` order
    are the order in which they are leased from then on (the leased one first; those the
    log leaves unleased last)."""
    records = [r.event for r in log.records()]
    leased = [e.job_id for e in records if isinstance(e, ev.MachineLeased)]
    state = initial_state()
    at = 0
    for event in records:
        if isinstance(event, ev.MachineLeased):
            waiting = JobIndex(state.jobs.values()).waiting()
            later = list(dict.fromkeys(j for j in leased[at:] if j in waiting))
            assert waiting[:1] == [event.job_id], (at, waiting)
            assert later == waiting[: len(later)], (at, waiting, later)
            at += 1
        apply(state, event)
    return leased


async def test_a_restart_serves_the_interrupted_jobs_in_submission_order(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Stopped while J1 runs and J2, J3 wait: the next run on the log serves J1, J2, J3 in
    that order (J1, requeued by its own actor, asks the pool last), as queue_position says at
    every step."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            jobs = await submit_sketches(conjure, 3)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[jobs[0]].execution == "started")
            await conjure.shutdown()
            assert [conjure.state.jobs[j].status for j in jobs] == ["interrupted"] * 3
        first_run = sum(isinstance(r.event, ev.MachineLeased) for r in log.records())
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 3
    assert leases_in_queue_order(log)[first_run:] == jobs


queues = hst.lists(
    hst.tuples(
        hst.integers(-1, 1),  # priority
        hst.sampled_from([5.0, 3.0, 3.0, 9.0]),  # submission clock time: ties, set back
        hst.booleans(),  # requeued: served once, then asks again after every other job
    ),
    min_size=1,
    max_size=8,
).flatmap(lambda jobs: hst.tuples(hst.just(jobs), hst.permutations(range(len(jobs)))))


@given(queues)
def test_the_pool_serves_in_the_order_queue_position_counts(
    drawn: tuple[list[tuple[int, float, bool]], list[int]],
) -> None:
    """For any mix of priorities, submission times and arrival order at the pool (requeues
    arriving last), the pool's queue serves the jobs in the order of their queue positions
    (``JobIndex``, as ``queue_position`` counts), which is priority, then submission order."""
    jobs, arrival = drawn
    state = initial_state()
    apply(state, ev.WorkflowRegistered(sha256="wf", name="wf", graph_json="{}", at=0.0))
    ids = [f"job-{n}" for n in range(len(jobs))]
    for job_id, (priority, at, _) in zip(ids, jobs, strict=True):
        apply(state, ev.JobSubmitted(job_id=job_id, workflow_sha256="wf", priority=priority, at=at))
        apply(state, ev.JobQueued(job_id=job_id, at=at))
    queue = _WaitQueue()
    seq = itertools.count()

    def ask(n: int) -> _Waiter:
        priority, order = _queue_place(state.jobs[ids[n]], 0)
        w = _Waiter(ids[n], "v1", priority, next(seq), Reply(), order=order)
        queue.append(w)
        return w

    asked = {n: ask(n) for n in arrival}
    for n in arrival:
        if jobs[n][2]:  # served (taken out of the queue), its machine lost: it asks again
            queue.remove(asked[n])
            ask(n)
    served = []
    while (w := queue.pop()) is not None:
        queue.remove(w)
        served.append(w.job_id)
    assert served == JobIndex(state.jobs.values()).waiting()
    by_priority = sorted(range(len(jobs)), key=lambda n: (-jobs[n][0], n))
    assert served == [ids[n] for n in by_priority]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_restart_keeps_a_free_machine_for_the_first_job_until_it_asks(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A crash while J1 runs (its machine then gone) and J2 waits, with a machine Ready and
    idle: at the restart J2 reaches the pool at once, J1 only once its actor requeued it;
    the idle machine goes to J1, submitted first, not to J2."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    jobs: list[str] = []
    slow = ComfyTimings(scale=100.0)  # J1 still runs once J2's first attempt was cancelled
    async with open_test_cloud(wall.now, ready_delay=120.0, timings=slow) as cloud:
        config = sim_config(cloud, max_machines=2, jobs_per_machine=1, idle_timeout=600.0)

        async def until_one_runs_and_one_waits(conjure: Any) -> None:
            first, spare = await submit_sketches(conjure, 2)
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: s.jobs[first].execution == "started" and s.jobs[spare].execution,
                )
            await conjure.cancel(spare)  # its machine stays, idle
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: sum(not m.leases for m in s.machines.values() if m.idle_since) == 1,
                )
            jobs.append(first)
            jobs.extend(await submit_sketches(conjure))

        await crash_when(cloud, log, out, config, wall, until_one_runs_and_one_waits)
        log = log.reopen()
        state = log_state(log)
        assert [state.jobs[j].status for j in jobs] == ["running", "queued"]
        cloud.runcomfy.vanish(state.jobs[jobs[0]].server_id)
        before = sum(isinstance(r.event, ev.MachineLeased) for r in log.records())
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 2
    assert leases_in_queue_order(log)[before:] == jobs


def log_state(log: eventlog.MemoryLog[Any]) -> Any:
    """The state ``log`` folds to."""
    state = initial_state()
    for record in log.records():
        apply(state, record.event)
    return state
