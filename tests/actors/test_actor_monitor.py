"""The monitor's pieces: public names, JSON lines, stall detection, the run summary; and a
stalled job noticed end to end (JobStalled, then the job still succeeds by polling)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config
from hypothesis import given
from hypothesis import strategies as st

import conjure_actors.actors as actors
import eventlog
from conjure_actors.actors import monitor as monitor_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.actors.view import (
    StallDetector,
    event_json_line,
    summarize,
    summary_lines,
    summary_record,
)
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import MonitorConfig
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings


def test_public_names() -> None:
    """Every name in __all__ exists, and the list is sorted."""
    for name in actors.__all__:
        assert hasattr(actors, name), name
    assert sorted(actors.__all__) == actors.__all__


def test_event_json_line_has_seq_type_and_fields() -> None:
    """One JSON object per event: seq, ts, type tag and the event's fields."""
    line = event_json_line(7, 1.5, ev.JobQueued(job_id="j", at=1.0))
    assert json.loads(line) == {
        "seq": 7,
        "ts": 1.5,
        "type": "job.queued",
        "job_id": "j",
        "reason": "",
        "at": 1.0,
    }


def test_stall_reported_once_per_silence() -> None:
    """A job silent for stall_seconds is reported once; a sign of life re-arms it."""
    d = StallDetector(10.0)
    d.alive("a", 0.0)
    assert d.stalled(9.0) == []
    assert d.stalled(10.0) == [("a", 10.0)]
    assert d.stalled(20.0) == []
    d.alive("a", 21.0)
    assert d.stalled(31.0) == [("a", 10.0)]
    d.forget("a")
    assert d.stalled(100.0) == []


def test_summary_counts_outcomes() -> None:
    """The summary counts jobs by outcome and takes the bill from the ledger."""
    state = initial_state()
    for e in (
        ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="a", workflow_sha256="w", at=0.0),
        ev.JobSubmitted(job_id="b", workflow_sha256="w", at=0.0),
        ev.JobCancelled(job_id="b", reason="x", at=1.0),
        ev.MachineStopped(
            server_id="s", stopped_at=5.0, billed_seconds=5, cost_micros=1375, at=5.0
        ),
    ):
        state = apply(state, e)
    s = summarize(state)
    assert (s.jobs, s.cancelled, s.unfinished, s.cost_micros) == (2, 1, 1, 1375)
    lines = summary_lines(s, seconds=1.0, out_dir="o", log_path="l", mode="simulated")
    assert lines[0].startswith("jobs: 2 (0 succeeded, 0 failed, 1 cancelled, 1 unfinished)")


def _ended_state() -> Any:
    """Job a failed in node 16 (a rejection), b cancelled from the web UI, c succeeded."""
    state = initial_state()
    for e in (
        ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="a", workflow_sha256="w", at=0.0),
        ev.JobSubmitted(job_id="b", workflow_sha256="w", at=0.0),
        ev.JobSubmitted(job_id="c", workflow_sha256="w", at=0.0),
        ev.JobFailed(
            job_id="a",
            error_type="PromptRejected",
            message="server s rejected prompt 9f-1: node 16 (LoadImage) image: "
            "Invalid image file: x.png; fix the workflow inputs",
            at=1.0,
        ),
        ev.JobCancelled(job_id="b", reason="interrupted on the server, not by this run", at=1.0),
        ev.OutputSaved(
            job_id="c",
            node_id="9",
            filename="o.png",
            path="out/c/o.png",
            size=3,
            sha256="ab" * 32,
            kind="image",
            at=2.0,
        ),
    ):
        state = apply(state, e)
    state.jobs["c"].status = "succeeded"
    return state


