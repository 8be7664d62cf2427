"""The hand-off between a queued job and its WorkflowActor (issue 16) under races: a cancel
or an interruption is never lost on either side of it, no actor starts once the run's stop
began, only the starter task starts job actors, and an error starting one job does not take
the run down."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    event_names,
    open_test_cloud,
    run_conjure,
    run_on_autojump,
    sim_config,
    submit_sketches,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlog
from conjure_actors.actors import job as job_module
from conjure_actors.actors.conjure import Conjure
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.runtime import ActorRef, SupervisorRef
from conjure_actors.sim.comfyui import ComfyTimings


def _next_seq(log: eventlog.MemoryLog[Any]) -> int:
    records = list(log.records())
    return records[-1].seq + 1 if records else 0


async def _requeueing(
    conjure: Conjure, cloud: Any, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run ``job`` until its prompt runs, take its machine away, and return while its actor
    puts the job back into the pool's queue (the MachineActor's mailbox busy for 1 s)."""
    with trio.fail_after(3600):
        await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
    queue = job_module.PoolPort.queue
    entered = trio.Event()

    async def slow_queue(self: job_module.PoolPort, *args: Any) -> None:
        entered.set()
        await trio.sleep(1.0)
        await queue(self, *args)

    monkeypatch.setattr(job_module.PoolPort, "queue", slow_queue)
    cloud.runcomfy.vanish(conjure.state.jobs[job].server_id)
    with trio.fail_after(3600):
        await entered.wait()
    monkeypatch.setattr(job_module.PoolPort, "queue", queue)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_cancel_sent_while_the_actor_requeues_its_job_ends_it_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that reaches the actor as it puts its job back is delivered again: cancelled,
    never run again."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, ready_delay=120.0, timings=ComfyTimings(scale=100.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = (await submit_sketches(conjure))[0]
        await _requeueing(conjure, cloud, job, monkeypatch)
        await conjure.cancel(job, "user")
        with trio.fail_after(7200):
            await conjure.wait_until_idle()
        assert conjure.state.jobs[job].status == "cancelled"
    assert event_names(log, job).count("JobStarted") == 1


async def test_a_shutdown_while_the_actor_requeues_its_job_interrupts_it_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interruption that reaches the actor as it puts its job back is not lost: the
    shutdown does not wait out its 25 s for it."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, ready_delay=120.0, timings=ComfyTimings(scale=100.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = (await submit_sketches(conjure))[0]
        await _requeueing(conjure, cloud, job, monkeypatch)
        t0 = trio.current_time()
        await conjure.shutdown()
        assert trio.current_time() - t0 < 20
        assert conjure.state.jobs[job].status == "interrupted"
    assert event_names(log, job).count("JobInterrupted") == 1


def _on_spawn(monkeypatch: pytest.MonkeyPatch, hook: Callable[[str], None]) -> None:
    """Call ``hook(name)`` each time a job actor is about to be spawned (what it raises is
    that actor's failure to start)."""
    spawn = SupervisorRef.spawn
    spawn_many = SupervisorRef.spawn_many

    async def spawning(self: SupervisorRef, factory: Any, **kw: Any) -> ActorRef:
        if self.path.endswith("/jobs"):
            hook(kw["name"])
        return await spawn(self, factory, **kw)

    async def spawning_many(
        self: SupervisorRef, factories: list[tuple[str, Any]], **kw: Any
    ) -> list[ActorRef | Exception]:
        if not self.path.endswith("/jobs"):
            return await spawn_many(self, factories, **kw)
        failed: dict[str, Exception] = {}
        for name, _ in factories:
            try:
                hook(name)
            except Exception as exc:
                failed[name] = exc
        kept = [(name, factory) for name, factory in factories if name not in failed]
        answers = iter(await spawn_many(self, kept, **kw))
        return [failed[name] if name in failed else next(answers) for name, _ in factories]

    monkeypatch.setattr(SupervisorRef, "spawn", spawning)
    monkeypatch.setattr(SupervisorRef, "spawn_many", spawning_many)


