"""Benchmark of the runtime's overhead (``python bench/run.py``).

N jobs (default 1,000) of a model-free workflow on the in-memory simulated cloud with
zero-duration nodes, under MockClock (so the figures are CPU, not waiting): jobs/s and
events/s through the whole pipeline (WebSocket frame -> event -> journal -> state -> UI
sink), CPU (the process's, and the trio thread's alone) and peak memory per job.
Baseline, same run, same cloud: a bare loop over the ComfyUI client (submit + follow +
download, no actors, no journal). The simulated day
(cost efficiency, issue 16) is ``bench/day.py``.

Both are timed on machines already up, after one job per machine: the bare loop launches
its machines and waits for them before its clock starts; conjure's pool launches for
demand, so its warm-up jobs bring its machines up (``_machines_up``), paced as the
simulated account allows (``_paced_as_the_account``: paced for a real account, the tenth
machine was never seen Ready under MockClock and conjure ran on nine machines of ten).

Every figure is the median of ``--repeats`` rounds (each round runs the pipeline, then the
bare loop, then the bare loop with durable outputs, then the bare loop out of step) and is
printed beside its baseline with the ratio; the verdict takes the median of the rounds' own
ratios (against the plain bare loop).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import random
import re
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _mockrun import (  # noqa: E402  (bench/_mockrun.py)
    config_for,
    non_negative_int,
    positive_int,
    run_on_mock,
)

import eventlog  # noqa: E402
from conjure_actors.actors import files  # noqa: E402
from conjure_actors.actors.example import bundled_workflow  # noqa: E402
from conjure_actors.actors.view import event_json_line  # noqa: E402
from conjure_actors.clients.comfyui import ComfyUIClient  # noqa: E402
from conjure_actors.clients.runcomfy import RunComfyClient  # noqa: E402
from conjure_actors.clock import TrioWallClock  # noqa: E402
from conjure_actors.config import Config  # noqa: E402
from conjure_actors.domain.events import Event  # noqa: E402
from conjure_actors.domain.workflow import apply_bindings, load_workflow  # noqa: E402
from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud  # noqa: E402
from conjure_actors.sim.comfyui import ComfyTimings  # noqa: E402
from conjure_actors.sim.runcomfy import RunComfyTimings  # noqa: E402
from conjure_actors.testing import open_simulated_conjure  # noqa: E402

VERSION = "wv-core-nodes-1"


class CountingSink:
    """The UI end of the pipeline: encodes every event as a JSON line (then drops it)."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        self.events += 1
        self.bytes += len(event_json_line(seq, ts, event))

    def tick(self, state: Any) -> None:
        return

    def close(self) -> None:
        return


def _config(cloud: Any, **pool: Any) -> Config:
    return config_for(cloud, version=VERSION, **pool)


# ------------------------------------------------------------------------------ overhead


def _light_workflow() -> Any:
    return load_workflow(json.loads(bundled_workflow("invert_save.json")))


_JOB_TASK: Final = re.compile(r"(^|/)job-[0-9a-f]+(-|$)")


class Counts(trio.abc.Instrument):
    """What the event loop does (``--counts``): task spawns and steps, scheduler batches,
    worker-thread calls, and the wall time it sat idle, counted between :meth:`start` and
    :meth:`stop` (the measured window). Spawns and steps are exact, where the timings on a
    noisy box are not. A batch is one pass of the scheduler that ran a task other than the
    MockClock driver's (whose passes while a worker thread runs and nothing else can are
    idle waits, not work: ``_mockrun.run_on_mock``); how the work falls into batches still
    depends on when the worker threads' answers arrive (about +-1 batch per job from run to
    run)."""

    def __init__(self) -> None:
        self.on = False
        self.spawns = self.steps = self.batches = self.threads = self.switches = 0
        self.thread_wall = 0.0  # real seconds from each worker-thread call to its answer
        self._switches0 = 0
        self._busy = False
        # The trio thread's CPU in each task's steps, by task (a job's own tasks together):
        # where the loop's time goes, ours beside the bare loop's (the clock reads cost a
        # little, alike for both).
        self.cpu: dict[str, float] = {}
        self.task_steps: dict[str, int] = {}  # the same, in steps
        self._t0 = 0.0
        # The cyclic GC's passes by generation, the objects they freed, and their CPU: a
        # pass runs after every 700 new tracked objects not yet freed (a cycle's are freed
        # only by a pass), and a full one walks every object of the process.
        self.gc_passes = [0, 0, 0]
        self.gc_freed = 0
        self.gc_cpu = 0.0
        self._gc0 = 0.0
        # Real seconds the trio thread sat blocked in its I/O wait (nothing to run), and of
        # them with a worker thread in flight: a token of the default thread limiter borrowed
        # (under MockClock the disk committer holds one while a batch is open, the bare
        # durable loop one per output's thread call). In conjure's run every such wait was a
        # batch of outputs being made durable (issue 16, session 31).
        self.idle = self.idle_thread = 0.0
        self._idle0 = 0.0
        self._thread_in_flight = False

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawns += self.on

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on and not task.name.endswith(".drive"):
            self.steps += 1
            self._busy = True
            self._t0 = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on and self._t0:
            name = _JOB_TASK.sub(r"\1<job>\2", task.name)
            self.cpu[name] = self.cpu.get(name, 0.0) + time.thread_time() - self._t0
            self.task_steps[name] = self.task_steps.get(name, 0) + 1
        self._t0 = 0.0

    def before_io_wait(self, timeout: float) -> None:
        self.batches += self._busy
        self._busy = False
        if self.on and timeout > 0:
            limiter = trio.to_thread.current_default_thread_limiter()
            self._thread_in_flight = bool(limiter.statistics().borrowed_tokens)
            self._idle0 = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        if self._idle0:
            wall = time.perf_counter() - self._idle0
            self._idle0 = 0.0
            self.idle += wall
            if self._thread_in_flight:
                self.idle_thread += wall

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc0 = time.thread_time()
        elif self.on:
            self.gc_cpu += time.thread_time() - self._gc0
            self.gc_passes[info["generation"]] += 1
            self.gc_freed += info["collected"]

    def start(self) -> None:
        self.on = True
        self._switches0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        gc.callbacks.append(self._gc)

    def stop(self) -> None:
        self.on = False
        # The trio thread's involuntary context switches (it was runnable, another thread
        # ran): a worker thread taking the GIL and the core from the loop, mostly.
        self.switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - self._switches0
        gc.callbacks.remove(self._gc)

    def threaded(self, run_sync: Any) -> Any:
        """``trio.to_thread.run_sync`` counting its calls while on."""

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.threads += self.on
            t0 = time.perf_counter()
            try:
                return await run_sync(*args, **kwargs)
            finally:
                if self.on:
                    self.thread_wall += time.perf_counter() - t0

        return counted


