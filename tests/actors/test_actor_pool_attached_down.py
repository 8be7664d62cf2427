"""An attached ComfyUI (``--comfyui-url``) that goes away mid-job (G11): the pool's health
check finds it down (``MachineUnhealthy``, said once), its job is queued again at once
(not left "running" until the attempt timeout), every job waits for it, and once it
answers again (``MachineHealthy``) the jobs run in their submission order."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.cloud import STANDALONE_HOST
from conjure_actors.sim.timings import ComfyTimings

GRAPH = json.loads(bundled_workflow())


def _take_down(cloud: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standalone ComfyUI's process dies: its prompt and sockets are gone, and nothing
    answers at its address (until the test undoes the patch)."""
    _cut_off(cloud, monkeypatch)
    cloud.standalone_comfyui()[1].restart()


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_a_comfyui_gone_mid_job_is_unhealthy_and_its_job_waits_in_its_place(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Down mid-job: unhealthy within a few polls, said once on the terminal (no URL), the
    job queued again at once, still ahead of the job submitted after it; both run once the
    ComfyUI answers again (said once), the first one first."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    caplog.set_level(logging.WARNING, logger="conjure_actors.actors.pool")
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            first, second = await _go_away_and_back(cloud, conjure, monkeypatch)
    leased = [
        r.event.job_id
        for r in log.records()
        if type(r.event).__name__ == "MachineLeased" and r.event.job_id in (first, second)
    ]
    assert leased == [first, first, second]  # back in its place: before the later job
    names = [type(r.event).__name__ for r in log.records()]
    assert names.count("MachineUnhealthy") == 1
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("does not answer" in line for line in said) == 1
    assert sum("answers again" in line for line in said) == 1
    assert not any(STANDALONE_HOST in line for line in said)


async def _go_away_and_back(
    cloud: Any, conjure: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """One job running when the ComfyUI goes away, a second queued behind it; both wait
    5 min, then the ComfyUI answers again and both run."""
    first = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="first")
    with trio.fail_after(600):
        await wait_for(conjure, lambda s: s.jobs[first].execution == "started")
    second = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="second")
    with monkeypatch.context() as down:
        _take_down(cloud, down)
        started = trio.current_time()
        with trio.fail_after(120):  # a few polls, far from the 30 min attempt timeout
            await wait_for(conjure, lambda s: not s.machines["comfyui"].healthy)
            await wait_for(conjure, lambda s: not s.machines["comfyui"].leases)
        assert trio.current_time() - started < 120
        await trio.sleep(300)  # down for 5 min: both wait, neither fails nor runs
        # The first keeps its prompt (to look it up there once it answers), unleased.
        assert conjure.state.jobs[first].status == "running"
        assert conjure.state.jobs[second].status == "queued"
        assert not conjure.state.machines["comfyui"].leases
    with trio.fail_after(3600):
        await conjure.wait_until_idle()
    assert conjure.state.jobs[first].status == "succeeded"
    assert conjure.state.jobs[second].status == "succeeded"
    assert conjure.state.jobs[first].failures == 0  # its ComfyUI's restart: not its failure
    assert conjure.state.machines["comfyui"].healthy
    return first, second


def _cut_off(cloud: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standalone ComfyUI is cut off (its network, not its process): it runs on."""
    transport_for, sim_for = cloud._transport_for, cloud._sim_for
    monkeypatch.setattr(
        cloud,
        "_transport_for",
        lambda host: None if host == STANDALONE_HOST else transport_for(host),
    )
    monkeypatch.setattr(
        cloud, "_sim_for", lambda host: None if host == STANDALONE_HOST else sim_for(host)
    )


@pytest.mark.slow  # ~0.25 s: the finished-prompt case below runs without it
async def test_a_prompt_still_running_on_a_comfyui_cut_off_is_followed_again_when_it_answers(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off (not restarted) mid-job, a prompt of minutes: when the ComfyUI answers again
    the job re-attaches to its prompt still running there and follows it to its end; it is
    neither stopped nor run a second time."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=100.0)) as cloud:
        url, sim = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            old = conjure.state.jobs[job].prompt_id
            with monkeypatch.context() as off:
                _cut_off(cloud, off)
                with trio.fail_after(120):
                    await wait_for(conjure, lambda s: not s.machines["comfyui"].leases)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
            assert conjure.state.jobs[job].prompt_id == old
    assert sim.prompts_run == [old]
    names = [type(r.event).__name__ for r in log.records()]
    assert "LatePromptStopped" not in names
    assert names.count("PromptSubmitting") == 1


@pytest.mark.slow
async def test_a_prompt_that_finished_on_a_comfyui_cut_off_is_not_run_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off (not restarted) mid-job, and its prompt finishes there meanwhile: when the
    ComfyUI answers again the job re-attaches to that prompt and downloads its outputs; the
    prompt is not submitted a second time."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10.0)) as cloud:
        url, sim = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            old = conjure.state.jobs[job].prompt_id
            with monkeypatch.context() as off:
                _cut_off(cloud, off)
                with trio.fail_after(120):
                    await wait_for(conjure, lambda s: not s.machines["comfyui"].healthy)
                await trio.sleep(600)  # down for 10 min: the prompt finishes there, unseen
                assert sim.queue_remaining == 0
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
            assert conjure.state.jobs[job].prompt_id == old
    assert sim.prompts_run == [old]
    submitting = [r.event for r in log.records() if type(r.event).__name__ == "PromptSubmitting"]
    assert len(submitting) == 1


@pytest.mark.slow
async def test_a_job_sent_to_a_comfyui_just_gone_has_it_marked_down_at_once_not_failed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ComfyUI goes away between two checks (polls of 30 s) and a job is sent to it: its
    request fails, the pool checks at once, fails too, and marks it down then (not 3 polls
    later): the job waits for it in its place, no attempt counted as failed."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud, poll_interval=30.0), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            with monkeypatch.context() as down:
                _take_down(cloud, down)
                gone = trio.current_time()
                job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
                with trio.fail_after(3600):
                    await wait_for(conjure, lambda s: not s.machines["comfyui"].healthy)
                assert trio.current_time() - gone < 30.0  # before the next poll's check
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            assert conjure.state.jobs[job].status == "succeeded"
            assert conjure.state.jobs[job].failures == 0
    names = [type(r.event).__name__ for r in log.records()]
    assert "JobRetrying" not in names


@pytest.mark.slow  # ~0.3 s: the inner loop runs the one above
async def test_a_comfyui_just_back_is_not_marked_down_again_on_one_job_failure(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No flapping: marked down at once on a job's failed request, back, then gone again
    right away: this time one failed check after a job's failed request is not enough, it
    takes 3 failed checks in a row (the polls', or those the job's failures ask for)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        url, _ = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud, poll_interval=30.0), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            with monkeypatch.context() as down:
                _take_down(cloud, down)
                await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
                with trio.fail_after(3600):
                    await wait_for(conjure, lambda s: not s.machines["comfyui"].healthy)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.machines["comfyui"].healthy)
            with monkeypatch.context() as down:
                _take_down(cloud, down)
                await conjure.submit(GRAPH, image=example_sketch_png(), prompt="y")
                with trio.fail_after(3600):
                    await wait_for(conjure, lambda s: not s.machines["comfyui"].healthy)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
    reasons = [
        r.event.reason for r in log.records() if type(r.event).__name__ == "MachineUnhealthy"
    ]
    assert reasons == [
        "/system_stats failed, and a job's request to it failed too",
        "/system_stats failed 3 times in a row",
    ]
