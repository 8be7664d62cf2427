"""An attached ComfyUI (``--comfyui-url``) whose WebSocket is still opening when the first
job is queued, or was lost with a MachineActor restart (MockClock): the job waits for the
socket, so its prompt's frames reach it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors import pool as pool_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.testing import open_simulated_conjure

GRAPH = json.loads(bundled_workflow())


def _slow_sockets(cloud: Any, seconds: float = 2.0) -> None:
    """Every WebSocket to ``cloud`` takes ``seconds`` to open."""
    fast = cloud.ws_connect

    @asynccontextmanager
    async def slow(target: str) -> AsyncIterator[Any]:
        await trio.sleep(seconds)
        async with fast(target) as ws:
            yield ws

    cloud.ws_connect = slow


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
