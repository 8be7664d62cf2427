"""The WorkflowActor and the runtime's containment, against the in-memory simulated cloud
under MockClock: a 429 while following, inputs on resume, interrupted jobs, a job whose
actor keeps crashing, a full disk."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from actor_support import crash_when, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors import job as job_module
from conjure_actors.actors.conjure import RunStoppedError
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.errgroups import meaningful
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings
from conjure_actors.testing import open_simulated_conjure

GRAPH = json.loads(bundled_workflow())
SLOW = ComfyTimings(scale=200.0)


def _events(log: eventlog.MemoryLog[Any], name: str) -> list[Any]:
    return [r.event for r in log.records() if type(r.event).__name__ == name]


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_rate_limit_while_following_keeps_following_the_same_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17: 429s while the prompt runs (past the client's retries) do not abandon it:
    the same prompt is followed again, the work runs once, the job succeeds on attempt 1."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    caplog.set_level(logging.INFO, logger="conjure_actors.actors.job")
    async with (
        open_test_cloud(wall.now, timings=SLOW) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
        sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
        # A rate-limit storm on the machine for two simulated minutes.
        sim.faults = ComfyFaults(http_429_rate=1.0, http_429_burst=1000, retry_after=1.0)
        await trio.sleep(120)
        sim.faults = ComfyFaults()
        sim._burst_left = 0  # the storm is over
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state
    assert state.jobs[job].status == "succeeded", state.jobs[job].error
    assert state.jobs[job].attempt == 1
    assert _events(log, "JobRetrying") == []
    assert len(_events(log, "PromptSubmitting")) == 1
    assert len(sim.prompts_run) == 1
    assert any("following it again" in r.getMessage() for r in caplog.records)


async def test_input_path_is_absolute_so_resume_works_from_anywhere(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: the kept copy of the input is logged with an absolute path."""
    monkeypatch.chdir(tmp_path)  # "out-relative" in a folder of its own, not the checkout's
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, Path("out-relative"), sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        path = conjure.state.jobs[job].image_path
        await conjure.shutdown()
    assert path is not None
    assert Path(path).is_absolute()
    assert await trio.Path(path).is_file()
    await trio.Path(path).unlink()


