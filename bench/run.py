"""Benchmark of the whole runtime (``python bench/run.py``): overhead and cost efficiency.

1. Overhead: N jobs (default 1,000) of a model-free workflow on the in-memory simulated
   cloud with zero-duration nodes, under MockClock (so the figures are CPU, not waiting):
   jobs/s and events/s through the whole pipeline (WebSocket frame -> event -> journal ->
   state -> UI sink), CPU and peak memory per job. Baseline, same run, same cloud: a bare
   loop over the ComfyUI client (submit + follow + download, no actors, no journal).
2. Cost efficiency on a simulated day: 300 jobs arriving at random (seeded Poisson), machine
   start-up 1-3 min, jobs 100-500 s of GPU time. Our policy (reuse, short leases, idle
   timeout) vs the seeds' policy (launch a machine per job, stop it after): billed
   machine-seconds / useful GPU-seconds and p50/p95 job latency. Target: ratio <= 1.25 with
   p95 latency no worse than the seeds'.

Every figure is the median of ``--repeats`` runs (overhead) and is printed beside its
baseline with the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import eventlog  # noqa: E402
from conjure_actors.actors.example import bundled_workflow, example_sketch_png  # noqa: E402
from conjure_actors.clients.comfyui import ComfyUIClient  # noqa: E402
from conjure_actors.clients.runcomfy import RunComfyClient  # noqa: E402
from conjure_actors.clock import TrioWallClock  # noqa: E402
from conjure_actors.config import (  # noqa: E402
    Config,
    PoolConfig,
    RetryConfig,
    RunComfyConfig,
    Secret,
)
from conjure_actors.domain.events import Event  # noqa: E402
from conjure_actors.domain.workflow import apply_bindings, bindings_for, load_workflow  # noqa: E402
from conjure_actors.sim.cloud import CloudFaults, CloudTimings, open_simulated_cloud  # noqa: E402
from conjure_actors.sim.comfyui import ComfyTimings  # noqa: E402
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings  # noqa: E402
from conjure_actors.testing import open_simulated_conjure  # noqa: E402

VERSION = "wv-core-nodes-1"
MOCK = trio.testing.MockClock


class CountingSink:
    """The UI end of the pipeline: encodes every event as a JSON line (then drops it)."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        from conjure_actors.actors.view import event_json_line

        self.events += 1
        self.bytes += len(event_json_line(seq, ts, event))

    def tick(self, state: Any) -> None:
        return

    def close(self) -> None:
        return


def _config(cloud: Any, **pool: Any) -> Config:
    return Config(
        runcomfy=RunComfyConfig(
            user_id=cloud.user_id,
            api_token=Secret(cloud.token),
            base_url=cloud.base_url,
            workflow_version=VERSION,
        ),
        pool=PoolConfig(**pool),
        retry=RetryConfig(initial=1.0, max_delay=10.0),
    )


# ------------------------------------------------------------------------------ overhead


def _light_workflow() -> Any:
    return load_workflow(json.loads(bundled_workflow("invert_save.json")))


async def _ours_overhead(n: int, machines: int, out: Path) -> dict[str, float]:
    wall = TrioWallClock()
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=1.0, rate_per_second=1000, burst=1000),
        comfyui=ComfyTimings(scale=0.0),
    )
    wf = _light_workflow()
    sink = CountingSink()
    async with open_simulated_cloud(seed=1, timings=timings, wall=wall.now) as cloud:
        log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, sync="none")
        config = _config(cloud, max_machines=machines, poll_interval=1.0, idle_timeout=30.0)
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=out, monitor=sink, seed=1
        ) as conjure:
            cpu0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                await conjure.submit(wf, sets=[f"1.color={i}"])
            await conjure.wait_until_idle()
            cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
            ok = sum(j.status == "succeeded" for j in conjure.state.jobs.values())
            events = log.last_seq
            await conjure.shutdown()
    assert ok == n, f"only {ok} of {n} jobs succeeded"
    return {
        "jobs_s": n / elapsed,
        "events_s": events / elapsed,
        "cpu_ms": 1000 * cpu / n,
        "events": events,
        "ui_events": sink.events,
    }


