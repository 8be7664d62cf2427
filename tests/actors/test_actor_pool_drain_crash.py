"""What the pool decides about a machine a job gave its re-attach up on (its prompt may still
run there, unfollowed) is in the log, before the job's retry: a crash at any point leaves a
log whose resumed run gives the machine no job and stops it once the jobs on it end.

Each test crashes the run right after one commit (a journal listener marks it) and resumes
from the log as that crash left it (every record up to that commit, none after)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.actors.pool import MachineActor
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import Config, RetryConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings

GRAPH = json.loads(bundled_workflow())
QUEUE_DOWN = ComfyFaults(http_5xx_rate=1.0, http_5xx_paths=frozenset({"/queue"}))
RETRY = RetryConfig(initial=1.0, max_delay=5.0, attempt_timeout=600.0)


def _cut(log: eventlog.MemoryLog[Any], last_seq: int) -> eventlog.MemoryLog[Any]:
    """The log as a crash right after record ``last_seq`` leaves it (all of it durable)."""
    assert log.last_seq >= last_seq, "records up to the crash point were lost"
    records = list(log.records(stop_seq=last_seq))
    cut: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    cut.append_many([r.event for r in records], ts=[r.ts for r in records])
    cut.flush()
    return cut


async def _crash_after(
    cloud: Any,
    log: eventlog.MemoryLog[Any],
    tmp_path: Path,
    config: Config,
    wall: TrioWallClock,
    first: str,
    commit: Callable[[Any], bool],
    *,
    other: bool,
) -> tuple[eventlog.MemoryLog[Any], dict[str, str]]:
    """Resume ``log`` (a job's prompt running on machine ``first``, whose ComfyUI fails every
    lookup of it) until the job gives its re-attach up; crash right after the first commit
    holding an event ``commit`` accepts. ``other``: a second job is submitted 450 s in (its
    prompt runs on ``first`` too when the re-attach is given up). The log as the crash left
    it, and the jobs submitted (``"other"``)."""
    cloud.machine_sim(first).faults = QUEUE_DOWN  # no lookup of the old prompt answers
    last = 0
    jobs: dict[str, str] = {}

    async def until_commit(conjure: Any) -> None:
        nonlocal last
        crashed = trio.Event()

        def listener(records: list[Any]) -> None:
            nonlocal last
            if not last and any(commit(r.event) for r in records):
                last = records[-1].seq
                crashed.set()

        with conjure.journal.listen(listener), trio.fail_after(20000):
            if other:
                await trio.sleep(450)
                jobs["other"] = await conjure.submit(
                    GRAPH, image=example_sketch_png(), prompt="other"
                )
            await crashed.wait()

    await crash_when(cloud, log, tmp_path, config, wall, until_commit)
    return _cut(log.reopen(), last), jobs


async def _started(
    cloud: Any, log: eventlog.MemoryLog[Any], tmp_path: Path, config: Config, wall: TrioWallClock
) -> tuple[str, str]:
    """Run one job until its prompt runs, then crash: the job and its machine."""
    job = ""

    async def until_started(conjure: Any) -> None:
        nonlocal job
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="old")
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

    await crash_when(cloud, log, tmp_path, config, wall, until_started)
    first = next(
        r.event.server_id
        for r in log.records()
        if isinstance(r.event, ev.PromptSubmitting) and r.event.job_id == job
    )
    return job, first


def _after(log: eventlog.MemoryLog[Any], seq: int, kind: type) -> list[Any]:
    return [r.event for r in log.records(start_seq=seq + 1) if isinstance(r.event, kind)]


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_machine_draining_at_a_crash_takes_no_job_after_the_resume(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Crash right after the pool took the given-up job's machine back (another job's
    prompt still runs there): the resumed run's state says the machine drains, gives a new
    job another machine, and stops it once the jobs on it end (before, the draining was
    memory only: the new job was queued on it, behind the given-up prompt)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=2, retry=RETRY)
        old, first = await _started(cloud, log, tmp_path, config, wall)
        log, jobs = await _crash_after(
            cloud,
            log.reopen(),
            tmp_path,
            config,
            wall,
            first,
            lambda e: isinstance(e, ev.MachineReleased) and e.server_id == first,
            other=True,
        )
        crash = log.last_seq
        cloud.machine_sim(first).faults = ComfyFaults()  # its ComfyUI answers again
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            assert conjure.state.machines[first].draining == "reattach_given_up"
            new = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="new")
            with trio.fail_after(20000):
                await conjure.wait_until_idle()
            state = conjure.state
    for job in (old, jobs["other"], new):
        assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert state.jobs[new].server_id != first
    leased = [e.job_id for e in _after(log, crash, ev.MachineLeased) if e.server_id == first]
    assert new not in leased
    stops = [e.reason for e in _after(log, crash, ev.MachineStopping) if e.server_id == first]
    assert stops == ["reattach_given_up"]


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_crash_after_the_give_up_retry_never_reuses_the_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash right after the job's ``JobRetrying`` (its re-attach given up, the machine
    judged unfit), the pool busy for a while before it handled the release (a backlog in
    its mailbox): the pool's decision is in the log before the retry all the same, so the
    resumed run stops the machine and runs the retry on another one (before, the retry was
    logged first, and the resumed run gave the job that machine again)."""
    release = MachineActor._release

    async def busy_release(self: MachineActor, *args: Any, **kwargs: Any) -> None:
        await trio.sleep(1.0)
        await release(self, *args, **kwargs)

    monkeypatch.setattr(MachineActor, "_release", busy_release)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud, max_machines=1, retry=RETRY)
        old, first = await _started(cloud, log, tmp_path, config, wall)
        log, _ = await _crash_after(
            cloud,
            log.reopen(),
            tmp_path,
            config,
            wall,
            first,
            lambda e: isinstance(e, ev.JobRetrying) and e.job_id == old,
            other=False,
        )
        crash = log.last_seq
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(20000):
                await conjure.wait_until_idle()
            state = conjure.state
    assert state.jobs[old].status == "succeeded", state.jobs[old].error
    assert state.jobs[old].server_id != first
    assert [e.job_id for e in _after(log, crash, ev.MachineLeased) if e.server_id == first] == []
    assert state.machines[first].status == "stopped"
    assert state.machines[first].stop_reason == "reattach_given_up"