async def test_a_shutdown_during_an_actor_start_interrupts_the_job_once_without_a_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stops while a leased job's actor is starting: that actor alone interrupts it,
    no prompt is sent, and the shutdown does not wait out its 25 s."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    took: list[float] = []
    stopped = trio.Event()
    async with (
        open_test_cloud(wall.now, ready_delay=120.0, timings=ComfyTimings(scale=20.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud, max_machines=1), wall) as conjure,
        trio.open_nursery() as nursery,
    ):

        async def stop() -> None:
            t0 = trio.current_time()
            await conjure.shutdown()
            took.append(trio.current_time() - t0)
            stopped.set()

        _on_spawn(monkeypatch, lambda _: nursery.start_soon(stop))
        job = (await submit_sketches(conjure))[0]
        with trio.fail_after(3600):
            await stopped.wait()
    names = event_names(log, job)
    assert names.count("JobInterrupted") == 1
    assert "PromptSubmitting" not in names, names
    assert took[0] < 20


async def test_a_cancel_just_before_a_shutdown_ends_the_queued_job_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A queued job cancelled as the run stops ends cancelled, not interrupted (a resume
    would run it)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            jobs = await submit_sketches(conjure, 2)
            await trio.testing.wait_all_tasks_blocked()
            await conjure.cancel(jobs[1], "user")
            await conjure.shutdown()
            assert conjure.state.jobs[jobs[0]].status == "interrupted"
    assert event_names(log, jobs[1]) == ["JobSubmitted", "JobQueued", "JobCancelled"]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_every_job_actor_is_started_by_the_starter_task(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume's actors too are started by the one starter task: no two starts at once."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    out = tmp_path / "out"
    starters: set[str] = set()
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1)
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            jobs = await submit_sketches(conjure, 3)
            await conjure.shutdown()
        log.close()
        log = log.reopen()
        _on_spawn(monkeypatch, lambda _: starters.add(trio.lowlevel.current_task().name))
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert [conjure.state.jobs[j].status for j in jobs] == ["succeeded"] * 3
    assert len(starters) == 1
    assert "_run_starter" in starters.pop()


async def _two_jobs_the_first_unstartable(
    conjure: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """Submit two jobs; the first one's actor fails to start ("no actor for you")."""
    bad, good = await submit_sketches(conjure, 2)

    def explode(name: str) -> None:
        if name == bad:
            raise RuntimeError("no actor for you")

    _on_spawn(monkeypatch, explode)
    return bad, good


async def test_an_error_starting_one_job_leaves_the_run_and_the_other_jobs_going(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job whose actor fails to start is logged at error level with its id and its machine
    given back; the job queued behind it still runs on that machine."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            bad, good = await _two_jobs_the_first_unstartable(conjure, monkeypatch)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[good].status == "succeeded")
            await conjure.shutdown()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(bad in r.getMessage() for r in errors)
    released = [r.event.job_id for r in log.records() if isinstance(r.event, ev.MachineReleased)]
    assert bad in released


async def test_a_job_whose_actor_does_not_start_ends_failed_and_the_run_goes_idle(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose actor fails to start is failed (ActorStartFailed, one line), not left
    queued forever: ``wait_until_idle`` returns once the other job is done."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, ready_delay=120.0) as cloud:
        config = sim_config(cloud, max_machines=1, jobs_per_machine=1)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            bad, good = await _two_jobs_the_first_unstartable(conjure, monkeypatch)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            statuses = {j: conjure.state.jobs[j].status for j in (bad, good)}
            await conjure.shutdown()
    assert statuses == {bad: "failed", good: "succeeded"}
    failed = [r.event for r in log.records() if isinstance(r.event, ev.JobFailed)]
    assert [(f.job_id, f.error_type) for f in failed] == [(bad, "ActorStartFailed")]
    assert "\n" not in failed[0].message
    assert "no actor for you" in failed[0].message


async def test_a_cancel_asked_once_the_stop_began_ends_the_running_job_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A cancel asked while the stop interrupts a running job (it reaches the actor behind
    the interruption) still ends the job cancelled, so no resume runs it again."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, ready_delay=120.0, timings=ComfyTimings(scale=100.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = (await submit_sketches(conjure))[0]
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conjure.shutdown)
                while not conjure._shut_down:
                    await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
                await conjure.cancel(job, "user")
        status = conjure.state.jobs[job].status
    assert status == "cancelled"
    assert event_names(log, job).count("JobCancelled") == 1


async def test_a_cancelled_queued_job_whose_actor_cannot_start_ends_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued job the user cancelled ends cancelled even if the actor started to cancel
    it cannot start (not failed with "rerun it")."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, ready_delay=600.0) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = (await submit_sketches(conjure))[0]

        def explode(name: str) -> None:
            raise RuntimeError("spawn broke")

        _on_spawn(monkeypatch, explode)
        await conjure.cancel(job, "user")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        status = conjure.state.jobs[job].status
        await conjure.shutdown()
    assert status == "cancelled"
    assert "JobFailed" not in event_names(log, job)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["cancel", "lose"]),
        st.integers(0, 3),
        st.sampled_from([0.0, 0.5, 2.0, 20.0, 121.0, 130.0]),
    ),
    max_size=6,
)


