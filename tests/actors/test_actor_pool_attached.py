"""An attached ComfyUI (``--comfyui-url``) whose WebSocket is still opening when the first
job is queued, or was lost with a MachineActor restart (MockClock): the job waits for the
socket, so its prompt's frames reach it."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors import pool as pool_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.actors.messages import (
    CancelLease,
    Lease,
    LeaseFailedError,
    LeaseMachine,
    Reply,
)
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.sim.timings import ComfyTimings
from conjure_actors.testing import open_simulated_conjure

GRAPH = json.loads(bundled_workflow())


def _slow_sockets(cloud: Any, seconds: float = 2.0) -> dict[str, float]:
    """Every WebSocket to ``cloud`` takes ``seconds`` to open (the returned dict's
    ``"seconds"``, which a test may change)."""
    fast = cloud.ws_connect
    delay = {"seconds": seconds}

    @asynccontextmanager
    async def slow(target: str) -> AsyncIterator[Any]:
        await trio.sleep(delay["seconds"])
        async with fast(target) as ws:
            yield ws

    cloud.ws_connect = slow
    return delay


async def test_a_job_queued_while_the_socket_opens_is_followed_over_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The socket takes 2 s to open: the job is leased once it is up, submits with its
    client id, and sees the prompt's nodes start (frames only the socket brings; polling
    alone sees the start and the end)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, sim = cloud.standalone_comfyui()
        _slow_sockets(cloud)
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
    names = [type(r.event).__name__ for r in log.records()]
    assert "NodeStarted" in names
    assert len(sim.prompts_run) == 1


def _crash_on_boom(monkeypatch: pytest.MonkeyPatch, hold: float) -> None:
    """The MachineActor crashes ``hold`` s after it is told "boom" (its supervisor restarts it)."""
    original = pool_module.MachineActor.receive

    async def receive(self: Any, msg: Any) -> Any:
        if msg == "boom":
            await trio.sleep(hold)
            raise RuntimeError("the machines actor crashes")
        return await original(self, msg)

    monkeypatch.setattr(pool_module.MachineActor, "receive", receive)


async def _submit_until_leased(conjure: Any) -> tuple[str, str]:
    """Submit one job and return ``(job_id, server_id)`` once a machine is leased to it."""
    leased = trio.Event()

    def on_records(records: list[Any]) -> None:
        if any(type(r.event).__name__ == "MachineLeased" for r in records):
            leased.set()

    with conjure.journal.listen(on_records):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(600):
            await leased.wait()
    (held,) = [m for m in conjure.state.machines.values() if job in m.leases]
    return job, held.server_id


async def _names_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, boom_at: float, hold: float
) -> list[str]:
    """One job on an attached ComfyUI (socket 2 s to open) after a MachineActor restart."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    _crash_on_boom(monkeypatch, hold)
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        _slow_sockets(cloud)
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=tmp_path, mode="comfyui"
        ) as conjure:
            await trio.sleep(boom_at)
            await conjure.machines.tell("boom")
            await trio.sleep(hold + 30.0)
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
    return [type(r.event).__name__ for r in log.records()]


async def test_a_restart_after_the_socket_opened_opens_it_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MachineActor restarts once the socket is up (its task ended with the incarnation):
    the socket is opened again and the next job is followed over it (found by review)."""
    names = await _names_after_restart(tmp_path, monkeypatch, boom_at=10.0, hold=0.0)
    assert "ActorCrashed" in names
    assert "NodeStarted" in names


async def test_a_restart_with_the_sockets_report_in_the_mailbox_ignores_that_report(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MachineActor restarts while the report of the socket it opened waits in its
    mailbox: that dead socket is not installed, the new one is (found by review)."""
    names = await _names_after_restart(tmp_path, monkeypatch, boom_at=0.5, hold=3.0)
    assert "ActorCrashed" in names
    assert "NodeStarted" in names


@pytest.mark.slow
async def test_a_restart_before_a_runcomfy_machines_first_socket_report_opens_it_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RunComfy machine's first health answer (its socket opened) waits in the mailbox when
    the MachineActor restarts: that stale answer still makes it healthy, and its socket is
    opened again, so jobs on it get their frames (found by review)."""
    original_receive = pool_module.MachineActor.receive
    original_open = pool_module.MachineActor._open_events
    crashed: list[bool] = []

    async def receive(self: Any, msg: Any) -> Any:
        if msg == "boom":
            raise RuntimeError("the machines actor crashes")
        return await original_receive(self, msg)

    async def open_events(self: Any, client: Any) -> Any:
        result = await original_open(self, client)
        if not crashed:  # the first socket: crash before its HealthAnswered is handled
            crashed.append(True)
            self.ref.tell_nowait("boom")
        return result

    monkeypatch.setattr(pool_module.MachineActor, "receive", receive)
    monkeypatch.setattr(pool_module.MachineActor, "_open_events", open_events)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        open_simulated_conjure(cloud, log, sim_config(cloud), wall=wall, out_dir=tmp_path) as c,
    ):
        job = await c.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await c.wait_until_idle()
        assert c.state.jobs[job].status == "succeeded"
        (server_id,) = [s for s, m in c.state.machines.items() if m.healthy]
        assert c.pool.live[server_id].events is not None
    names = [type(r.event).__name__ for r in log.records()]
    assert crashed
    assert "ActorCrashed" in names
    assert "NodeStarted" in names


@pytest.mark.slow
async def test_a_lease_asked_back_while_the_socket_reopens_waits_for_the_socket(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that holds a lease asks for it again (its actor restarted) while a restarted
    MachineActor reopens the machine's socket: the lease comes back once the socket is up,
    with it, not at once without it (it would be followed by polling alone)."""
    _crash_on_boom(monkeypatch, 0.0)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=100)) as cloud:
        url, _ = cloud.standalone_comfyui()
        _slow_sockets(cloud)
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=tmp_path, mode="comfyui"
        ) as conjure:
            job, server_id = await _submit_until_leased(conjure)
            assert conjure.pool.live[server_id].events is not None
            await conjure.machines.tell("boom")
            await trio.sleep(0.5)  # restarted; its socket takes 2 s to open again
            again: Reply[Lease] = Reply()
            await conjure.machines.tell(LeaseMachine(job, None, 0, again))
            await trio.sleep(1.0)
            assert not again.done
            with trio.fail_after(60):
                back = await again.wait()
            assert back.server_id == server_id
            assert back.events is not None
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"