def test_summary_says_why_each_failed_or_cancelled_job_ended() -> None:
    """A line per failed or cancelled job: its id, status, node, class and ComfyUI's words
    (without the client's preamble)."""
    s = summarize(_ended_state())
    lines = summary_lines(s, seconds=1.0, out_dir="o", log_path="l", mode="simulated")
    assert lines[1] == (
        "  a failed: PromptRejected: node 16 (LoadImage) image: Invalid image file: x.png;"
        " fix the workflow inputs"
    )
    assert lines[2] == "  b cancelled: interrupted on the server, not by this run"


def test_summary_record_has_jobs_outputs_cost_machines_and_log() -> None:
    """The run.summary JSON record: jobs by status, outputs with path and hash, cost,
    machines, log path, and an error record per failed or cancelled job."""
    record = summary_record(
        _ended_state(), None, seconds=2.0, out_dir="out", log_path="r.log", mode="simulated"
    )
    assert record["type"] == "run.summary"
    assert record["ok"] is False
    assert record["jobs"]["total"] == 3
    assert (record["jobs"]["failed"], record["jobs"]["cancelled"]) == (1, 1)
    assert record["outputs"] == [
        {
            "job_id": "c",
            "node_id": "9",
            "path": "out/c/o.png",
            "sha256": "ab" * 32,
            "size": 3,
            "kind": "image",
        }
    ]
    assert set(record["cost"]) == {"micros", "usd", "price_tables", "budget_micros", "at_most"}
    assert record["machines"] == []
    assert record["log"] == "r.log"
    errors = {e["job_id"]: e for e in record["errors"]}
    assert errors["a"]["error_type"] == "PromptRejected"
    assert errors["a"]["message"].startswith("node 16 (LoadImage) image: Invalid image file")
    assert errors["b"]["status"] == "cancelled"
    json.dumps(record)  # plain JSON


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_silent_websocket_is_noticed_as_a_stall(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A WebSocket that goes silent: the monitor logs JobStalled, the job follows by polling
    and still succeeds."""
    import attrs

    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    faults = ComfyFaults(ws_silence_rate=1.0, ws_silent_after=2)
    async with open_test_cloud(
        wall.now, comfy_faults=faults, timings=ComfyTimings(scale=50.0)
    ) as cloud:
        config = attrs.evolve(sim_config(cloud), monitor=MonitorConfig(stall_seconds=5.0))
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
            )
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
            state = conjure.state
    assert state.jobs[job].status == "succeeded"
    assert state.jobs[job].stalls >= 1


class _GoneTerminal:
    """A sink whose terminal went away (SIGHUP): every write fails."""

    def __init__(self) -> None:
        self.calls = 0

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        self.calls += 1
        raise BrokenPipeError(32, "Broken pipe")

    def tick(self, state: Any) -> None:
        self.calls += 1
        raise OSError(5, "Input/output error")

    def close(self) -> None:
        """Nothing to close."""


async def test_a_sink_whose_terminal_is_gone_is_dropped_and_the_run_goes_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A view that cannot write any more is dropped after its first failure; no actor
    crashes and the job still succeeds."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    sink = _GoneTerminal()
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall, monitor=sink) as conjure,
    ):
        job = await conjure.submit(
            json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
        )
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        assert conjure.state.jobs[job].status == "succeeded"
    assert sink.calls == 1


class _Recording:
    """A sink that keeps the seq of every record it is shown."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        self.seqs.append(seq)

    def tick(self, state: Any) -> None:
        """Nothing to redraw."""

    def close(self) -> None:
        """Nothing to close."""


@pytest.mark.slow
async def test_the_sink_is_shown_every_record_once_in_order(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Records published together are shown in one batch: each once, in seq order, none
    skipped from the monitor's start to the last one once the jobs are done."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    sink = _Recording()
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall, monitor=sink) as conjure,
    ):
        graph = json.loads(bundled_workflow())
        jobs = [
            await conjure.submit(graph, image=example_sketch_png(), prompt=f"p{i}")
            for i in range(3)
        ]
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        assert all(conjure.state.jobs[j].status == "succeeded" for j in jobs)
        last = log.last_seq
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()  # the watcher has shown what it got
        shown, published = list(sink.seqs), log.last_seq
    first = shown[0]  # the monitor starts once the run has begun
    assert first <= 3
    assert shown == list(range(first, published + 1))
    assert published >= last


