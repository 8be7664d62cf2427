"""A prompt whose POST /prompt lands after its job gave up on it is found and stopped by the
MachineActor (``WatchLatePrompt`` -> ``LatePromptStopped``): after a cancel (the POST took
longer than POST_PATIENCE), beside a retry (outcome unknown, not found), after a crash
mid-POST (the restarted run's lookup said unknown)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from actor_support import (
    crash_when,
    open_test_cloud,
    prompt_left,
    run_conjure,
    sim_config,
    wait_for,
)

import eventlog
from conjure_actors.actors import pool as pool_mod
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.actors.job import PoolPort
from conjure_actors.actors.messages import StopMachine, WatchLatePrompt
from conjure_actors.clients import errors as cerr
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.runtime import ActorRef
from conjure_actors.runtime.errors import MailboxFullError
from conjure_actors.sim.comfyui import ComfyTimings
from conjure_actors.testing.runtime import open_simulated_conjure

SLOW = json.loads(bundled_workflow())


@asynccontextmanager
async def _one_job(
    tmp_path: Path, *, scale: float
) -> AsyncIterator[tuple[Any, eventlog.MemoryLog[Any], Any, str]]:
    """A run on a simulated cloud whose nodes take ``scale`` times their time, with one job
    of the bundled workflow submitted: (cloud, log, conjure, job)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=scale)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
        yield cloud, log, conjure, job


class SlowNetwork:
    """The first POST /prompt reaches ComfyUI ``delay`` s after it is sent (a congested
    path): the sender may give up (cancelled, its process dead, or its connection lost
    ``cut_after`` s after sending: OutcomeUnknownError), the bytes still arrive. ``pids``:
    the prompt ids posted, in order."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, delay: float, cut_after: float | None = None
    ) -> None:
        self.delay = delay
        self.sent = trio.Event()
        self.landed = trio.Event()
        self.pids: list[str] = []
        self.transport: Any = None  # for a POST whose sender's process died
        real_submit = ComfyUIClient.submit

        async def submit(client: ComfyUIClient, *args: Any, **kwargs: Any) -> Any:
            self.pids.append(kwargs["prompt_id"])
            if len(self.pids) > 1:
                return await real_submit(client, *args, **kwargs)
            answers: list[Any] = []

            async def network() -> None:
                await trio.sleep(self.delay)
                if client._http.is_closed:  # the sender's process died: the bytes travel on
                    async with httpx.AsyncClient(transport=self.transport) as http:
                        other = ComfyUIClient(client._base, http=http)
                        answers.append(await real_submit(other, *args, **kwargs))
                else:
                    answers.append(await real_submit(client, *args, **kwargs))
                self.landed.set()

            trio.lowlevel.spawn_system_task(network)
            self.sent.set()
            with trio.move_on_after(math.inf if cut_after is None else cut_after):
                await self.landed.wait()
                return answers[0]
            raise cerr.OutcomeUnknownError("the connection was lost after the request was sent")

        monkeypatch.setattr(ComfyUIClient, "submit", submit)


def _stopped(log: eventlog.MemoryLog[Any]) -> list[ev.LatePromptStopped]:
    return [r.event for r in log.records() if isinstance(r.event, ev.LatePromptStopped)]


def _record_watches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompt ids jobs give up on (``WatchLatePrompt`` told), in order."""
    watched: list[str] = []
    real = PoolPort.watch_late_prompt

    def watch(port: PoolPort, server_id: str, prompt_id: str, job_id: str) -> None:
        watched.append(prompt_id)
        real(port, server_id, prompt_id, job_id)

    monkeypatch.setattr(PoolPort, "watch_late_prompt", watch)
    return watched


