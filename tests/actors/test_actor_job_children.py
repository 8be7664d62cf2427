"""An attempt's POST, follow and download run in one child task of the job's actor (issue
16), and the events still come in the order the actor wrote them from that child's reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from actor_support import event_names, open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.actors.example import bundled_workflow
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event

GRAPH = json.loads(bundled_workflow("invert_save.json"))


class _Spawned(trio.abc.Instrument):
    """The names of the tasks spawned while it is installed, and their steps by name."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.steps: dict[str, int] = {}

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


LAST_STEPS: dict[str, int] = {}
"""The task steps of the last ``_one_job`` run, by task name."""


async def _one_job(tmp_path: Path) -> tuple[str, list[str], list[str]]:
    """Run one invert_save job: (its id, its events' names, the names of its tasks); the
    steps of its tasks go to ``LAST_STEPS``."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    spawned = _Spawned()
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        trio.lowlevel.add_instrument(spawned)
        try:
            job = await conjure.submit(GRAPH)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
        finally:
            trio.lowlevel.remove_instrument(spawned)
        assert conjure.state.jobs[job].status == "succeeded"
    LAST_STEPS.clear()
    LAST_STEPS.update(spawned.steps)
    return job, event_names(log, job), [n for n in spawned.names if n.startswith(f"{job}-")]


async def test_an_attempt_posts_follows_and_downloads_in_one_child(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A job's prompt is posted, followed and its outputs downloaded by one child task, the
    only task of the job's own: no task watches the attempt (its deadline is on the child's
    cancel scope, its machine's loss is a callback: issue 16)."""
    job, _, tasks = await _one_job(tmp_path)
    assert tasks == [f"{job}-submit"]


async def test_the_one_childs_reports_keep_the_events_in_order(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """PromptSubmitted comes before any progress, ExecutionSucceeded before OutputSaved,
    and JobSucceeded after it."""
    _, names, _ = await _one_job(tmp_path)
    assert names.index("PromptSubmitted") < names.index("ExecutionStarted")
    assert names.index("ExecutionSucceeded") < names.index("OutputSaved")
    assert names.index("OutputSaved") < names.index("JobSucceeded")


async def test_streamed_frames_do_not_wake_the_child(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The prompt's started, cached and node frames go from the socket's task to the actor
    (issue 16): the child steps for its POST, the outcome and the download only, not once
    per frame (11 steps per invert_save job when each of its 6 frames woke it)."""
    job, names, _ = await _one_job(tmp_path)
    assert {"ExecutionStarted", "NodeCached", "NodeStarted", "NodeExecuted"} <= set(names)
    assert LAST_STEPS[f"{job}-submit"] <= 6