async def _ours_overhead(
    n: int, machines: int, out: Path, counts: Counts | None = None
) -> dict[str, float]:
    wall = TrioWallClock()
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=1.0, rate_per_second=1000, burst=1000),
        comfyui=ComfyTimings(scale=0.0),
    )
    wf = _light_workflow()
    sink = CountingSink()
    paced = _paced_as_the_account(timings.runcomfy.rate_per_second, timings.runcomfy.burst)
    async with open_simulated_cloud(seed=1, timings=timings, wall=wall.now) as cloud:
        log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, sync="none")
        config = _config(cloud, max_machines=machines, poll_interval=1.0, idle_timeout=30.0)
        with paced:  # (while its RunComfy client is made)
            opened = open_simulated_conjure(
                cloud, log, config, wall=wall, out_dir=out, monitor=sink, seed=1
            )
            conjure = await opened.__aenter__()
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_exit(opened)
            await _machines_up(conjure, wf, machines)
            # As `run` does once started (commands/run.py): thawed again at the end, so that
            # the bare loop's runs in this process walk what they would alone.
            gc.freeze()
            stack.callback(gc.unfreeze)
            events0, ui0 = log.last_seq, sink.events
            tracing = tracemalloc.is_tracing()
            if tracing:
                gc.collect()
                mem0 = tracemalloc.get_traced_memory()[0]
            if counts is not None:
                counts.start()
            cpu0, t0, main0 = time.process_time(), time.perf_counter(), time.thread_time()
            for i in range(n):
                await conjure.submit(wf, sets=[f"1.color={i}"])
            await conjure.wait_until_idle()
            cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
            trio_cpu = time.thread_time() - main0
            if counts is not None:
                counts.stop()
            retained = 0.0
            if tracing:
                gc.collect()  # what the run still holds for its n jobs (state, log, view)
                retained = tracemalloc.get_traced_memory()[0] - mem0
            ok = sum(j.status == "succeeded" for j in conjure.state.jobs.values()) - machines
            events = log.last_seq - events0
            await conjure.shutdown()
    assert ok == n, f"only {ok} of {n} jobs succeeded"
    return {
        "jobs_s": n / elapsed,
        "events_s": events / elapsed,
        "cpu_ms": 1000 * cpu / n,
        "main_ms": 1000 * trio_cpu / n,
        "wait_ms": 1000 * (elapsed - cpu) / n,
        "events": events,
        "ui_events": sink.events - ui0,
        "retained_kib": retained / n / 1024,
    }


async def _machines_up(conjure: Any, wf: Any, machines: int) -> None:
    """Before the timed jobs, as the bare loop launches its machines and waits for them
    before its clock starts: one job per machine (the pool launches for demand), then wait
    until every machine is Ready. The warm-up's jobs and events are left out of every
    figure. See :func:`_paced_as_the_account` for why its launches must not be spaced."""
    for i in range(machines):
        await conjure.submit(wf, sets=[f"1.color={i}"])
    await conjure.wait_until_idle()
    with trio.fail_after(3600):  # mock seconds
        async with conjure.journal.subscribe(max_buffer=math.inf) as records:
            while sum(m.status == "ready" for m in conjure.state.machines.values()) < machines:
                await records.receive()


@contextlib.contextmanager
def _paced_as_the_account(rate: float, burst: int) -> Iterator[None]:
    """The pool's RunComfy client paces its calls for a real account (a token bucket of 1 a
    second): on this simulated account of ``rate`` a second its ten launches went a second
    apart, and the tenth machine turned Ready after the loop got busy with nine; under
    MockClock time stands still while the loop is busy, so it was never seen Ready: conjure
    ran the whole timed run on 9 of its 10 machines while the bare loop had 10 (session 29:
    1,000 of 1,000 jobs ended with 9 machines Ready). Paced as the simulated account allows,
    the ten launch together."""
    from conjure_actors.clients import runcomfy as module

    real = module.TokenBucket
    module.TokenBucket = lambda *_, **__: real(rate=rate, burst=burst)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        module.TokenBucket = real  # type: ignore[misc]