async def test_a_lease_asked_back_while_the_socket_reopens_sees_the_machine_lost(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine vanishes while its socket reopens after a MachineActor restart: the job
    that asked for its lease back gets it marked lost (and requeues), not never."""
    _crash_on_boom(monkeypatch, 0.0)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        delay = _slow_sockets(cloud, 0.0)
        config = sim_config(cloud)
        async with open_simulated_conjure(cloud, log, config, wall=wall, out_dir=tmp_path) as c:
            job, server_id = await _submit_until_leased(c)
            delay["seconds"] = 600.0  # the socket is not back before the machine is gone
            await c.machines.tell("boom")
            await trio.sleep(0.5)
            again: Reply[Lease] = Reply()
            await c.machines.tell(LeaseMachine(job, None, 0, again))
            await trio.sleep(1.0)
            assert not again.done
            cloud.runcomfy.vanish(server_id)
            with trio.fail_after(20):  # a poll or two; not the socket attempt's 30 s bound
                back = await again.wait()
            assert back.server_id == server_id
            assert back.lost.is_set()
            with trio.fail_after(3600):
                await c.wait_until_idle()
            assert c.state.jobs[job].status == "succeeded"


async def test_a_lease_asked_back_while_the_socket_reopens_is_withdrawn_by_cancel_lease(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CancelLease withdraws a parked lease request as it withdraws a queued one: the asker
    (whose wait was cancelled) must not be answered later with a Lease nobody releases."""
    _crash_on_boom(monkeypatch, 0.0)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        _slow_sockets(cloud)
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=tmp_path, mode="comfyui"
        ) as conjure:
            job, _ = await _submit_until_leased(conjure)
            await conjure.machines.tell("boom")
            await trio.sleep(0.5)  # restarted; its socket takes 2 s to open again
            again: Reply[Lease] = Reply()
            await conjure.machines.tell(LeaseMachine(job, None, 0, again))
            await trio.sleep(0.1)
            assert not again.done
            await conjure.machines.tell(CancelLease(job))  # the asker gave up waiting
            await trio.sleep(5.0)  # the socket is up again
            assert again.done
            with pytest.raises(LeaseFailedError):
                await again.wait()
            await conjure.cancel(job)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert all(job not in m.leases for m in conjure.state.machines.values())


async def test_a_socket_slower_than_the_open_bound_still_connects_later(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The machine's WebSocket takes 40 s to open (over _open_events' 30 s bound): the
    machine is leased meanwhile, but its socket keeps trying, so the job's frames (node
    started) still arrive once it is up."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        _slow_sockets(cloud, 40.0)
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=tmp_path, mode="comfyui"
        ) as conjure:
            await trio.sleep(120.0)  # long after the socket could have connected
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
            (live,) = conjure.pool.live.values()
            assert live.events is not None
            assert live.events.connected, live.events.statistics()
    names = [type(r.event).__name__ for r in log.records()]
    assert "NodeStarted" in names  # frames only the socket brings


async def test_a_job_cancelled_while_its_lease_is_asked_back_gives_that_lease_back(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A run resumed after a crash mid-prompt asks for the job's lease back while the
    attached machine's socket opens; the job is cancelled meanwhile: the lease the log says
    it holds is given back, so the machine is not left leased to an ended job."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200)) as cloud:
        url, _ = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        job = ""

        async def until_started(conjure: Any) -> None:
            nonlocal job
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")

        await crash_when(cloud, log, tmp_path, config, wall, until_started, mode="comfyui")
        crashed = functools.reduce(apply, (r.event for r in log.records()), initial_state())
        assert any(job in m.leases for m in crashed.machines.values())
        _slow_sockets(cloud, 30.0)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            await trio.sleep(1.0)  # resumed: its lease asked back, the socket still opening
            await conjure.cancel(job)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "cancelled"
            assert all(job not in m.leases for m in conjure.state.machines.values())


async def test_a_job_on_an_attached_dev_machine_whose_socket_opens_launches_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A dev machine (``machine up``) attached while its socket takes 0.5 s to open, one job
    queued meanwhile: the job waits for that machine; no RunComfy machine is launched (and
    billed) for it (a flaky CI test found it: test_dev_machine_up_run_attaches_down)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        _slow_sockets(cloud, 0.5)
        config = sim_config(cloud)
        attach = {"dev-1": url}
        async with run_conjure(cloud, log, tmp_path, config, wall, attach=attach) as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
            leased = {m.server_id: m.kind for m in conjure.state.machines.values()}
    names = [type(r.event).__name__ for r in log.records()]
    assert "MachineLaunchRequested" not in names, leased