async def _bare_overhead(n: int, machines: int, out: Path) -> dict[str, float]:
    """The same prompts through the ComfyUI client alone, on already launched machines."""
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
        queue_send, queue_recv = trio.open_memory_channel[int](math.inf)
        for i in range(n):
            queue_send.send_nowait(i)
        queue_send.close()
        cpu0, t0 = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for client in clients:

                async def worker(client: ComfyUIClient = client) -> None:
                    async with trio.open_nursery() as inner:
                        events = client.events()
                        await inner.start(events.run)
                        async for i in queue_recv:
                            prompt = apply_bindings(wf.graph, {"1.color": str(i)})
                            pid = f"00000000-0000-4000-8000-{i:012d}"
                            await client.submit(prompt, pid, events.client_id)
                            done = await client.wait(pid, events=events, poll_interval=1.0)
                            for output in done.outputs:
                                data = await client.download(output)
                                (out / f"{i}.png").write_bytes(data.data)
                        inner.cancel_scope.cancel()

                nursery.start_soon(worker)
        cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
        for s in ready:
            await rc.stop(s.server_id)
    return {"jobs_s": n / elapsed, "cpu_ms": 1000 * cpu / n}


async def _memory_per_job(n: int, machines: int, out: Path) -> float:
    tracemalloc.start()
    try:
        await _ours_overhead(n, machines, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / n / 1024


# ------------------------------------------------------------------------ cost efficiency


@attrs.frozen
class DayJob:
    arrival: float
    steps_a: int
    steps_b: int
    seed: int

    @property
    def gpu_seconds(self) -> float:
        return (self.steps_a + self.steps_b) * STEP_SECONDS


STEP_SECONDS = 5.0


def _day(n: int, seed: int) -> list[DayJob]:
    """``n`` arrivals over 24 h (Poisson), each 100-500 s of sampler steps."""
    rng = random.Random(seed)
    t, out = 0.0, []
    rate = n / 86_400
    for i in range(n):
        t += rng.expovariate(rate)
        total = rng.randint(20, 100)  # x 5 s = 100-500 s
        a = rng.randint(1, total - 1)
        out.append(DayJob(t, a, total - a, i))
    return out


def _day_timings() -> CloudTimings:
    # Start-up: 60 s, or 180 s for half the machines (slow_ready): "up to 3 minutes".
    return CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=60.0),
        comfyui=ComfyTimings(
            per_class={},
            default_node=0.0,
            per_step={"KSampler": STEP_SECONDS},
            progress_steps={},
        ),
    )


def _day_faults() -> CloudFaults:
    return CloudFaults(runcomfy=RunComfyFaults(slow_ready_rate=0.5, slow_ready_factor=3.0))


def _conjure_sets(job: DayJob) -> list[str]:
    return [f"20.steps={job.steps_a}", f"44.steps={job.steps_b}"]


def _latencies_summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return p50, p95


async def _ours_day(jobs: list[DayJob], out: Path, idle_timeout: float) -> dict[str, float]:
    wall = TrioWallClock()
    wf = load_workflow(json.loads(bundled_workflow()))
    image = example_sketch_png()
    async with open_simulated_cloud(
        seed=2, timings=_day_timings(), faults=_day_faults(), wall=wall.now
    ) as cloud:
        log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, sync="none")
        config = _config(
            cloud,
            max_machines=20,
            poll_interval=5.0,
            idle_timeout=idle_timeout,
            lease_seconds=900.0,
            renew_margin=300.0,
        )
        config = attrs.evolve(
            config, runcomfy=attrs.evolve(config.runcomfy, workflow_version="wv-1")
        )
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=out, seed=3
        ) as conjure:
            start = trio.current_time()
            ids: list[str] = []
            for job in jobs:
                await trio.sleep_until(start + job.arrival)
                ids.append(
                    await conjure.submit(
                        wf, image=image, prompt="fox", seed=job.seed, sets=_conjure_sets(job)
                    )
                )
            await conjure.wait_until_idle(machines_stopped=True)
            state = conjure.state
            await conjure.shutdown()
        assert all(state.jobs[i].status == "succeeded" for i in ids)
        latencies = [state.jobs[i].finished_at - state.jobs[i].submitted_at for i in ids]
        billed = sum(b.billed_seconds for b in cloud.billing())
        launched = len(cloud.billing())
    useful = sum(j.gpu_seconds for j in jobs)
    p50, p95 = _latencies_summary(latencies)
    return {"ratio": billed / useful, "p50": p50, "p95": p95, "machines": launched}


