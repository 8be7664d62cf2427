"""A queued job is state, not a live actor (issue 16): it waits as one entry in the pool's
queue, and its WorkflowActor starts only once a machine is leased to it (or briefly, to
write its cancellation or its timeout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    crash_when,
    event_names,
    open_test_cloud,
    run_conjure,
    sim_config,
    submit_sketches,
    task_names,
    wait_for,
)

import eventlog
from conjure_actors.actors.conjure import Conjure
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.runtime.events import ActorStarted
from conjure_actors.sim.comfyui import ComfyTimings


def _started(log: eventlog.MemoryLog[Any], job: str) -> int:
    """How many times the job's actor was started (ActorStarted of ``.../<job>``)."""
    return sum(
        isinstance(r.event, ActorStarted) and r.event.actor.endswith(f"/{job}")
        for r in log.records()
    )


async def test_a_queued_job_has_no_actor_and_no_task(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """While jobs wait for a machine none has an actor or a task; they run once leased."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            jobs = await submit_sketches(conjure, 2)
            await trio.testing.wait_all_tasks_blocked()
            assert [conjure.state.jobs[j].status for j in jobs] == ["queued"] * 2
            for job in jobs:
                assert task_names(job) == []
                assert conjure.jobs.child(job) is None
                assert _started(log, job) == 0
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 2
    assert [_started(log, j) for j in jobs] == [1, 1]


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_cancelled_queued_job_ends_cancelled_and_never_leases(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Cancelled while queued: its actor starts to write JobCancelled; no machine is leased
    to it, and the job queued behind it still runs."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            first, second = await submit_sketches(conjure, 2)
            await conjure.cancel(second, "user")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[first].status == "succeeded"
            assert conjure.state.jobs[second].status == "cancelled"
    assert event_names(log, second) == ["JobSubmitted", "JobQueued", "JobCancelled"]
    leased = [r.event.job_id for r in log.records() if isinstance(r.event, ev.MachineLeased)]
    assert leased == [first]
    assert _started(log, second) == 1


async def test_queued_jobs_time_out_on_one_timer(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Jobs that wait past their total timeout fail (Timeout) unstarted; one timer task
    watches the whole queue, not one per job."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, retry=RetryConfig(total_timeout=30.0))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            t0 = trio.current_time()
            jobs = await submit_sketches(conjure, 5)
            await trio.testing.wait_all_tasks_blocked()
            assert task_names("machine-queue-timer") == ["machine-queue-timer"]
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: all(s.jobs[j].status == "failed" for j in jobs))
            elapsed = trio.current_time() - t0
            errors = [conjure.state.jobs[j].error for j in jobs]
    assert all(e is not None and e.error_type == "Timeout" for e in errors)
    assert 30.0 <= elapsed < 31.0
    for job in jobs:
        assert event_names(log, job) == ["JobSubmitted", "JobQueued", "JobFailed"]


@pytest.mark.slow
async def test_queued_jobs_start_by_priority_then_in_order(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """One machine, one job at a time: the higher priority first, equals first come first."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            low1 = (await submit_sketches(conjure))[0]
            high = (await submit_sketches(conjure, priority=5))[0]
            low2 = (await submit_sketches(conjure))[0]
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
    started = [r.event.job_id for r in log.records() if isinstance(r.event, ev.JobStarted)]
    assert started == [high, low1, low2]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_queued_job_goes_back_into_the_queue_after_a_crash(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Crashed while queued: the restart queues it again (no actor while it waits, no second
    JobQueued), then runs it to its end."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    jobs: list[str] = []
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1)

        async def until_queued(conjure: Conjure) -> None:
            jobs.extend(await submit_sketches(conjure, 2))

        await crash_when(cloud, log, out, config, wall, until_queued)
        log = log.reopen()
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            await trio.testing.wait_all_tasks_blocked()
            assert [conjure.state.jobs[j].status for j in jobs] == ["queued"] * 2
            assert [task_names(j) for j in jobs] == [[], []]
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 2
    for job in jobs:
        assert event_names(log, job).count("JobQueued") == 1


@pytest.mark.slow
async def test_a_shutdown_interrupts_the_queued_jobs_and_the_next_run_finishes_them(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The run stops with jobs queued: they are logged interrupted together, no actor
    started for them; the next run on the log takes them up and runs them."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            jobs = await submit_sketches(conjure, 3)
            await conjure.shutdown()
            assert [conjure.state.jobs[j].status for j in jobs] == ["interrupted"] * 3
        assert [_started(log, j) for j in jobs] == [0, 0, 0]
        seqs = {r.seq for r in log.records() if isinstance(r.event, ev.JobInterrupted)}
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 3
    assert sorted(seqs) == list(range(min(seqs), min(seqs) + 3))  # together, in one append
    for job in jobs:
        assert "JobResumed" in event_names(log, job)


@pytest.mark.slow
async def test_a_job_requeued_after_its_machine_is_lost_waits_without_an_actor(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Its machine vanishes mid-prompt: the job is requeued, its actor puts it back into the
    pool's queue and ends; a fresh actor runs it once another machine is leased to it."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    timings = ComfyTimings(scale=100.0)
    async with (
        open_test_cloud(wall.now, ready_delay=120.0, timings=timings) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = (await submit_sketches(conjure))[0]
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
        cloud.runcomfy.vanish(conjure.state.jobs[job].server_id)
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].status == "queued")
        await trio.testing.wait_all_tasks_blocked()
        assert conjure.state.jobs[job].status == "queued"
        assert task_names(job) == []
        assert conjure.jobs.child(job) is None
        with trio.fail_after(7200):
            await conjure.wait_until_idle()
        assert conjure.state.jobs[job].status == "succeeded"
    assert _started(log, job) == 2


@pytest.mark.slow
async def test_after_a_crash_a_queued_job_never_takes_the_slot_of_a_running_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Crashed with one job's prompt running on the only slot and one queued: the restart
    keeps the slot for the running job's re-attach; the queued one leases it only after."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    jobs: list[str] = []
    async with open_test_cloud(
        wall.now, ready_delay=120.0, timings=ComfyTimings(scale=100.0)
    ) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)

        async def until_started(conjure: Conjure) -> None:
            jobs.extend(await submit_sketches(conjure, 2))
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[jobs[0]].execution == "started")

        await crash_when(cloud, log, out, config, wall, until_started)
        log = log.reopen()
        crashed_at = sum(1 for _ in log.records())
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 2
    running, queued = jobs
    after = [r.event for r in log.records()][crashed_at:]
    leased = [e.job_id for e in after if isinstance(e, ev.MachineLeased)]
    assert leased == [running, queued]
    done = next(i for i, e in enumerate(after) if isinstance(e, ev.JobSucceeded))
    first_lease_of_queued = next(
        i for i, e in enumerate(after) if isinstance(e, ev.MachineLeased) and e.job_id == queued
    )
    assert after[done].job_id == running
    assert done < first_lease_of_queued