async def test_missing_input_on_resume_fails_that_job_naming_the_file(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Issue 17: an input really gone at resume fails its job with one line naming the file;
    the run goes on and stops its machines."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    job = ""

    async def submit(conjure: Any) -> None:
        nonlocal job
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")

    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        await crash_when(cloud, log, tmp_path / "first", config, wall, submit)
        log = log.reopen()
        kept = next(
            Path(r.event.image_path)
            for r in log.records()
            if type(r.event).__name__ == "JobSubmitted"
        )
        await trio.Path(kept).unlink()
        async with run_conjure(cloud, log, tmp_path / "second", config, wall) as conjure:
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            await conjure.shutdown()
            state = conjure.state
        assert cloud.running() == []
    error = state.jobs[job].error
    assert state.jobs[job].status == "failed"
    assert error is not None
    assert error.error_type == "InputMissing"
    assert str(kept) in error.message
    assert "\n" not in error.message


@pytest.mark.slow
async def test_shutdown_interrupts_and_resume_finishes_but_cancelled_stays_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """An ordered shutdown mid-run leaves unfinished jobs interrupted (a cancelled one stays
    cancelled); a start on the same log runs the interrupted ones to the end."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=SLOW) as cloud:
        config = sim_config(cloud)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            keep = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="a")
            drop = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="b")
            await conjure.cancel(drop, "user")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[keep].execution == "started")
            await conjure.shutdown("interrupted")
            assert conjure.state.jobs[keep].status == "interrupted"
            assert conjure.state.jobs[drop].status == "cancelled"
        assert cloud.running() == []
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            await conjure.shutdown()
            state = conjure.state
        assert cloud.running() == []
    assert state.jobs[keep].status == "succeeded"
    assert state.jobs[drop].status == "cancelled"
    assert len(_events(log, "JobResumed")) == 1


async def test_a_job_whose_actor_keeps_crashing_fails_alone(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one job's actor: it is restarted up to its own limit, then that job fails
    (InternalError, naming the error); the other job succeeds and the run goes on."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    doomed: list[str] = []
    original = job_module.WorkflowActor._on_leased

    async def on_leased(self: Any, lease: Any) -> None:
        if self.job_id in doomed:
            raise KeyError("outputs")  # e.g. an answer of an unexpected shape, unhandled
        await original(self, lease)

    monkeypatch.setattr(job_module.WorkflowActor, "_on_leased", on_leased)
    async with open_test_cloud(wall.now) as cloud:
        async with open_simulated_conjure(
            cloud, log, sim_config(cloud), wall=wall, out_dir=tmp_path
        ) as conjure:
            bad = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="bad")
            doomed.append(bad)
            good = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="good")
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
        assert cloud.running() == []
    assert state.jobs[good].status == "succeeded"
    assert state.jobs[bad].status == "failed"
    error = state.jobs[bad].error
    assert error is not None
    assert error.error_type == "InternalError"
    assert "KeyError" in error.message
    crashes = _events(log, "ActorCrashed")
    assert len(crashes) == job_module.MAX_JOB_CRASHES + 1
    assert {c.actor for c in crashes} == {f"root/jobs/{bad}"}
    assert _events(log, "SupervisorEscalated") == []


@attrs.define
class _FullDisk:
    """A MemoryLog whose appends fail with DiskFullError once ``full`` is set."""

    log: eventlog.MemoryLog[Any]
    full: bool = False


async def test_a_full_disk_stops_every_machine_and_says_so_in_one_line(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log refuses writes mid-run (disk full): the run ends, every machine is stopped
    anyway, and one line says the log is full and which machines were stopped."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    disk = _FullDisk(log)
    original = type(log).stage_many

    def stage_many(self: Any, events: Any, *args: Any, **kwargs: Any) -> Any:
        if disk.full:
            raise eventlog.DiskFullError("r.log", "No space left on device")
        return original(self, events, *args, **kwargs)

    monkeypatch.setattr(type(log), "stage_many", stage_many)
    machines: list[str] = []

    async def run_until_the_disk_fills(cloud: Any) -> None:
        async with open_simulated_conjure(
            cloud, log, sim_config(cloud), wall=wall, out_dir=tmp_path
        ) as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            machines.extend(conjure.running_machines())
            disk.full = True
            with trio.fail_after(3600):
                await conjure.wait_until_idle()

    async with open_test_cloud(wall.now, timings=SLOW) as cloud:
        with pytest.raises(BaseException) as caught:  # noqa: PT011 - checked just below
            await run_until_the_disk_fills(cloud)
        assert cloud.running() == []
    assert machines
    error = meaningful(caught.value)
    assert isinstance(error, RunStoppedError), caught.value
    line = str(error)
    assert "\n" not in line
    assert "refused writes" in line
    assert all(m in line for m in machines), (machines, line)
    # What failed and what was stopped, apart (serve words its own line from them).
    assert isinstance(error.failure, eventlog.DiskFullError), error.failure
    assert all(m in error.stops for m in machines), (machines, error.stops)
    assert "refused writes" not in error.stops


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_one_job_is_a_sequence_of_messages_and_events(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WorkflowActor of one job handles one report at a time, in the documented order,
    and every job event of the log was emitted while it handled one of them."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    seen: list[str] = []
    original = job_module.WorkflowActor._handle

    async def handle(self: Any, msg: Any) -> None:
        seen.append(type(msg).__name__)
        await original(self, msg)

    monkeypatch.setattr(job_module.WorkflowActor, "_handle", handle)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        assert conjure.state.jobs[job].status == "succeeded"
    squeezed = [m for i, m in enumerate(seen) if i == 0 or seen[i - 1] != m]
    assert squeezed == [  # queued without an actor: it starts with its lease (issue 16)
        "_Leased",
        "_Uploaded",
        "_Submitted",
        "_Progress",
        "_Saved",
        "_Downloaded",
    ], seen
    kinds = [type(r.event).__name__ for r in log.records() if getattr(r.event, "job_id", None)]
    assert kinds[:5] == [
        "JobSubmitted",
        "JobQueued",
        "MachineLeased",
        "JobStarted",
        "InputUploaded",
    ]
    assert kinds[-2:] == ["JobSucceeded", "MachineReleased"]


async def test_the_last_output_and_the_success_are_one_append(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the last output's OutputSaved and JobSucceeded are journaled in one append
    (one commit); every output before it has an append of its own, in the same order."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    groups: list[list[str]] = []
    original = eventlog.Journal.append_many

    async def append_many(self: Any, events: Any) -> Any:
        events = list(events)
        groups.append([type(e).__name__ for e in events])
        return await original(self, events)

    monkeypatch.setattr(eventlog.Journal, "append_many", append_many)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        assert conjure.state.jobs[job].status == "succeeded"
    assert ["OutputSaved", "JobSucceeded"] in groups, groups
    kinds = [type(r.event).__name__ for r in log.records() if getattr(r.event, "job_id", None)]
    saved = _events(log, "OutputSaved")
    assert len(saved) == len(conjure.state.jobs[job].outputs) >= 2
    assert kinds[-3:] == ["OutputSaved", "JobSucceeded", "MachineReleased"]


async def test_an_unexpected_answer_fails_the_attempt_not_the_actor(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ComfyUI answer of an unexpected shape (a KeyError inside the client) fails that
    attempt with its reason; retried, then the job fails; no actor crashes."""
    from conjure_actors.clients.comfyui import ComfyUIClient

    async def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise KeyError("filename")

    monkeypatch.setattr(ComfyUIClient, "download_to", broken)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state
    error = state.jobs[job].error
    assert state.jobs[job].status == "failed"
    assert error is not None
    assert error.error_type == "RetriesExhausted"
    assert "KeyError: 'filename'" in error.message
    assert len(_events(log, "JobRetrying")) == 2


@pytest.mark.slow
async def test_an_interrupted_prompt_on_a_users_comfyui_is_reattached_not_run_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """On the user's ComfyUI an interrupt leaves the prompt running there; the resume
    re-attaches to it: the job succeeds on attempt 1 and the work ran once."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=SLOW) as cloud:
        url, sim = cloud.standalone_comfyui()
        config = attrs.evolve(sim_config(cloud), comfyui_url=url)
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
            await conjure.shutdown("interrupted")
            assert conjure.state.jobs[job].status == "interrupted"
        log.close()
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall, mode="comfyui") as conjure:
            with trio.fail_after(7200):
                await conjure.wait_until_idle()
            state = conjure.state
    assert state.jobs[job].status == "succeeded"
    assert state.jobs[job].attempt == 1
    assert len(_events(log, "PromptSubmitting")) == 1
    assert len(sim.prompts_run) == 1


@pytest.mark.slow
async def test_every_waiter_returns_when_the_last_job_ends(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Several wait_until_idle at once: each returns once every job ended, all together
    (each woken by the last job's end, none left to its timeout)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    returned: list[float] = []
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        jobs = [
            await conjure.submit(GRAPH, image=example_sketch_png(), prompt=f"p{i}")
            for i in range(3)
        ]

        async def waiter() -> None:
            await conjure.wait_until_idle()
            returned.append(trio.current_time())

        with trio.fail_after(3600):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(waiter)
        assert all(conjure.state.jobs[j].status == "succeeded" for j in jobs)
    assert len(returned) == 3
    assert max(returned) - min(returned) < 0.5  # none was left to its 1 s timeout


async def test_an_output_this_machine_cannot_save_fails_the_job_without_running_it_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our disk full while saving an output: the prompt is not submitted again (each retry
    would buy the same GPU work and fail the same way); the job fails once, saying what to
    fix."""
    from conjure_actors.clients import download

    def disk_full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "open_temp_beside", disk_full)
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path / "out", sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state
    error = state.jobs[job].error
    assert state.jobs[job].status == "failed"
    assert error is not None
    assert error.error_type == "OutputFolderRefused"  # the folder's disk, not this file
    assert "No space left on device" in error.message
    assert "free space" in error.message
    assert len(_events(log, "PromptSubmitting")) == 1
    assert _events(log, "JobRetrying") == []
