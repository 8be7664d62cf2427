"""The assembled runtime (open_conjure) against the in-memory simulated cloud, MockClock."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.domain.machines_policy import STOP_SETTLE
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings

CONJURE = bundled_workflow().decode()


def _graph() -> dict[str, Any]:
    import json

    return json.loads(CONJURE)


@pytest.mark.slow
async def test_one_conjure_job_end_to_end(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The CONJURE workflow runs on a launched machine: a PNG and a GLB come out."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="a fox")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
            assert state.jobs[job].status == "succeeded", state.jobs[job]
            kinds = sorted(o.kind for o in state.jobs[job].outputs)
            assert kinds == ["image", "mesh"]
            for o in state.jobs[job].outputs:
                assert await trio.Path(o.path).is_file()
        assert cloud.running() == []


def _bills(cloud: Any) -> dict[str, int]:
    return {b.server_id: b.cost_micros for b in cloud.billing()}


def _ledger(state: Any) -> dict[str, int]:
    return {m.server_id: m.cost_micros for m in state.machines.values() if m.kind == "runcomfy"}


@pytest.mark.slow
async def test_fifty_jobs_on_five_machines(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """50 concurrent jobs on at most 5 machines all succeed, machines are reused, outputs
    match what the simulator produced, and the ledger equals the simulator's bills."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud, max_machines=5)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            jobs = [
                await conjure.submit(
                    _graph(),
                    image=example_sketch_png(),
                    prompt=f"fox {i}",
                    seed=i,
                    sets=["20.steps=3", "44.steps=3"],  # fewer progress frames: a faster test
                )
                for i in range(50)
            ]
            state = await _run_to_the_end(conjure, limit=36_000)
        assert all(state.jobs[j].status == "succeeded" for j in jobs)
        machines = [m for m in state.machines.values() if m.kind == "runcomfy"]
        assert 1 <= len(machines) <= 5
        assert sum(m.jobs_served for m in machines) == 50
        for j in jobs:
            job = state.jobs[j]
            produced = cloud.machine_sim(job.server_id).produced.values()
            hashes = {hashlib.sha256(v).hexdigest() for v in produced}
            assert sorted(o.kind for o in job.outputs) == ["image", "mesh"]
            for o in job.outputs:
                assert o.sha256 in hashes
                data = await trio.Path(o.path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == o.sha256
        assert cloud.running() == []
        assert _ledger(state) == _bills(cloud)
        assert state.ledger.total_micros == sum(_bills(cloud).values())


async def _crash_mid_prompt(
    cloud: Any, log: eventlog.MemoryLog[Any], out: Path, config: Any, wall: TrioWallClock
) -> str:
    """Submit one job and crash once its prompt runs; returns the job's id."""
    job = ""

    async def until_started(conjure: Any) -> None:
        nonlocal job
        job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

    await crash_when(cloud, log, out, config, wall, until_started)
    return job


async def _run_to_the_end(conjure: Any, limit: float = 3600) -> Any:
    """Wait (simulated seconds) until every job ended, shut down, return the final state."""
    with trio.fail_after(limit):
        await conjure.wait_until_idle()
    await conjure.shutdown()
    return conjure.state


@pytest.mark.slow
async def test_resume_after_crash_mid_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A crash while the prompt runs, then a restart from the log: the machine is adopted,
    the prompt is followed (not run again), the job succeeds, the ledger is exact."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    slow = __import__("conjure_actors.sim.comfyui", fromlist=["ComfyTimings"]).ComfyTimings(
        scale=200.0
    )
    async with open_test_cloud(wall.now, timings=slow) as cloud:
        config = sim_config(cloud)
        job = await _crash_mid_prompt(cloud, log, tmp_path, config, wall)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            state = await _run_to_the_end(conjure)
        assert state.jobs[job].status == "succeeded"
        assert state.jobs[job].attempt == 1
        ran = [
            p
            for sid, m in state.machines.items()
            if m.service_ready_at is not None
            for p in cloud.machine_sim(sid).prompts_run
        ]
        assert len(ran) == len(set(ran)) == 1
        assert any(m.adopted for m in state.machines.values())
        assert cloud.running() == []
        assert _ledger(state) == _bills(cloud)