@pytest.mark.slow
async def test_after_a_crash_a_job_whose_machine_went_is_requeued_not_kept_waiting(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Crashed with one job's prompt running and one queued, and the machine gone while the
    run was down: no slot is kept for the prompt; both jobs run on a new machine."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    jobs: list[str] = []
    async with open_test_cloud(
        wall.now, ready_delay=120.0, timings=ComfyTimings(scale=100.0)
    ) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)

        async def until_started(conjure: Conjure) -> None:
            jobs.extend(await submit_sketches(conjure, 2))
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[jobs[0]].execution == "started")

        await crash_when(cloud, log, out, config, wall, until_started)
        log = log.reopen()
        crashed_at = sum(1 for _ in log.records())
        first_machine = next(
            r.event.server_id for r in log.records() if isinstance(r.event, ev.MachineLeased)
        )
        cloud.runcomfy.vanish(first_machine)
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 2
    running, _ = jobs
    after = [r.event for r in log.records()][crashed_at:]
    assert any(isinstance(e, ev.MachineLost) and e.server_id == first_machine for e in after)
    requeued = [e for e in after if isinstance(e, ev.JobQueued) and e.job_id == running]
    assert [e.reason for e in requeued] == ["resumed"]
    assert not any(isinstance(e, ev.MachineLeased) and e.server_id == first_machine for e in after)