def _crash_on_boom(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MachineActor crashes (its supervisor restarts it) when told ``"boom"``."""
    original = pool_mod.MachineActor.receive

    async def receive(self: Any, msg: Any) -> Any:
        if msg == "boom":
            raise RuntimeError("the machines actor crashes")
        return await original(self, msg)

    monkeypatch.setattr(pool_mod.MachineActor, "receive", receive)


async def test_a_post_landing_after_its_job_was_cancelled_is_stopped(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D3: the POST lands 31 s after it was sent, past POST_PATIENCE after the cancel."""
    net = SlowNetwork(monkeypatch, 31.0)
    async with _one_job(tmp_path, scale=10_000.0) as (cloud, log, conjure, job):
        with trio.fail_after(3600):
            await net.sent.wait()
            await conjure.cancel(job)
            await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
            await net.landed.wait()
            await wait_for(conjure, lambda s: bool(_stopped(log)))
        sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
        left = prompt_left(sim, net.pids[0])
        watches = dict(conjure.pool.late)
    assert left is None, f"job cancelled, its prompt {net.pids[0]} is {left} on the paid machine"
    assert [(e.prompt_id, e.job_id) for e in _stopped(log)] == [(net.pids[0], job)]
    assert watches == {}


async def test_a_post_given_up_then_landing_beside_the_retry_is_stopped_not_the_retry(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D4: attempt 1's POST is given up (its connection lost; the lookup does not find it);
    the job retries with a fresh prompt; attempt 1's lands later: it is stopped (queued
    behind attempt 2's), attempt 2's runs on."""
    net = SlowNetwork(monkeypatch, 31.0, cut_after=5.0)
    async with _one_job(tmp_path, scale=10_000.0) as (cloud, log, conjure, job):
        with trio.fail_after(3600):
            await wait_for(
                conjure, lambda s: len(net.pids) > 1 and s.jobs[job].execution == "submitted"
            )
            await net.landed.wait()
            await wait_for(conjure, lambda s: bool(_stopped(log)))
        sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
        first = prompt_left(sim, net.pids[0])
        second = prompt_left(sim, net.pids[1])
        now_pid = conjure.state.jobs[job].prompt_id
        await conjure.cancel(job)
    assert now_pid == net.pids[1]
    assert first is None, f"attempt 1's prompt {net.pids[0]} is {first}, beside attempt 2's"
    assert second is not None, "attempt 2's prompt, the one followed, was stopped"
    assert [e.prompt_id for e in _stopped(log)] == [net.pids[0]]


@pytest.mark.slow  # ~3 s: two runs, a whole job
@pytest.mark.parametrize("lookup", ["unknown", "failed"])
async def test_a_post_of_a_crashed_run_landing_after_the_restart_resubmitted_is_stopped(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lookup: str,
) -> None:
    """D5: the process dies with the POST on the wire (its side of the connection is gone
    1 s later, as a dead process's is); the bytes reach ComfyUI 40 s after they were sent,
    after the restarted run looked the prompt up (``lookup``: "unknown", or it failed) and
    submitted a fresh one."""
    net = SlowNetwork(monkeypatch, 40.0, cut_after=1.0)
    real_find = ComfyUIClient.find_prompt
    failing: list[str] = []  # the prompt whose next lookup fails, once

    async def find_prompt(client: ComfyUIClient, prompt_id: str, **kwargs: Any) -> Any:
        if prompt_id in failing:
            failing.remove(prompt_id)
            raise cerr.TransportError("connection reset")
        return await real_find(client, prompt_id, **kwargs)

    monkeypatch.setattr(ComfyUIClient, "find_prompt", find_prompt)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud:
        config = sim_config(cloud)
        net.transport = cloud.http_transport()
        job = ""

        async def until_posting(conjure: Any) -> None:
            nonlocal job
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await net.sent.wait()

        await crash_when(cloud, log, tmp_path, config, wall, until_posting)
        if lookup == "failed":
            failing.append(net.pids[0])
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
                await net.landed.wait()
                await wait_for(conjure, lambda s: bool(_stopped(log)))
            sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
            left = prompt_left(sim, net.pids[0])
            await conjure.shutdown()
            state = conjure.state
    assert state.jobs[job].status == "succeeded"
    assert state.jobs[job].prompt_id != net.pids[0]
    assert left is None, f"the crashed run's prompt {net.pids[0]} is {left}, unfollowed"
    assert [e.prompt_id for e in _stopped(log)] == [net.pids[0]]


async def test_a_job_whose_post_is_answered_gives_no_prompt_up(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The happy path: no watch is asked for, none runs, nothing is logged about one."""
    watched = _record_watches(monkeypatch)
    async with _one_job(tmp_path, scale=1.0) as (_cloud, log, conjure, job):
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        watches = dict(conjure.pool.late)
        status = conjure.state.jobs[job].status
    assert status == "succeeded"
    assert (watched, watches, _stopped(log)) == ([], {}, [])


@pytest.mark.slow
async def test_a_failing_lookup_of_a_given_up_prompt_is_tried_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's first lookups of the given-up prompt fail: the watch looks again at
    its next tick (the MachineActor does not crash) and stops the prompt."""
    net = SlowNetwork(monkeypatch, 31.0)
    real_find = ComfyUIClient.find_prompt
    lookups: list[str] = []

    async def find_prompt(client: ComfyUIClient, prompt_id: str, **kwargs: Any) -> Any:
        if net.landed.is_set() and prompt_id == net.pids[0]:
            lookups.append(prompt_id)
            if len(lookups) <= 2:
                raise cerr.TransportError("connection reset")
        return await real_find(client, prompt_id, **kwargs)

    monkeypatch.setattr(ComfyUIClient, "find_prompt", find_prompt)
    async with _one_job(tmp_path, scale=10_000.0) as (cloud, log, conjure, job):
        with trio.fail_after(3600):
            await net.sent.wait()
            await conjure.cancel(job)
            await net.landed.wait()
            await wait_for(conjure, lambda s: bool(_stopped(log)))
        sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
        left = prompt_left(sim, net.pids[0])
    assert len(lookups) > 2
    assert left is None, f"prompt {net.pids[0]} is {left} after its lookups failed twice"
    assert [e.prompt_id for e in _stopped(log)] == [net.pids[0]]


async def test_the_watch_of_a_given_up_prompt_ends_with_its_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine is stopped while its given-up prompt is watched: the watch ends there
    (nothing can run on a stopped machine), with no more lookups."""
    net = SlowNetwork(monkeypatch, 200.0)
    watched = _record_watches(monkeypatch)
    real_find = ComfyUIClient.find_prompt
    lookups: list[float] = []

    async def find_prompt(client: ComfyUIClient, prompt_id: str, **kwargs: Any) -> Any:
        if net.pids and prompt_id == net.pids[0]:
            lookups.append(trio.current_time())
        return await real_find(client, prompt_id, **kwargs)

    monkeypatch.setattr(ComfyUIClient, "find_prompt", find_prompt)
    async with _one_job(tmp_path, scale=10_000.0) as (_cloud, log, conjure, job):
        with trio.fail_after(3600):
            await net.sent.wait()
            await conjure.cancel(job)
            await wait_for(conjure, lambda s: s.jobs[job].status == "cancelled")
            await wait_for(conjure, lambda s: bool(watched) and bool(conjure.pool.late))
            server_id = conjure.state.jobs[job].server_id
            assert server_id is not None
            await conjure.machines.tell(StopMachine(server_id, "user"))
            await wait_for(conjure, lambda s: s.machines[server_id].status == "stopped")
            stopped_at = trio.current_time()
            await trio.sleep(3 * pool_mod.LATE_PROMPT_EVERY)
        watches = dict(conjure.pool.late)
    assert set(watched) == {net.pids[0]}
    assert watches == {}
    assert [t for t in lookups if t > stopped_at] == []
    assert _stopped(log) == []


async def test_the_watch_of_a_given_up_prompt_outlives_a_restart_of_the_machine_actor(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MachineActor crashes (its supervisor restarts it) while it watches a given-up
    prompt: the watch goes on in the new incarnation and stops the prompt when it lands."""
    net = SlowNetwork(monkeypatch, 45.0)
    _crash_on_boom(monkeypatch)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud,
        open_simulated_conjure(
            cloud, log, sim_config(cloud), wall=wall, out_dir=tmp_path
        ) as conjure,
    ):
        job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await net.sent.wait()
            await conjure.cancel(job)
            await wait_for(conjure, lambda s: bool(conjure.pool.late))
            await conjure.machines.tell("boom")
            await wait_for(conjure, lambda s: s.actors["root/machines"].restarts > 0)
            await net.landed.wait()
            await wait_for(conjure, lambda s: bool(_stopped(log)))
        left = prompt_left(cloud.machine_sim(conjure.state.jobs[job].server_id), net.pids[0])
    assert left is None
    assert [e.prompt_id for e in _stopped(log)] == [net.pids[0]]


def test_a_prompt_its_job_follows_again_is_not_stopped() -> None:
    """A job running with the given-up prompt as its prompt (it re-attached to it after a
    restart of its actor) keeps it; once it retried (a new prompt) or ended, it is stopped."""
    job = SimpleNamespace(status="running", prompt_id="p1")
    state = SimpleNamespace(jobs={"j": job})
    assert pool_mod._followed(state, "j", "p1")
    job.prompt_id = "p2"
    assert not pool_mod._followed(state, "j", "p1")
    job.prompt_id, job.status = "p1", "cancelled"
    assert not pool_mod._followed(state, "j", "p1")
    assert not pool_mod._followed(state, "other", "p1")


async def test_a_given_up_prompt_stopped_just_before_a_restart_of_the_machine_actor_is_logged(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch deletes the late prompt (queued behind the retry's), then the MachineActor
    crashes before its next lookup finds it gone: the new incarnation still logs the stop."""
    net = SlowNetwork(monkeypatch, 31.0, cut_after=5.0)
    deleted = trio.Event()
    real_delete = ComfyUIClient.delete_from_queue

    async def delete(client: ComfyUIClient, prompt_id: str) -> Any:
        answer = await real_delete(client, prompt_id)
        if "late-prompt" in trio.lowlevel.current_task().name:  # the watch's, not the job's
            deleted.set()
        return answer

    monkeypatch.setattr(ComfyUIClient, "delete_from_queue", delete)
    _crash_on_boom(monkeypatch)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud,
        open_simulated_conjure(
            cloud, log, sim_config(cloud), wall=wall, out_dir=tmp_path
        ) as conjure,
    ):
        job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await deleted.wait()
            await conjure.machines.tell("boom")
            await wait_for(conjure, lambda s: s.actors["root/machines"].restarts > 0)
            await wait_for(conjure, lambda s: not conjure.pool.late)
        await conjure.cancel(job)
    assert [(e.prompt_id, e.was) for e in _stopped(log)] == [(net.pids[0], "pending")]


async def test_a_prompt_given_up_while_the_pool_mailbox_is_full_is_still_watched(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job gives its prompt up (cancelled while its POST is on the wire) while the
    MachineActor's mailbox is full: the watch waits for room instead of being dropped, and
    the prompt that lands later is stopped."""
    net = SlowNetwork(monkeypatch, 31.0)
    real = ActorRef.tell_nowait
    refused: list[str] = []

    def full_for_watches(self: ActorRef, msg: object) -> None:
        if isinstance(msg, WatchLatePrompt):
            refused.append(msg.prompt_id)
            raise MailboxFullError(f"mailbox of actor {self.path} is full")
        real(self, msg)

    monkeypatch.setattr(ActorRef, "tell_nowait", full_for_watches)
    async with _one_job(tmp_path, scale=10_000.0) as (cloud, log, conjure, job):
        with trio.fail_after(3600):
            await net.sent.wait()
            await conjure.cancel(job)
            await net.landed.wait()
            await wait_for(conjure, lambda s: bool(_stopped(log)))
        left = prompt_left(cloud.machine_sim(conjure.state.jobs[job].server_id), net.pids[0])
    assert set(refused) == {net.pids[0]}  # refused at once (given up, and again at cleanup)
    assert left is None
    assert [e.prompt_id for e in _stopped(log)] == [net.pids[0]]
