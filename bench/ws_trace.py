"""Benchmark: the actor pipeline alone, fed a recorded WebSocket trace (``bench/ws_trace.py``).

Issue 16: ">= 20,000 WebSocket messages/s from frame to event to journal to state to sink on
one core", with the simulator's cost not counted. One job of each workflow is recorded from
a live run against the simulated cloud (``conjure_actors.testing.trace.record_trace``), then
N jobs are driven through the real actors, the real ComfyUI client, a real journal (a file
log with the default sync policy: group commit, fsync in a worker thread) and the real sink
(``run --json``'s ``JsonSink``, to /dev/null) against a :class:`TraceCloud` that replays the
recorded frames and answers, per job with its own prompt id, as fast as the client reads
them (no simulator work, no sleeps, trio's real clock). The machines are attached ComfyUIs
(``mode="comfyui"``): the jobs lease, follow and release them as they would RunComfy's, but
nothing is launched (the RunComfy client's own rate limit, ~1 request/s, would make warming
20 machines take a minute of real time; it is not on the message path).

Two traces: a long-progress one (the CONJURE workflow with a 28-step sampler: 66 ``progress``
frames among ~200, where WebSocket volume is) so that the figure is about messages, and a
short one (``invert_save``: ~15 frames) that shows the per-job cost. A run starts at the
first submission (machines launched and warm beforehand) and ends when the sink has seen
every job's terminal event (so the state has folded it). Each replayed job's outcome is
checked against the live run's (status, nodes, outputs) and its progress events counted.

Baseline, same run: the bare cost of decoding the same frames with the client's decoder
(``parse_ws_message`` / ``parse_binary_frame``) alone. Every figure is the median of
``--repeats`` runs. msgs/s is by the wall clock; msgs/CPU-s divides by the process's CPU
time (every thread: the fsync workers count) and is what one core would do on a box not
shared with other processes. The verdict checks the goal on both.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _mockrun import positive_int  # noqa: E402  (bench/_mockrun.py)
from run import _config  # noqa: E402  (bench/run.py: the overhead section's config)

from conjure_actors.actors.example import bundled_workflow, example_sketch_png  # noqa: E402
from conjure_actors.clients.comfyui_wire import parse_binary_frame, parse_ws_message  # noqa: E402
from conjure_actors.clock import TrioWallClock  # noqa: E402
from conjure_actors.commands.run import JsonSink  # noqa: E402
from conjure_actors.domain import events as ev  # noqa: E402
from conjure_actors.domain.state import State  # noqa: E402
from conjure_actors.testing import open_simulated_conjure  # noqa: E402
from conjure_actors.testing.trace import (  # noqa: E402
    Trace,
    job_outcome,
    open_trace_cloud,
    record_trace,
)

GOAL = 20_000  # WebSocket messages/s, issue 16
_ENDS = (ev.JobSucceeded, ev.JobFailed, ev.JobCancelled, ev.JobInterrupted)


class EndSink:
    """The real sink (``JsonSink``) plus what the benchmark needs to know: when it has seen
    ``target`` jobs end, and how many progress events went by it."""

    def __init__(self, inner: JsonSink) -> None:
        self.inner = inner
        self.ends = 0
        self.progress = 0
        self.target = 0
        self.done = trio.Event()

    def expect(self, jobs: int) -> None:
        self.ends, self.progress, self.target, self.done = 0, 0, jobs, trio.Event()

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        self.inner.record(seq, ts, event, state)
        if type(event) is ev.NodeProgress:
            self.progress += 1
        elif isinstance(event, _ENDS):
            self.ends += 1
            if self.ends >= self.target:
                self.done.set()

    def tick(self, state: Any) -> None:
        self.inner.tick(state)

    def close(self) -> None:
        self.inner.close()


class Workload:
    """One workflow as submitted: its graph and submit options, its trace, the live outcome."""

    def __init__(self, name: str, graph: dict[str, Any], **submit: Any) -> None:
        self.name = name
        self.graph = graph
        self.submit = submit
        self.trace: Trace | None = None
        self.live: dict[str, Any] = {}

    async def record(self, out: Path) -> None:
        trace, state = await record_trace(self.graph, out_dir=out, **self.submit)
        self.trace = trace
        self.live = job_outcome(state, next(iter(state.jobs)))


def workloads() -> list[Workload]:
    return [
        Workload(
            "long progress (CONJURE, 28-step sampler)",
            json.loads(bundled_workflow()),
            sets=["20.steps=28"],
            image=example_sketch_png(),
            prompt="a fox",
        ),
        Workload("short (invert_save)", json.loads(bundled_workflow("invert_save.json")), sets=[]),
    ]


class TaskSteps(trio.abc.Instrument):
    """Counts trio task steps (one each time a task is resumed) by the task's function: the
    breakdown's measure of how many task switches a message costs, and where."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    LABELS: Final = {
        "MachineActor._open_events.<locals>.run": "WebSocket reader (ComfyUIEvents, per machine)",
        "Supervisor._runner": "actor mailbox loops (WorkflowActor, MachineActor...)",
        "open_journal.<locals>.run_committer": "journal committer",
        "EntryQueue.task": "trio's entry queue (worker threads' answers)",
        "MonitorActor._watch": "monitor -> sink",
    }

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        code = getattr(task.coro, "cr_code", None)
        name = code.co_qualname if code is not None else task.name
        if name == "WorkflowActor._child":  # named "<job>-<role>": follow, download...
            name = f"job child: {task.name.rsplit('-', 1)[-1]}"
        self.counts[self.LABELS.get(name, name)] += 1