async def _seeds_day(jobs: list[DayJob], out: Path) -> dict[str, float]:
    """The seeds' policy: each job launches its machine, waits for Ready, runs, stops it."""
    wall = TrioWallClock()
    wf = load_workflow(json.loads(bundled_workflow()))
    image = example_sketch_png()
    latencies: list[float] = []
    async with (
        open_simulated_cloud(
            seed=2, timings=_day_timings(), faults=_day_faults(), wall=wall.now
        ) as cloud,
        httpx.AsyncClient(transport=cloud.http_transport()) as http,
    ):
        rc = RunComfyClient(cloud.base_url, cloud.user_id, cloud.token, http=http)
        start = trio.current_time()

        async def one(job: DayJob) -> None:
            await trio.sleep_until(start + job.arrival)
            server = await rc.launch("wv-1", "medium", 3600)
            try:
                server = await rc.wait_until_ready(server.server_id, interval=5.0)
                client = ComfyUIClient(server.url.reveal(), http=http, redact=server.server_id)
                await client.system_stats()
                uploaded = await client.upload_image(image, f"in{job.seed}.png")
                bindings = bindings_for(
                    wf,
                    image=uploaded.reference,
                    prompt="fox",
                    seed=job.seed,
                    sets=_conjure_sets(job),
                )
                pid = f"00000000-0000-4000-8000-{job.seed:012d}"
                await client.submit(wf.prompt(bindings), pid, None)
                done = await client.wait(pid, poll_interval=5.0)
                for output in done.outputs:
                    await client.download(output)
            finally:
                await rc.stop(server.server_id)
            latencies.append(trio.current_time() - start - job.arrival)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, job)
        billed = sum(b.billed_seconds for b in cloud.billing())
    useful = sum(j.gpu_seconds for j in jobs)
    p50, p95 = _latencies_summary(latencies)
    return {"ratio": billed / useful, "p50": p50, "p95": p95, "machines": len(jobs)}


# ---------------------------------------------------------------------------------- main


def _run(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args, clock=MOCK(autojump_threshold=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="overhead: jobs (default 1000)")
    parser.add_argument("--machines", type=int, default=10, help="overhead: machines")
    parser.add_argument("--repeats", type=int, default=3, help="overhead: repeats (median)")
    parser.add_argument("--day-jobs", type=int, default=300, help="cost: jobs in the day")
    parser.add_argument(
        "--idle-timeout", type=float, default=60.0, help="cost: our idle timeout (s)"
    )
    parser.add_argument("--seed", type=int, default=11, help="cost: arrival seed")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if not args.skip_overhead:
            ours = [
                _run(_ours_overhead, args.jobs, args.machines, out / f"o{r}")
                for r in range(args.repeats)
            ]
            bare_dirs = [out / f"b{r}" for r in range(args.repeats)]
            for d in bare_dirs:
                d.mkdir()
            bare = [_run(_bare_overhead, args.jobs, args.machines, d) for d in bare_dirs]
            mem = _run(_memory_per_job, max(100, args.jobs // 5), args.machines, out / "m")

            def med(rows: list[dict[str, float]], key: str) -> float:
                return statistics.median(r[key] for r in rows)

            print(
                f"== overhead: {args.jobs} jobs (invert_save, zero-duration nodes), "
                f"{args.machines} machines, in memory, MockClock; median of {args.repeats}"
            )
            print(f"{'figure':<34}{'conjure':>14}{'bare client':>14}{'ratio':>8}")
            for label, key, fmt in (
                ("jobs/s", "jobs_s", "{:.0f}"),
                ("CPU per job (ms)", "cpu_ms", "{:.2f}"),
            ):
                a, b = med(ours, key), med(bare, key)
                print(f"{label:<34}{fmt.format(a):>14}{fmt.format(b):>14}{a / b:>8.2f}")
            print(
                f"{'events/s (WS->journal->state->UI)':<34}{med(ours, 'events_s'):>14.0f}"
                f"{'-':>14}{'':>8}"
            )
            print(f"{'events per job':<34}{med(ours, 'events') / args.jobs:>14.1f}")
            print(f"{'peak memory per job (KiB)':<34}{mem:>14.1f}")
        if not args.skip_cost:
            jobs = _day(args.day_jobs, args.seed)
            ours_day = _run(_ours_day, jobs, out / "day", args.idle_timeout)
            seeds_day = _run(_seeds_day, jobs, out / "seeds")
            print(
                f"\n== cost efficiency: {args.day_jobs} jobs over a simulated day (seed "
                f"{args.seed}), start-up 60-180 s, jobs 100-500 s"
            )
            print(f"{'figure':<34}{'our policy':>14}{'seeds policy':>14}{'ratio':>8}")
            for label, key in (
                ("billed / useful GPU-seconds", "ratio"),
                ("p50 latency (s)", "p50"),
                ("p95 latency (s)", "p95"),
                ("machines launched", "machines"),
            ):
                a, b = ours_day[key], seeds_day[key]
                print(f"{label:<34}{a:>14.2f}{b:>14.2f}{a / b:>8.2f}")
            verdict = ours_day["ratio"] <= 1.25 and ours_day["p95"] <= seeds_day["p95"]
            print(f"target (ratio <= 1.25 and p95 no worse): {'met' if verdict else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