OUT_OF_STEP: Final = 8
"""``_bare_overhead(out_of_step=True)``: before each prompt, a worker yields to the scheduler
0 to this many times (seeded, 4 on average): its machines no longer move in lock step."""


async def _bare_overhead(
    n: int,
    machines: int,
    out: Path,
    counts: Counts | None = None,
    durable: bool = False,
    out_of_step: bool = False,
) -> dict[str, float]:
    """The same prompts through the ComfyUI client alone, on already launched machines:
    the same HTTP calls (POST /prompt, the WebSocket, /history, /view) and the same output
    files, with none of the pipeline's guarantees (no journal, no fsync).

    ``durable``: each output is written durably (temporary file, fsync, rename, directory
    fsync) in a worker-thread call of its own (``trio.to_thread.run_sync``; the pipeline
    hands its outputs to the run's group committer instead, ``runtime.disk``): the bare loop
    plus the one guarantee that puts a worker thread in every job. It shows what that
    guarantee costs the loop by itself when each file has its own thread call: the thread's
    answer comes back at a time of its own, so the machines no longer move in step, and the
    event loop runs more, smaller scheduler batches per job.

    ``out_of_step``: each worker yields to the scheduler a few times (``OUT_OF_STEP``, seeded)
    before each prompt, the same loop otherwise. With zero-duration nodes and identical
    machines, the plain loop's ten workers move in lock step: each scheduler batch runs the
    same step of ten jobs one after another (the same code, hot in the CPU's caches), a
    schedule no real run has (nodes take their own time). Out of step, the same work
    (144,064 Python bytecodes per job against 144,219; +4 task steps) costs the trio thread
    a fifth more (session 28, 1,000 jobs, median of 3 rounds: 2.71 -> 3.28 ms per job;
    counted per task, the simulator's own tasks +15-35%, as much as in conjure's run while
    its starter started one job at a time, which kept its machines five scheduler passes
    apart): the row shows how much of a gap to conjure is the lock step's."""
    wall = TrioWallClock()
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=1.0, rate_per_second=1000, burst=1000),
        comfyui=ComfyTimings(scale=0.0),
    )
    wf = _light_workflow()
    async with (
        open_simulated_cloud(seed=1, timings=timings, wall=wall.now) as cloud,
        httpx.AsyncClient(transport=cloud.http_transport()) as http,
    ):
        rc = RunComfyClient(cloud.base_url, cloud.user_id, cloud.token, http=http)
        servers = [await rc.launch(VERSION, "medium", 3600) for _ in range(machines)]
        ready = [await rc.wait_until_ready(s.server_id, interval=1.0) for s in servers]
        clients = [
            ComfyUIClient(
                s.url.reveal(), http=http, ws_connect=cloud.ws_connect, redact=s.server_id
            )
            for s in ready
        ]
        rng = random.Random(1)  # the same yields in every run

        async def run_queue(items: range) -> None:
            """Every item of ``items`` as a job, ``machines`` workers taking them in turn."""
            queue_send, queue_recv = trio.open_memory_channel[int](math.inf)
            for i in items:
                queue_send.send_nowait(i)
            queue_send.close()
            async with trio.open_nursery() as nursery:
                for client in clients:

                    async def worker(client: ComfyUIClient = client) -> None:
                        async with trio.open_nursery() as inner:
                            events = client.events()
                            await inner.start(events.run)
                            async for i in queue_recv:
                                await one_job(client, events, i)
                            inner.cancel_scope.cancel()

                    nursery.start_soon(worker)

        async def one_job(client: ComfyUIClient, events: Any, i: int) -> None:
            prompt = apply_bindings(wf.graph, {"1.color": str(i % 1000)})
            pid = f"00000000-0000-4000-8000-{i:012d}"
            if out_of_step:
                for _ in range(rng.randint(0, OUT_OF_STEP)):
                    await trio.lowlevel.checkpoint()
            await client.submit(prompt, pid, events.client_id)
            done = await client.wait(pid, events=events, poll_interval=1.0)
            for output in done.outputs:
                data = await client.download(output)
                # The same files as the pipeline: OUT/<job>/<subfolder>/<name>
                # (written plainly: no temporary file, no fsync).
                folder = out / f"job-{i}" / output.subfolder
                if durable:
                    await trio.to_thread.run_sync(
                        files.write_atomic, folder / output.filename, data.data
                    )
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                (folder / output.filename).write_bytes(data.data)

        # One job per machine before the clock, as conjure's run has (_machines_up).
        await run_queue(range(n, n + machines))
        if counts is not None:
            counts.start()
        cpu0, t0, main0 = time.process_time(), time.perf_counter(), time.thread_time()
        await run_queue(range(n))
        cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
        trio_cpu = time.thread_time() - main0
        if counts is not None:
            counts.stop()
        for s in ready:
            await rc.stop(s.server_id)
    return {
        "jobs_s": n / elapsed,
        "cpu_ms": 1000 * cpu / n,
        "main_ms": 1000 * trio_cpu / n,
        "wait_ms": 1000 * (elapsed - cpu) / n,
    }