async def replay(
    w: Workload, n: int, machines: int, out: Path, steps: TaskSteps | None = None
) -> dict[str, float]:
    """N jobs of ``w`` through the pipeline against its trace; figures of the timed part.
    ``out`` (made by the caller) holds the log and the outputs; ``steps``, if given, counts
    the timed part's task steps (the breakdown's run: an instrument slows every step)."""
    assert w.trace is not None
    wall = TrioWallClock()
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - /dev/null never blocks
        sink = EndSink(JsonSink(devnull))
        async with open_trace_cloud([w.trace], wall=wall.now) as cloud:
            config = _config(cloud, max_machines=machines, poll_interval=1.0, idle_timeout=3600.0)
            attach = {f"m{i}": cloud.comfyui(f"m{i}") for i in range(machines)}
            async with open_simulated_conjure(
                cloud,
                out / "run.log",
                config,
                wall=wall,
                out_dir=out,
                monitor=sink,
                seed=1,
                mode="comfyui",
                attach=attach,
            ) as conjure:

                async def batch(count: int) -> list[str]:
                    ids: list[str] = []

                    async def one() -> None:
                        ids.append(await conjure.submit(w.graph, **w.submit))

                    sink.expect(count)
                    async with trio.open_nursery() as nursery:
                        for _ in range(count):
                            nursery.start_soon(one)
                    await sink.done.wait()
                    return ids

                await batch(machines)  # launch and warm every machine (not timed)
                frames0, appended0 = cloud.delivered, conjure.ctx.appended
                commits0 = conjure.journal.statistics().commits  # type: ignore[attr-defined]
                if steps is not None:
                    trio.lowlevel.add_instrument(steps)
                cpu0, t0, loop0 = time.process_time(), time.perf_counter(), time.thread_time()
                ids = await batch(n)
                if steps is not None:
                    trio.lowlevel.remove_instrument(steps)
                elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                loop = time.thread_time() - loop0  # the trio thread alone
                frames, appended = cloud.delivered - frames0, conjure.ctx.appended - appended0
                progress = sink.progress
                commits = conjure.journal.statistics().commits - commits0  # type: ignore[attr-defined]
                state: State = conjure.state
                outcomes = [job_outcome(state, j) for j in ids]
                same = sum(o == w.live for o in outcomes)
                for o in outcomes:  # say how a job differs from the live run, once
                    if o != w.live:
                        keys = sorted(k for k in o if o[k] != w.live.get(k))
                        print(f"  a replayed job differs from the live run in {keys}: {o}")
                        break
                await conjure.shutdown()
    return {
        "msgs_s": frames / elapsed,
        "jobs_s": n / elapsed,
        "frames": frames / n,
        "events": appended / n,
        "cpu_ms": 1000 * cpu / n,
        "cpu_share": cpu / elapsed,
        "msgs_cpu_s": frames / cpu,
        "loop_share": loop / cpu,
        "per_commit": appended / max(1, commits),
        "progress_ok": float(progress == n * w.trace.count("progress")),
        "same": same / n,
    }