class _StepCounter(trio.abc.Instrument):
    """Counts the scheduler steps of the tasks with a given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.steps += 1


async def test_the_monitor_shows_records_without_a_wake_up_per_commit(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Issue 16: the sink is fed by a journal listener, in the committing task: a burst of
    commits shows every record at once and wakes the monitor's watching task not at all."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    sink = _Recording()
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall, monitor=sink) as conjure,
    ):
        counter = _StepCounter("monitor-watch")
        trio.lowlevel.add_instrument(counter)
        try:
            for i in range(50):
                await conjure.ctx.emit(ev.BudgetSet(limit_micros=i, at=wall.now()))
                assert sink.seqs[-1] == log.last_seq  # shown before the append returned
        finally:
            trio.lowlevel.remove_instrument(counter)
    assert counter.steps <= 1  # at most a tick, never one per commit


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_an_idle_run_without_a_view_never_wakes_the_monitor(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Issue 16: with no sink (``serve``), no job and nothing due, the monitor's watching task
    sleeps: an hour of idle time wakes it not at all (it woke 4 times a second)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        await trio.testing.wait_all_tasks_blocked()
        counter = _StepCounter("monitor-watch")
        trio.lowlevel.add_instrument(counter)
        try:
            await trio.sleep(3600)
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert conjure.state.jobs == {}
    assert counter.steps == 0


class _Ticks:
    """A sink that redraws: counts its ticks."""

    def __init__(self) -> None:
        self.ticks = 0

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        """Nothing to show."""

    def tick(self, state: Any) -> None:
        self.ticks += 1

    def close(self) -> None:
        """Nothing to close."""


async def test_a_view_is_redrawn_every_refresh_even_when_idle(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A sink with a refresh of its own (the live view) is ticked every 0.25 s, jobs or not."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    sink = _Ticks()
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall, monitor=sink),
    ):
        await trio.testing.wait_all_tasks_blocked()
        before = sink.ticks
        await trio.sleep(10.01)
        assert sink.ticks - before == 40


@given(
    last=st.floats(0, 1e9, allow_nan=False),
    stall=st.floats(1e-3, 1e6, allow_nan=False),
)
def test_a_stall_check_is_due_the_first_instant_the_detector_counts_it(
    last: float, stall: float
) -> None:
    """The monitor wakes at the first time the detector says "stalled" (``now - last >=
    stall``), not an ulp before, where it would find nothing and wake again at once."""
    due = monitor_module._stall_due(last, stall)
    assert due - last >= stall
    assert math.nextafter(due, -math.inf) - last < stall


def test_the_summary_names_the_budget_its_cost_is_of() -> None:
    """``cost: $X of the $Y budget`` (as the live view and ``status LOG`` say it; the JSON
    summary's ``budget_micros``), ``(exceeded)`` once it was."""
    state = initial_state()
    for e in (
        ev.BudgetSet(limit_micros=2_000, at=0.0),
        ev.MachineStopped(
            server_id="s", stopped_at=5.0, billed_seconds=5, cost_micros=1375, at=5.0
        ),
    ):
        state = apply(state, e)
    lines = summary_lines(summarize(state), seconds=1.0, out_dir="o", log_path="l", mode="m")
    assert "cost: $0.0014 of the $0.0020 budget (no machine billed)" in lines
    state = apply(state, ev.BudgetExceeded(spent_micros=2_100, limit_micros=2_000, at=6.0))
    lines = summary_lines(summarize(state), seconds=1.0, out_dir="o", log_path="l", mode="m")
    assert "cost: $0.0014 of the $0.0020 budget (exceeded) (no machine billed)" in lines
