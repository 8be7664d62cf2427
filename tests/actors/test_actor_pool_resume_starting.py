"""A restart during a boot keeps the machines still Starting for the jobs the log re-queues.

The recovery adopts what the log's machines are on the cloud before the resumed jobs ask
for a lease (they are queued once the reconcile is over). Judged then, a machine adopted
Starting looked needed by nobody and was stopped as "surplus" at once, and the jobs that
came a moment later launched new machines: every restart during a boot cost a whole boot
(QA, session 27, F1). The jobs the log says will ask for a machine count as waiting until
they do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, submit_sketches

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event


async def _crash_while_booting(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    out: Path,
    config: Any,
    wall: TrioWallClock,
    n: int,
    machines: int,
) -> list[str]:
    """Submit ``n`` jobs, crash once ``machines`` machines are launched (Starting: the
    cloud's ready delay is long); the jobs' ids."""
    from actor_support import wait_for

    jobs: list[str] = []

    async def booting(conjure: Any) -> None:
        jobs.extend(await submit_sketches(conjure, n))
        with trio.fail_after(600):
            await wait_for(
                conjure,
                lambda s: sum(m.status == "starting" for m in s.machines.values()) == machines,
            )

    await crash_when(cloud, log, out, config, wall, booting)
    return jobs


def _after(log: eventlog.MemoryLog[Any], seq: int, kind: type) -> list[Any]:
    return [r.event for r in log.records() if r.seq > seq and isinstance(r.event, kind)]


@pytest.mark.slow
async def test_a_resume_during_a_boot_keeps_the_adopted_machines_for_the_queued_jobs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Two jobs queued, two machines Starting, crash, resume: both machines are adopted and
    run the jobs; none is stopped as surplus and no machine is launched again."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=2)
        jobs = await _crash_while_booting(cloud, log, tmp_path, config, wall, 2, 2)
        booted = {
            r.event.server_id for r in log.records() if isinstance(r.event, ev.MachineLaunched)
        }
        log = log.reopen()
        crashed_at = log.last_seq
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert cloud.running() == []
    adopted = {e.server_id for e in _after(log, crashed_at, ev.MachineAdopted)}
    assert adopted == booted
    surplus = [e for e in _after(log, crashed_at, ev.MachineStopping) if e.reason == "surplus"]
    assert surplus == []
    assert _after(log, crashed_at, ev.MachineLaunchRequested) == []
    assert all(state.jobs[j].status == "succeeded" for j in jobs)
    assert {state.jobs[j].server_id for j in jobs} == booted


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_resume_during_a_boot_stops_the_adopted_machines_no_job_needs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """One job queued, two machines Starting (a hedged launch), crash, resume: the job
    keeps one machine and the other is stopped while Starting (unbilled), as before."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=2, launch_hedge=2)
        (job,) = await _crash_while_booting(cloud, log, tmp_path, config, wall, 1, 2)
        log = log.reopen()
        crashed_at = log.last_seq
        config = sim_config(cloud, max_machines=2)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert cloud.running() == []
    surplus = [e for e in _after(log, crashed_at, ev.MachineStopping) if e.reason == "surplus"]
    assert len(surplus) == 1
    assert _after(log, crashed_at, ev.MachineLaunchRequested) == []
    assert state.jobs[job].status == "succeeded"
    assert state.machines[surplus[0].server_id].cost_micros == 0
