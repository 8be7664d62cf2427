"""A machine's lost signal (``Lease.lost``): a ``trio.Event`` that also calls its watchers
back as it is set, so that a running job watches its machine, and its attempt's deadline,
without a task of its own (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import event_names, open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors import LostSignal
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import RetryConfig
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyTimings

GRAPH = json.loads(bundled_workflow("invert_save.json"))
SLOW = json.loads(bundled_workflow())  # the CONJURE workflow: its nodes take time


def test_setting_it_calls_each_watcher_back_once() -> None:
    """``set`` calls every watcher once; setting it again calls nobody."""
    lost = LostSignal()
    calls: list[str] = []
    lost.watch("a", lambda: calls.append("a"))
    lost.watch("b", lambda: calls.append("b"))
    lost.set()
    lost.set()
    assert sorted(calls) == ["a", "b"]
    assert lost.is_set()
    assert lost.watchers == 0


def test_a_watch_after_it_was_set_is_called_at_once() -> None:
    """Watching a signal already set calls back at once (a lease handed out as it is lost)."""
    lost = LostSignal()
    lost.set()
    calls: list[int] = []
    lost.watch("a", lambda: calls.append(1))
    assert calls == [1]
    assert lost.watchers == 0


def test_an_unwatched_callback_is_not_called() -> None:
    """``unwatch`` forgets the key's callback; a new watch of the same key replaces it."""
    lost = LostSignal()
    calls: list[str] = []
    lost.watch("a", lambda: calls.append("first"))
    lost.watch("a", lambda: calls.append("second"))
    lost.watch("b", lambda: calls.append("b"))
    lost.unwatch("b")
    lost.unwatch("nobody")
    lost.set()
    assert calls == ["second"]


async def test_it_wakes_its_waiters() -> None:
    """Like a ``trio.Event``: ``wait`` returns once it is set."""
    lost = LostSignal()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lost.wait)
        await trio.testing.wait_all_tasks_blocked()
        lost.set()
    assert lost.is_set()


async def test_a_finished_job_no_longer_watches_its_machine(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A job that ended leaves no callback on its machine's lost signal (none piles up)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud, max_machines=1), wall) as conjure,
    ):
        jobs = [await conjure.submit(GRAPH) for _ in range(3)]
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        assert all(conjure.state.jobs[j].status == "succeeded" for j in jobs)
        (live,) = conjure.pool.live.values()
        assert live.lost.watchers == 0


async def test_an_attempt_past_its_deadline_is_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A prompt that runs past ``attempt_timeout`` (the child's deadline, no guard task) is a
    failed attempt: retried, then failed once the attempts are spent, not at the total
    timeout."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=10_000.0)) as cloud:
        retry = RetryConfig(initial=1.0, max_attempts=2, attempt_timeout=60.0, total_timeout=3000.0)
        config = sim_config(cloud, max_machines=1, retry=retry)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(SLOW, image=example_sketch_png(), prompt="x")
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "failed")
            failed = conjure.state.jobs[job]
    assert failed.error is not None
    assert "attempt timed out after 60 s" in failed.error.message
    assert failed.attempt == 2
    assert "JobRetrying" in event_names(log, job)