async def _memory_per_job(n: int, machines: int, out: Path) -> tuple[float, float]:
    """(peak KiB per job, KiB per job still retained once every job has ended)."""
    tracemalloc.start()
    try:
        row = await _ours_overhead(n, machines, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / n / 1024, row["retained_kib"]


# ---------------------------------------------------------------------------------- main


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``total = fixed + per_job * n`` over (n, total) points: (fixed, per_job)."""
    mx = statistics.fmean(n for n, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((n - mx) ** 2 for n, _ in points)
    per_job = sum((n - mx) * (y - my) for n, y in points) / sxx if sxx else 0.0
    return my - per_job * mx, per_job


def _runs_per_round(jobs: int) -> int:
    """Runs of ``jobs`` jobs per round of the CPU-per-job row: enough for about 1,000 jobs
    (at most 10 runs), so that short runs are not left to one run's noise."""
    return max(1, min(10, 1000 // jobs))


def _print_scaling(args: argparse.Namespace, out: Path) -> None:
    """CPU per job at each job count, ours and the bare loop: ``--scaling-runs`` rounds,
    interleaved (each round runs every size, ours then bare, so a change in the box's load
    lands on every size alike), medians with their spread. A size under 1,000 jobs runs
    ``1000 // jobs`` times per round (at most 10): its runs are short, so one busy second of
    this shared box moves a single run's figure by a third, and more of them make its median
    as steady as a long run's. Every run has the row's full number of jobs. A least-squares
    line through ours's total CPU against the job count splits it into a fixed cost per run
    and a cost per job."""
    sizes = list(args.scaling)
    runs = args.scaling_runs
    ours: dict[int, list[float]] = {n: [] for n in sizes}
    bare: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(runs):
        for n in sizes:
            for k in range(_runs_per_round(n)):
                tag = f"{n}-{r}-{k}"
                ours[n].append(_run(_ours_overhead, n, args.machines, out / f"s{tag}")["cpu_ms"])
                d = out / f"sb{tag}"
                d.mkdir()
                bare[n].append(_run(_bare_overhead, n, args.machines, d)["cpu_ms"])
    print(
        f"\n== CPU per job against job count ({args.machines} machines; {runs} interleaved "
        "rounds; median of every run of a size, [min-max]; runs per size in the second column)"
    )
    print(f"{'jobs':>8}{'runs':>6}{'conjure (ms)':>24}{'bare (ms)':>24}{'ratio':>8}")
    medians, ratios = [], []
    for n in sizes:
        a, b = statistics.median(ours[n]), statistics.median(bare[n])
        medians.append(a)
        ratios.append(a / b)
        spread_a = f"[{min(ours[n]):.2f}-{max(ours[n]):.2f}]"
        spread_b = f"[{min(bare[n]):.2f}-{max(bare[n]):.2f}]"
        print(
            f"{n:>8}{len(ours[n]):>6}{a:>10.2f} {spread_a:>13}{b:>10.2f} {spread_b:>13}"
            f"{a / b:>8.2f}"
        )
    growth = max(medians) / min(medians)
    fixed, per_job = _fit([(n, n * c) for n in sizes for c in ours[n]])
    bare_fixed, bare_per_job = _fit([(n, n * c) for n in sizes for c in bare[n]])
    print(
        f"fit of the total CPU (ms) = fixed per run + per job x jobs: conjure {fixed:.0f} + "
        f"{per_job:.2f} x jobs; bare {bare_fixed:.0f} + {bare_per_job:.2f} x jobs"
    )
    print(
        f"target (CPU per job flat within 10% from {sizes[0]:,} to {sizes[-1]:,} jobs): "
        f"{'met' if growth <= 1.10 else 'NOT met'} (max/min of the medians {growth:.2f}; of "
        f"the ratio to the bare loop, which shares the simulator's growth: "
        f"{max(ratios) / min(ratios):.2f})"
    )


def _count(
    fn: Any, n: int, machines: int, out: Path, *extra: Any
) -> tuple[Counts, dict[str, float]]:
    """One run of ``fn`` with its loop counted (``--counts``)."""
    counts = Counts()
    run_sync = trio.to_thread.run_sync
    trio.to_thread.run_sync = counts.threaded(run_sync)
    try:
        row = run_on_mock(
            fn,
            n,
            machines,
            out,
            counts,
            *extra,
            on_drive=lambda: trio.lowlevel.add_instrument(counts),
        )
    finally:
        trio.to_thread.run_sync = run_sync
    return counts, row


def _print_counts(args: argparse.Namespace, out: Path) -> None:
    """What each job costs the event loop, counted (ours, the bare loop, and the bare loop
    with durable outputs: one run each)."""
    n = args.counts
    ours, row = _count(_ours_overhead, n, args.machines, out / "c-ours")
    (out / "c-bare").mkdir()
    bare, _ = _count(_bare_overhead, n, args.machines, out / "c-bare")
    (out / "c-durable").mkdir()
    durable, _ = _count(_bare_overhead, n, args.machines, out / "c-durable", True)
    print(f"\n== the event loop's work per job ({n} jobs, {args.machines} machines; counted)")
    print(f"{'figure':<34}{'conjure':>14}{'bare client':>14}{'ratio':>8}{'bare durable':>14}")
    for label, a, b, c in (
        ("task spawns", ours.spawns, bare.spawns, durable.spawns),
        ("task steps", ours.steps, bare.steps, durable.steps),
        ("scheduler batches", ours.batches, bare.batches, durable.batches),
        ("worker-thread calls", ours.threads, bare.threads, durable.threads),
        (
            "  their wall time, call to answer (us)",
            *(1e6 * c.thread_wall for c in (ours, bare, durable)),
        ),
        ("loop idle, wall (us)", *(1e6 * c.idle for c in (ours, bare, durable))),
        (
            "  of it a worker thread in flight (us)",
            *(1e6 * c.idle_thread for c in (ours, bare, durable)),
        ),
        ("trio thread preempted", ours.switches, bare.switches, durable.switches),
        ("cyclic GC passes, young (gen 0)", *(c.gc_passes[0] for c in (ours, bare, durable))),
        ("cyclic GC passes, gen 1", *(c.gc_passes[1] for c in (ours, bare, durable))),
        ("cyclic GC passes, full (gen 2)", *(c.gc_passes[2] for c in (ours, bare, durable))),
        ("objects the cyclic GC freed", ours.gc_freed, bare.gc_freed, durable.gc_freed),
        ("cyclic GC's CPU (us)", *(1e6 * c.gc_cpu for c in (ours, bare, durable))),
    ):
        ratio = f"{a / b:8.2f}" if b else f"{'-':>8}"
        print(f"{label:<34}{a / n:>14.2f}{b / n:>14.2f}{ratio}{c / n:>14.2f}")
    print(f"{'events':<34}{row['events'] / n:>14.2f}{'-':>14}")
    for label, counted in (("conjure", ours), ("bare client", bare), ("bare durable", durable)):
        print(f"  {label}: the trio thread's CPU per job in each task's steps (us; steps per job)")
        for name, cpu in sorted(counted.cpu.items(), key=lambda kv: -kv[1])[:8]:
            steps = counted.task_steps.get(name, 0) / n
            print(f"{1e6 * cpu / n:>12.0f}{steps:>8.1f}  {name[-70:]}")
    _print_io(args, out)


class Opcodes(trio.abc.Instrument):
    """The Python bytecodes each task executes (``--opcodes``), between :meth:`start` and
    :meth:`stop`: ``sys.settrace`` with opcode events, on the trio thread, during each task
    step. A count is the same from run to run and does not depend on the box's load, where
    CPU time on a shared box does not hold still: an A/B of a cut reads here whether the
    work went, and the timed rows how much that was worth. Python code only: a call into C
    (msgspec, hashing, PIL, numpy, a system call) counts as the bytecodes that make it.
    Slow (about 10x): a run of its own, never a timed one."""

    def __init__(self) -> None:
        self.on = False
        self.ops: dict[str, int] = {}
        self._name = ""

    def _trace_call(self, frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return self._trace_op

    def _trace_op(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.ops[self._name] = self.ops.get(self._name, 0) + 1
        return self._trace_op

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on and not task.name.endswith(".drive"):
            self._name = _JOB_TASK.sub(r"\1<job>\2", task.name)
            sys.settrace(self._trace_call)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        sys.settrace(None)

    def start(self) -> None:
        self.on = True

    def stop(self) -> None:
        self.on = False
        sys.settrace(None)


SCHEDULER: Final = "<trio's scheduler>"
"""``WholeThread``'s name for the bytecodes run outside every task step."""


class WholeThread(trio.abc.Instrument):
    """Every Python bytecode the trio thread executes between :meth:`start` and :meth:`stop`,
    the scheduler's own included (``--opcodes``, beside ``Opcodes``): trio's run loop is Python
    too (its batches, wake-ups, cancel scopes' deliveries, deadlines, the MockClock), and
    ``Opcodes`` counts only what runs inside a task's step. Each bytecode is put on the task
    whose step runs it (the run loop's few around the step's ``send`` included), or on
    ``SCHEDULER`` outside every step; and each task's steps are counted
    (``before_task_step``). The MockClock driver's own steps (``.drive``, the benchmark's, not
    the run's) are counted apart and left out of the totals. This instrument's own methods
    and trio's dispatch to them are not traced (the run loop's test and call that reach them
    are, a few bytecodes per step). Exact, the same from run to run; slow (a run of its own)."""

    def __init__(self) -> None:
        self.on = False
        self.ops: dict[str, int] = {}
        self.steps: dict[str, int] = {}
        self._name = SCHEDULER
        self._hooked = False  # in one of this instrument's hooks: what it calls is not traced
        from trio._core import _instrumentation

        # Frames never traced: this instrument's hooks, and trio's loop that calls them.
        self._untraced = {
            getattr(type(self), name).__code__
            for name in ("before_task_step", "after_task_step", "_trace_call", "_trace_op")
        } | {_instrumentation.Instruments.call.__code__}

    def _trace_call(self, frame: Any, event: str, arg: Any) -> Any:
        if self._hooked or frame.f_code in self._untraced:
            return None
        frame.f_trace_opcodes = True
        return self._trace_op

    def _trace_op(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.ops[self._name] = self.ops.get(self._name, 0) + 1
        return self._trace_op

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self._hooked = True  # (re.sub calls back into Python)
            self._name = _JOB_TASK.sub(r"\1<job>\2", task.name)
            self.steps[self._name] = self.steps.get(self._name, 0) + 1
            self._hooked = False

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self._name = SCHEDULER

    def start(self) -> None:
        """Called from a task's step: the frames already running (the run loop's, this
        task's) are traced from here on too (``sys.settrace`` reaches only frames entered
        after it)."""
        self.on = True
        self._name = _JOB_TASK.sub(r"\1<job>\2", trio.lowlevel.current_task().name)
        frame = sys._getframe(1)
        while frame is not None:
            frame.f_trace = self._trace_op
            frame.f_trace_opcodes = True
            frame = frame.f_back
        sys.settrace(self._trace_call)

    def stop(self) -> None:
        self.on = False
        sys.settrace(None)
        frame = sys._getframe(1)
        while frame is not None:
            frame.f_trace = None
            frame = frame.f_back

    def total(self, counted: dict[str, int]) -> int:
        """``counted``'s sum, the MockClock driver's steps left out."""
        return sum(v for name, v in counted.items() if not name.endswith(".drive"))


def _print_opcodes(args: argparse.Namespace, out: Path) -> None:
    """Per job, the Python bytecodes each task executes, conjure beside the bare loop (one
    run each, ``Opcodes``); then the whole trio thread's, scheduler included, and the trio
    task steps, by task (one more run each, ``WholeThread``)."""
    n = args.opcodes
    rows = []
    wholes = []
    for label, fn in (("conjure", _ours_overhead), ("bare client", _bare_overhead)):
        for kind, rows_of_kind in ((Opcodes, rows), (WholeThread, wholes)):
            counted = kind()
            folder = out / f"op-{label.split()[0]}-{kind.__name__}"
            folder.mkdir()
            # trio's scheduler tosses a coin per batch (run order): seeded, the counts of a
            # run repeat within ~0.02% (~0.5% apart unseeded), so an A/B reads a cut of 0.1%.
            trio._core._run._r.seed(1)
            run_on_mock(
                fn,
                n,
                args.machines,
                folder,
                counted,
                on_drive=lambda counted=counted: trio.lowlevel.add_instrument(counted),
            )
            rows_of_kind.append((label, counted))
    print(f"\n== Python bytecodes per job, by task ({n} jobs, {args.machines} machines; exact)")
    for label, counted in rows:
        total = sum(counted.ops.values())
        print(f"  {label}: {total / n:,.0f} in all")
        for name, ops in sorted(counted.ops.items(), key=lambda kv: -kv[1])[:10]:
            print(f"{ops / n:>12,.0f}  {name[-70:]}")
    (_, ours), (_, bare) = wholes
    print(
        f"\n== the whole trio thread per job, trio's scheduler included ({n} jobs; exact;"
        " WholeThread)"
    )
    print(f"{'figure':<34}{'conjure':>14}{'bare client':>14}{'ratio':>8}")
    for label, a, b in (
        ("bytecodes, whole trio thread", ours.total(ours.ops), bare.total(bare.ops)),
        ("  of them trio's scheduler", ours.ops.get(SCHEDULER, 0), bare.ops.get(SCHEDULER, 0)),
        ("trio task steps", ours.total(ours.steps), bare.total(bare.steps)),
    ):
        print(f"{label:<34}{a / n:>14,.1f}{b / n:>14,.1f}{a / b:>8.2f}")
    for label, counted in wholes:
        print(f"  {label}: per job, by task: task steps, bytecodes (their steps' and the loop's)")
        names = [name for name in counted.ops.keys() | counted.steps.keys()]
        for name in sorted(names, key=lambda k: -counted.ops.get(k, 0))[:14]:
            steps, ops = counted.steps.get(name, 0) / n, counted.ops.get(name, 0) / n
            print(f"{steps:>10.2f}{ops:>12,.0f}  {name[-66:]}")


class IOCounts:
    """What one loop asks of the simulated cloud (``--counts``): HTTP requests by method and
    path (ids folded), and the WebSocket frames the machines send, by type, with their bytes.
    Counted at the simulator's edges (its host router and its server sockets), in a run of its
    own: the counting is not in the timed or the task-counted runs."""

    _ID: Final = re.compile(r"[0-9a-f][0-9a-f-]{19,}")
    _TYPE: Final = re.compile(r'"type":\s*"([A-Za-z_]+)"')

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.frames: dict[str, int] = {}
        self.frame_bytes: dict[str, int] = {}
        self.sockets = 0

    def request(self, request: httpx.Request) -> None:
        path = self._ID.sub("<id>", request.url.path)
        # The RunComfy API (one host) apart from the machines' ComfyUIs (one host each).
        where = "runcomfy" if "/servers" in path else "comfyui"
        key = f"{request.method} {where} {path}"
        self.requests[key] = self.requests.get(key, 0) + 1

    def frame(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            kind = "<binary>"
        else:
            found = self._TYPE.search(message, 0, 40)
            kind = found.group(1) if found else "<other>"
        self.frames[kind] = self.frames.get(kind, 0) + 1
        self.frame_bytes[kind] = self.frame_bytes.get(kind, 0) + len(message)


def _count_io(fn: Any, n: int, machines: int, out: Path) -> IOCounts:
    """One run of ``fn`` with the simulator's requests and frames counted (``IOCounts``)."""
    from conjure_actors.sim import cloud as sim_cloud
    from conjure_actors.sim import comfyui as sim_comfyui
    from conjure_actors.sim import ws as sim_ws

    io = IOCounts()
    router = sim_cloud._HostRouter
    sock = sim_ws.TrioServerSocket
    handle, send_text, send_bytes = router.handle_async_request, sock.send_text, sock.send_bytes
    serve_ws = sim_comfyui.ComfyUISim._serve_ws

    async def counted_handle(self: Any, request: httpx.Request) -> httpx.Response:
        io.request(request)
        return await handle(self, request)

    async def counted_text(self: Any, text: str) -> None:
        io.frame(text)
        await send_text(self, text)

    async def counted_bytes(self: Any, data: bytes) -> None:
        io.frame(data)
        await send_bytes(self, data)

    async def counted_serve_ws(self: Any, *args: Any, **kwargs: Any) -> Any:
        io.sockets += 1
        return await serve_ws(self, *args, **kwargs)

    patches: list[tuple[Any, str, Any]] = [
        (router, "handle_async_request", counted_handle),
        (sock, "send_text", counted_text),
        (sock, "send_bytes", counted_bytes),
        (sim_comfyui.ComfyUISim, "_serve_ws", counted_serve_ws),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, wrapper in patches:
        setattr(owner, name, wrapper)
    try:
        run_on_mock(fn, n, machines, out)
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
    return io


def _print_io(args: argparse.Namespace, out: Path) -> None:
    """Per job, what each loop asks of the simulated cloud (one run each, machines'
    launch and stop included): the same requests and frames mean the same simulator work."""
    n = args.counts
    ours = _count_io(_ours_overhead, n, args.machines, out / "io-ours")
    (out / "io-bare").mkdir()
    bare = _count_io(_bare_overhead, n, args.machines, out / "io-bare")
    print(f"\n== what each job asks of the simulated cloud ({n} jobs; per job, counted)")
    print(f"{'HTTP requests':<52}{'conjure':>10}{'bare client':>14}")
    for key in sorted(ours.requests.keys() | bare.requests.keys()):
        a, b = ours.requests.get(key, 0), bare.requests.get(key, 0)
        print(f"  {key.replace('/prod/api/users/', '.../'):<50}{a / n:>10.2f}{b / n:>14.2f}")
    print(f"{'WebSocket frames to the client (bytes)':<52}{'conjure':>10}{'bare client':>14}")
    for key in sorted(ours.frames.keys() | bare.frames.keys()):
        a, b = ours.frames.get(key, 0), bare.frames.get(key, 0)
        ab, bb = ours.frame_bytes.get(key, 0), bare.frame_bytes.get(key, 0)
        print(f"  {key:<50}{a / n:>10.2f}{b / n:>14.2f}  ({ab / n:.0f} B vs {bb / n:.0f} B)")
    print(f"  {'WebSocket connections':<50}{ours.sockets / n:>10.2f}{bare.sockets / n:>14.2f}")


_run = run_on_mock


def job_counts(text: str) -> tuple[int, ...]:
    """``--scaling``: comma-separated positive job counts, or '' for none."""
    if not text.strip():
        return ()
    return tuple(positive_int(part.strip()) for part in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--jobs", type=positive_int, default=1000, help="overhead: jobs (default 1000)"
    )
    parser.add_argument("--machines", type=positive_int, default=10, help="overhead: machines")
    parser.add_argument("--repeats", type=positive_int, default=5, help="overhead: rounds (median)")
    parser.add_argument(
        "--counts",
        type=non_negative_int,
        nargs="?",
        const=500,
        default=500,
        help="jobs for the counted run (task spawns, steps, batches, thread calls; 0 to skip;"
        " alone: 500)",
    )
    parser.add_argument(
        "--opcodes",
        type=non_negative_int,
        nargs="?",
        const=100,
        default=0,
        help="jobs for the runs that count each task's Python bytecodes per job, then the"
        " whole trio thread's (its scheduler included) and the trio task steps (exact, slow;"
        " 0 to skip, the default; alone: 100)",
    )
    parser.add_argument(
        "--only-opcodes",
        action="store_true",
        help="print the bytecode counts alone (with --opcodes N)",
    )
    parser.add_argument(
        "--scaling",
        type=job_counts,
        default="100,1000,10000",
        help="overhead: job counts for the CPU-per-job row ('' to skip)",
    )
    parser.add_argument(
        "--scaling-runs",
        type=positive_int,
        default=3,
        help="rounds of the CPU-per-job row (a size under 1,000 jobs runs 1000 // jobs times"
        " per round, at most 10; median, spread; default 3)",
    )
    parser.add_argument(
        "--only-scaling",
        action="store_true",
        help="print the CPU-per-job row alone (its runs take minutes at 10,000 jobs)",
    )
    args = parser.parse_args()
    if args.only_opcodes and not args.opcodes:
        args.opcodes = 100
    if args.only_scaling and not args.scaling:
        parser.error("--only-scaling needs job counts in --scaling (e.g. --scaling 100,1000)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.only_scaling:
            _print_scaling(args, out)
            return 0
        if args.only_opcodes:
            _print_opcodes(args, out)
            return 0
        # Rounds: the pipeline, the bare loop, the bare loop with durable outputs, one after
        # the other in each round, so that each ratio compares runs made a few seconds apart
        # (this shared box's speed drifts by a third between minutes: three runs of one,
        # then three of the other, measured the drift as much as the code).
        ours: list[dict[str, float]] = []
        bare: list[dict[str, float]] = []
        durable: list[dict[str, float]] = []
        unstepped: list[dict[str, float]] = []
        for r in range(args.repeats):
            for d in (out / f"b{r}", out / f"d{r}", out / f"u{r}"):
                d.mkdir()
            gc.collect()
            ours.append(_run(_ours_overhead, args.jobs, args.machines, out / f"o{r}"))
            gc.collect()
            bare.append(_run(_bare_overhead, args.jobs, args.machines, out / f"b{r}"))
            gc.collect()
            durable.append(
                _run(_bare_overhead, args.jobs, args.machines, out / f"d{r}", None, True)
            )
            gc.collect()
            unstepped.append(
                _run(_bare_overhead, args.jobs, args.machines, out / f"u{r}", None, False, True)
            )
        mem, retained = _run(_memory_per_job, max(100, args.jobs // 5), args.machines, out / "m")

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"== overhead: {args.jobs} jobs (invert_save, zero-duration nodes), "
            f"{args.machines} machines, in memory, MockClock; median of {args.repeats} rounds"
        )
        print(f"{'figure':<34}{'conjure':>14}{'bare client':>14}{'ratio':>8}")
        for label, key, fmt in (
            ("jobs/s", "jobs_s", "{:.0f}"),
            ("CPU per job (ms)", "cpu_ms", "{:.2f}"),
            # The trio thread alone: steadier on a shared box than the process's CPU (the
            # pipeline's output writes and fsyncs run in a worker thread; the bare loop has
            # none, it writes on the loop without fsync).
            ("  of it the trio thread (ms)", "main_ms", "{:.2f}"),
            # Wall time per job minus CPU per job: waiting on no CPU (the pipeline, for its
            # outputs' fsyncs: the job ends, and its machine takes the next, once they are
            # durable; or preempted by another program). On a shared disk it moved this
            # table's jobs/s ratio between 0.35 and 0.92 from run to run (session 30) while
            # the CPU ratios held: read the CPU rows for a cut, this one for the disk.
            ("wait on no CPU per job (ms)", "wait_ms", "{:.2f}"),
        ):
            a, b = med(ours, key), med(bare, key)
            ratio = f"{a / b:8.2f}" if b > 0 else f"{'-':>8}"
            print(f"{label:<34}{fmt.format(a):>14}{fmt.format(b):>14}{ratio}")
        print(
            "  beside the bare loop with durable outputs (temporary file, fsync, rename,"
            " directory fsync), one worker-thread call per output:"
        )
        for label, key, fmt in (
            ("  jobs/s, bare durable", "jobs_s", "{:.0f}"),
            ("  trio thread (ms), bare durable", "main_ms", "{:.2f}"),
        ):
            a, b = med(ours, key), med(durable, key)
            print(f"{label:<34}{fmt.format(a):>14}{fmt.format(b):>14}{a / b:>8.2f}")
        print(
            "  beside the bare loop out of step (its machines not in lock step, as no real run's"
            " are: _bare_overhead's out_of_step):"
        )
        for label, key, fmt in (
            ("  jobs/s, bare out of step", "jobs_s", "{:.0f}"),
            ("  trio thread (ms), out of step", "main_ms", "{:.2f}"),
        ):
            a, b = med(ours, key), med(unstepped, key)
            print(f"{label:<34}{fmt.format(a):>14}{fmt.format(b):>14}{a / b:>8.2f}")
        print(
            f"{'events/s (WS->journal->state->UI)':<34}{med(ours, 'events_s'):>14.0f}"
            f"{'-':>14}{'':>8}"
        )
        print(f"{'events per job':<34}{med(ours, 'events') / args.jobs:>14.1f}")
        print(f"{'peak memory per job (KiB)':<34}{mem:>14.1f}")
        print(f"{'memory per retained job (KiB)':<34}{retained:>14.1f}")
        rounds = sorted(a["jobs_s"] / b["jobs_s"] for a, b in zip(ours, bare, strict=True))
        jobs_ratio = statistics.median(rounds)
        print(
            f"{'jobs/s ratio, round by round':<34}"
            + " ".join(f"{a['jobs_s'] / b['jobs_s']:.2f}" for a, b in zip(ours, bare, strict=True))
            + f"  (median {jobs_ratio:.2f})"
        )
        steps = sorted(a["jobs_s"] / b["jobs_s"] for a, b in zip(ours, unstepped, strict=True))
        print(
            f"{'  the same, bare out of step':<34}"
            + " ".join(
                f"{a['jobs_s'] / b['jobs_s']:.2f}" for a, b in zip(ours, unstepped, strict=True)
            )
            + f"  (median {statistics.median(steps):.2f})"
        )
        print(
            f"target (jobs/s >= 0.80 of the bare client's, median of the rounds' ratios): "
            f"{'met' if jobs_ratio >= 0.8 else 'NOT met'} ({jobs_ratio:.2f})"
        )
        if args.counts:
            _print_counts(args, out)
        if args.opcodes:
            _print_opcodes(args, out)
        if args.scaling:
            _print_scaling(args, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