@pytest.mark.slow
async def test_resume_waits_out_a_long_rate_limit(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A crash mid-prompt, then a restart while RunComfy answers 429 for longer than the
    client's own retries: recovery waits, adopts the machine, and the job succeeds."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud)
        job = await _crash_mid_prompt(cloud, log, tmp_path, config, wall)
        cloud.runcomfy.inject_rate_limit_burst(17)  # more than three calls' five attempts
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            state = await _run_to_the_end(conjure)
        assert state.jobs[job].status == "succeeded"
        assert any(m.adopted for m in state.machines.values())
        assert cloud.running() == []
        assert _ledger(state) == _bills(cloud)


async def _crash_while_stopping_then_resume(
    tmp_path: Path, lease_seconds: float
) -> tuple[Any, Any, str]:
    """A crash with an idle machine's stop logged (its DELETE lands as the process dies) and
    a resume 2 minutes later (about 1,000 s after the launch, the dead runtime's teardown
    included), machines leased for ``lease_seconds``: (the resumed state, the cloud, that
    machine)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud, idle_timeout=30.0, lease_seconds=lease_seconds)
        stopping = ""

        async def until_stopping(conjure: Any) -> None:
            nonlocal stopping
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "succeeded")
                await wait_for(
                    conjure, lambda s: any(m.status == "stopping" for m in s.machines.values())
                )
            stopping = next(m.server_id for m in conjure.state.machines.values())
            cloud.runcomfy.vanish(stopping)  # the DELETE lands as the process dies

        await crash_when(cloud, log, tmp_path, config, wall, until_stopping)
        await trio.sleep(120)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await conjure.shutdown()
            state = conjure.state
        assert state.machines[stopping].status in ("lost", "stopped")
        return state, cloud, stopping


@pytest.mark.slow
async def test_resume_bills_a_machine_stopped_at_the_crash_to_its_stop(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Found gone before its lease's end, a machine whose stop was logged at the crash was
    stopped: its bill ends STOP_SETTLE past the logged stop (its DELETE's answer, where the
    cloud's ends, comes after the stop), never below the cloud's, not at the resume."""
    state, cloud, sid = await _crash_while_stopping_then_resume(tmp_path, lease_seconds=3600)
    m = state.machines[sid]
    assert m.stop_requested_at is not None
    assert m.stopped_at == m.stop_requested_at + STOP_SETTLE
    assert _ledger(state)[sid] >= _bills(cloud)[sid]
    assert {k: v for k, v in _ledger(state).items() if k != sid} == {
        k: v for k, v in _bills(cloud).items() if k != sid
    }


@pytest.mark.slow
async def test_resume_past_the_lease_bills_a_machine_stopped_at_the_crash_to_the_lease_end(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Found gone only after its lease's end, it may have run to it (its DELETE, logged as
    decided before it is sent, may never have left): billed to the lease's end, above the
    cloud's bill here, never below (QA: billed 32 s where the cloud billed 87 s)."""
    state, cloud, sid = await _crash_while_stopping_then_resume(tmp_path, lease_seconds=600)
    m = state.machines[sid]
    assert m.stopped_at == m.estimated_stopping_at
    assert _ledger(state)[sid] > _bills(cloud)[sid]


@pytest.mark.slow
async def test_fresh_start_and_launch_wait_out_a_long_rate_limit(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """429s for longer than the client's retries at start-up and then at the launch: the
    run waits them out and the job succeeds (no job fails for want of a machine)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        cloud.runcomfy.inject_rate_limit_burst(12)
        async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
            cloud.runcomfy.inject_rate_limit_burst(12)
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
            state = await _run_to_the_end(conjure)
        assert state.jobs[job].status == "succeeded", state.jobs[job].error
        assert cloud.running() == []


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_budget_stops_launching_and_every_job_ends(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """With a budget for about two leases, launches stop at the limit, every job ends with
    a terminal event, and spending never passes the budget plus one lease."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    slow = ComfyTimings(scale=100.0)
    async with open_test_cloud(wall.now, timings=slow) as cloud:
        config = sim_config(cloud, max_machines=4, lease_seconds=300.0, budget=0.2)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            jobs = [
                await conjure.submit(_graph(), image=example_sketch_png(), prompt=f"{i}", seed=i)
                for i in range(8)
            ]
            state = await _run_to_the_end(conjure, limit=36_000)
        statuses = {state.jobs[j].status for j in jobs}
        assert statuses <= {"succeeded", "failed", "cancelled"}
        assert state.budget.launches_refused >= 1
        one_lease = 990_000 * 300 // 3600
        assert state.ledger.total_micros <= 200_000 + one_lease
        assert cloud.running() == []
        assert _ledger(state) == _bills(cloud)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_cancel_running_job(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """Cancelling a running job interrupts it: JobCancelled, the machine is free again."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=100.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            await conjure.cancel(job)
            await conjure.wait_until_idle()
        state = conjure.state
        assert state.jobs[job].status == "cancelled"
        assert all(not m.leases for m in state.machines.values())


@pytest.mark.slow
async def test_lost_machine_requeues_its_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A machine that vanishes mid-job: lost, the job requeued and finished elsewhere."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=100.0)) as cloud:
        async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            first = conjure.state.jobs[job].server_id
            cloud.runcomfy.vanish(first)
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
        assert state.jobs[job].status == "succeeded"
        assert state.machines[first].status in ("lost", "stopped")
        assert state.machines[first].lost_reason is not None
        assert state.jobs[job].server_id != first
        assert state.jobs[job].failures == 0


@pytest.mark.slow
async def test_machine_lost_between_polls_costs_no_attempt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The machine vanishes long before the pool's next poll: the attempt fails first, the
    pool is asked to look, and the job is requeued (not retried) onto another machine."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    config = None
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=100.0)) as cloud:
        config = sim_config(cloud, poll_interval=600.0)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            first = conjure.state.jobs[job].server_id
            cloud.runcomfy.vanish(first)
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
        events = [r.event for r in log.records()]
        assert state.jobs[job].status == "succeeded"
        assert state.jobs[job].failures == 0
        assert not any(type(e).__name__ == "JobRetrying" for e in events)
        assert next(e.server_id for e in events if type(e).__name__ == "JobStarted") == first
        assert state.jobs[job].server_id != first


async def test_rejected_prompt_is_not_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A prompt the server rejects (validation) fails the job at once: one attempt."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
            job = await conjure.submit(
                _graph(), image=example_sketch_png(), prompt="x", sets=["20.steps=-5"]
            )
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert state.jobs[job].status == "failed"
        assert state.jobs[job].error is not None
        assert state.jobs[job].error.error_type == "PromptRejected"
        assert state.jobs[job].attempt == 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_node_errors_are_retried_then_fail(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A node that always fails: retried with backoff up to max_attempts, then JobFailed."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    faults = ComfyFaults(node_error_classes=frozenset({"VAEDecode"}))
    async with open_test_cloud(wall.now, comfy_faults=faults) as cloud:
        async with run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure:
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
        assert state.jobs[job].status == "failed"
        assert state.jobs[job].attempt == 3
        retries = [r.event for r in log.records() if type(r.event).__name__ == "JobRetrying"]
        assert [e.attempt for e in retries] == [1, 2]


async def test_concurrent_first_submissions_of_a_workflow_register_it_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Many first submissions of one workflow at once (serve's 50 clients): while the first
    one's WorkflowRegistered waits for its commit, the others wait for it rather than log
    their own (the log held one per submission)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        graph = _graph()
        slow_append = log.append_many

        async def append_many(events: Any) -> Any:
            await trio.sleep(0.01)  # a commit takes a while (fsync)
            return await slow_append(events)

        log.append_many = append_many  # type: ignore[method-assign]
        submitted: list[str] = []
        async with trio.open_nursery() as nursery:
            for _ in range(5):

                async def prepare() -> None:
                    job_id, _ = await conjure.prepare_submission(graph)
                    submitted.append(job_id)

                nursery.start_soon(prepare)
        registered = [r for r in log.records() if type(r.event).__name__ == "WorkflowRegistered"]
        assert len(submitted) == 5
        assert len(registered) == 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_machine_still_up_after_its_stop_at_a_crash_is_stopped_again_on_resume(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run goes down right after a DELETE answered 200 that did not take (the machine
    still Ready, billing; the log says stopped): the resume finds it listed up, stops it
    again and bills it to that stop, so nothing is left billing and the ledger is exact."""
    from conjure_actors.clients.runcomfy import RunComfyClient

    real_stop = RunComfyClient.stop

    async def does_not_take(client: RunComfyClient, server_id: str, **kwargs: Any) -> Any:
        return await client.status(server_id)  # 200 with the server, which runs on

    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud, idle_timeout=30.0, lease_seconds=3600.0)

        async def until_stopped(conjure: Any) -> None:
            job = await conjure.submit(_graph(), image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "succeeded")
                await wait_for(
                    conjure, lambda s: any(m.status == "stopped" for m in s.machines.values())
                )

        monkeypatch.setattr(RunComfyClient, "stop", does_not_take)
        await crash_when(cloud, log, tmp_path, config, wall, until_stopped)
        monkeypatch.setattr(RunComfyClient, "stop", real_stop)
        assert cloud.running() != []  # the crashed run's machine bills on
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await trio.sleep(60)
            state = conjure.state
        assert cloud.running() == []
        assert _ledger(state) == _bills(cloud)