async def _interleaving(
    tmp: Path, n: int, ops: list[tuple[str, int, float]], stop_at: float
) -> tuple[list[str], dict[str, int], int, float, eventlog.MemoryLog[Any], Any]:
    """Submit ``n`` jobs, run ``ops`` (cancel a job, lose its machine) and a stop at
    ``stop_at`` s; returns the jobs, the seq each cancel was asked at (the job active, the
    stop not begun), the stop's seq, how long it took, the log and the final state."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    cancels: dict[str, int] = {}
    stop: list[float] = []
    async with open_test_cloud(
        wall.now, ready_delay=120.0, timings=ComfyTimings(scale=20.0)
    ) as cloud:
        config = sim_config(cloud, max_machines=2, jobs_per_machine=1)
        async with run_conjure(cloud, log, tmp, config, wall) as conjure:
            jobs = await submit_sketches(conjure, n)

            async def stopper() -> None:
                await trio.sleep(stop_at)
                stop.append(_next_seq(log))
                t0 = trio.current_time()
                await conjure.shutdown()
                stop.append(trio.current_time() - t0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stopper)
                for op, i, delay in ops:
                    await trio.sleep(delay)
                    job = jobs[i % n]
                    status = conjure.state.jobs[job].status
                    if op == "cancel" and not stop and status in ("queued", "running"):
                        cancels.setdefault(job, _next_seq(log))
                        await conjure.cancel(job, "user")
                    elif op == "lose" and conjure.state.jobs[job].server_id is not None:
                        cloud.runcomfy.vanish(conjure.state.jobs[job].server_id)
            state = conjure.state
    return jobs, cancels, int(stop[0]), stop[1], log, state


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n=st.integers(1, 4),
    ops=_OPS,
    stop_at=st.sampled_from([0.0, 1.0, 122.0, 135.0, 400.0]),
    hold=st.sampled_from([0.0, 1.0]),
)
def test_any_interleaving_of_cancels_machine_losses_and_a_stop_keeps_the_queues_promises(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    ops: list[tuple[str, int, float]],
    stop_at: float,
    hold: float,
) -> None:
    """Whatever the order of cancels, machine losses and the stop (the pool's mailbox busy
    or not as an actor puts its job back): a job cancelled before the stop ends cancelled,
    no prompt is sent once the stop began, the stop waits for no lost request, and no job
    is left active."""
    tmp = tmp_path_factory.mktemp("races")
    queue = job_module.PoolPort.queue

    async def held_queue(self: job_module.PoolPort, *args: Any) -> None:
        await trio.sleep(hold)
        await queue(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job_module.PoolPort, "queue", held_queue)
        jobs, cancels, stop_seq, took, log, state = run_on_autojump(
            _interleaving, tmp, n, ops, stop_at
        )
    for job in cancels:
        assert state.jobs[job].status == "cancelled", event_names(log, job)
    late = [
        r.event.job_id
        for r in log.records()
        if isinstance(r.event, ev.PromptSubmitting) and r.seq >= stop_seq
    ]
    assert late == []
    assert took < 20
    assert [j for j in jobs if state.jobs[j].status in ("pending", "queued", "running")] == []