def decode_baseline(trace: Trace, n: int) -> float:
    """msgs/s of the client's decoder alone over the frames of ``n`` jobs."""
    frames = trace.frames
    t0 = time.perf_counter()
    for _ in range(n):
        for frame in frames:
            if isinstance(frame, str):
                parse_ws_message(frame)
            else:
                parse_binary_frame(frame)
    return n * len(frames) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=positive_int, default=60, help="long-progress jobs per run")
    parser.add_argument("--short-jobs", type=positive_int, default=200, help="short jobs per run")
    parser.add_argument("--machines", type=positive_int, default=20, help="machines (one job each)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="one more (untimed) run of the long trace: trio task steps per message, by task",
    )
    args = parser.parse_args()
    rows: list[tuple[Workload, int, list[dict[str, float]], float]] = []
    steps = TaskSteps()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for i, w in enumerate(workloads()):
            n = args.jobs if i == 0 else args.short_jobs
            clock = trio.testing.MockClock(autojump_threshold=0)
            trio.run(w.record, out / f"rec{i}", clock=clock)  # the live run: not timed
            runs = []
            for r in range(args.repeats):
                (out / f"w{i}r{r}").mkdir()
                runs.append(trio.run(replay, w, n, args.machines, out / f"w{i}r{r}"))
            assert w.trace is not None
            base = statistics.median(decode_baseline(w.trace, n) for _ in range(args.repeats))
            rows.append((w, n, runs, base))
            if i == 0 and args.breakdown:
                (out / "breakdown").mkdir()
                trio.run(replay, w, n, args.machines, out / "breakdown", steps)
    print(
        f"== the actor pipeline fed a recorded WebSocket trace: {args.machines} machines "
        f"(attached, one job each), file journal (sync=batch), JsonSink; median of "
        f"{args.repeats}"
    )
    print(
        f"{'trace':<42}{'jobs':>6}{'frames/job':>11}{'events/job':>11}{'msgs/s':>9}"
        f"{'msgs/CPU-s':>11}{'decode msgs/s':>14}{'ratio':>7}{'jobs/s':>8}{'CPU ms/job':>11}"
    )
    verdicts: list[str] = []
    for i, (w, n, runs, base) in enumerate(rows):

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        msgs, per_cpu = med("msgs_s"), med("msgs_cpu_s")
        print(
            f"{w.name:<42}{n:>6}{med('frames'):>11.0f}{med('events'):>11.1f}{msgs:>9.0f}"
            f"{per_cpu:>11.0f}{base:>14.0f}{msgs / base:>7.3f}{med('jobs_s'):>8.0f}"
            f"{med('cpu_ms'):>11.2f}"
        )
        checks = all(r["progress_ok"] == 1.0 and r["same"] == 1.0 for r in runs)
        print(
            f"{'':<42}per message {1e6 / msgs:.1f} us wall, {1e6 / per_cpu:.1f} us CPU; "
            f"CPU (all threads) / wall {med('cpu_share'):.2f}, of it the trio thread "
            f"{med('loop_share'):.2f}; events per commit "
            f"{med('per_commit'):.1f}; every job as live and every progress frame an event: "
            f"{'yes' if checks else 'NO'}"
        )
        if i == 0:
            what = (
                f">= {GOAL:,} WebSocket messages/s, frame -> event -> journal -> state -> sink, "
                "long-progress trace, one trio thread (the journal's fsyncs and the outputs' "
                "writes run in worker threads)"
            )
            ok = "met" if msgs >= GOAL and checks else "NOT met"
            verdicts.append(f"target ({what}), wall clock: {ok} ({msgs:,.0f} msgs/s)")
            ok = "met" if per_cpu >= GOAL and checks else "NOT met"
            verdicts.append(
                f"target per CPU-second of the process (all threads; the box is shared, so "
                f"wall time includes other processes' turns): {ok} ({per_cpu:,.0f} msgs/s)"
            )
    print("\n".join(verdicts))
    if args.breakdown:
        w, n, _, _ = rows[0]
        msgs = n * statistics.median(r["frames"] for r in rows[0][2])
        print(
            f"breakdown, long-progress trace ({n} jobs, one more run, not timed): trio task "
            f"steps per WebSocket message {sum(steps.counts.values()) / msgs:.2f}, by task:"
        )
        for name, count in steps.counts.most_common(8):
            print(f"  {count / msgs:6.3f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
