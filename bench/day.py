"""The simulated day (``python bench/day.py``): cost efficiency of the pool's policy (issue 16).

300 jobs arriving at random (seeded Poisson) over 24 h, machine start-up 1-3 min, jobs
100-500 s of GPU time. Our policy (reuse, short leases, idle timeout) vs the seeds' policy
(launch a machine per job, stop it after): billed machine-seconds / useful GPU-seconds and
p50/p95 job latency. Target (issue 16): p95 <= 0.60 of the seeds' with ratio <= 1.25, and
the same figures from two runs of one seed (the scheduler's tie-breaking is seeded). Beside
it, the floor no policy can beat (each job's own GPU time, no start-up, no wait), the p95 of
the queueing latency (latency minus the job's GPU time: what a policy can change), and the
trade-off curve over the policy's knobs (idle timeout, warm pool, launch hedge, predictive
pre-launch on the arrival rate) so a user can pick a point. The verdict checks the issue's
numbers on the best point of the curve (and says why when no point can meet them).

Each run is a whole simulated day on a MockClock (about 40 s of CPU); the runs go to
``--workers`` processes, and the figures do not depend on which process ran them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _mockrun import (  # noqa: E402  (bench/_mockrun.py)
    VERSION,
    config_for,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
    run_on_mock,
)

import eventlog  # noqa: E402
from conjure_actors.actors.example import bundled_workflow, example_sketch_png  # noqa: E402
from conjure_actors.clients.comfyui import ComfyUIClient  # noqa: E402
from conjure_actors.clients.runcomfy import RunComfyClient  # noqa: E402
from conjure_actors.clock import TrioWallClock  # noqa: E402
from conjure_actors.domain.events import Event  # noqa: E402
from conjure_actors.domain.workflow import bindings_for, load_workflow  # noqa: E402
from conjure_actors.sim.cloud import CloudFaults, CloudTimings, open_simulated_cloud  # noqa: E402
from conjure_actors.sim.comfyui import ComfyTimings  # noqa: E402
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings  # noqa: E402
from conjure_actors.testing import open_simulated_conjure  # noqa: E402
from conjure_actors.testing.harness import seeded_ids  # noqa: E402

_config = config_for


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
DAY_SECONDS = 86_400.0


def _day(n: int, seed: int) -> list[DayJob]:
    """``n`` arrivals over 24 h (Poisson), each 100-500 s of sampler steps."""
    rng = random.Random(seed)
    t, out = 0.0, []
    rate = n / DAY_SECONDS
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


PRELAUNCH_WINDOW = 1800.0  # pool.prelaunch_window: arrivals over the last 30 min
PRELAUNCH_SERVICE = 600.0  # pool.prelaunch_service: start-up + run, a little above the mean


@attrs.frozen
class Knobs:
    """The pool policy's knobs the day is run with (config.PoolConfig)."""

    idle_timeout: float = 60.0
    warm_pool: int = 0
    launch_hedge: int = 1
    prelaunch_max: int = 0
    prelaunch_factor: float = 1.0

    def prelaunch_label(self) -> str:
        if not self.prelaunch_max:
            return "off"
        return f"{self.prelaunch_max} x{self.prelaunch_factor:g}"

    def label(self) -> str:
        return (
            f"idle {self.idle_timeout:g} s, warm {self.warm_pool}, hedge {self.launch_hedge}, "
            f"pre-launch {self.prelaunch_label()}"
        )


async def _ours_day(jobs: list[DayJob], out: Path, knobs: Knobs) -> dict[str, float]:
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
            idle_timeout=knobs.idle_timeout,
            warm_pool=knobs.warm_pool,
            launch_hedge=knobs.launch_hedge,
            prelaunch_max=knobs.prelaunch_max,
            prelaunch_factor=knobs.prelaunch_factor,
            prelaunch_window=PRELAUNCH_WINDOW,
            prelaunch_service=PRELAUNCH_SERVICE,
            lease_seconds=900.0,
            renew_margin=300.0,
        )
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=out, seed=3, ids=seeded_ids(3)
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
            if knobs.warm_pool:
                # A warm pool never stops by itself: it is kept (and billed) to the end of
                # the day, then shut down with the rest.
                await conjure.wait_until_idle()
                await trio.sleep_until(max(trio.current_time(), start + DAY_SECONDS))
            else:
                await conjure.wait_until_idle(machines_stopped=True)
            state = conjure.state
            await conjure.shutdown()
        assert all(state.jobs[i].status == "succeeded" for i in ids)
        latencies = [state.jobs[i].finished_at - state.jobs[i].submitted_at for i in ids]
        billed = sum(b.billed_seconds for b in cloud.billing())
        launched = len(cloud.billing())
    return _figures(jobs, latencies, billed, launched)


def _figures(
    jobs: list[DayJob], latencies: list[float], billed: float, launched: int
) -> dict[str, float]:
    """The day's figures from each job's latency (in ``jobs``' order) and the bill."""
    useful = sum(j.gpu_seconds for j in jobs)
    p50, p95 = _latencies_summary(latencies)
    queueing = [lat - j.gpu_seconds for lat, j in zip(latencies, jobs, strict=True)]
    _, q95 = _latencies_summary(queueing)
    return {"ratio": billed / useful, "p50": p50, "p95": p95, "q95": q95, "machines": launched}


async def _seeds_day(jobs: list[DayJob], out: Path) -> dict[str, float]:
    """The seeds' policy: each job launches its machine, waits for Ready, runs, stops it."""
    wall = TrioWallClock()
    wf = load_workflow(json.loads(bundled_workflow()))
    image = example_sketch_png()
    latencies: dict[int, float] = {}
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
            server = await rc.launch(VERSION, "medium", 3600)
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
            latencies[job.seed] = trio.current_time() - start - job.arrival

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, job)
        billed = sum(b.billed_seconds for b in cloud.billing())
    return _figures(jobs, [latencies[j.seed] for j in jobs], billed, len(jobs))


# ---------------------------------------------------------------------------------- main


P95_TARGET = 0.60  # issue 16: p95 latency at most this fraction of the seeds' policy
RATIO_TARGET = 1.25  # billed / useful GPU-seconds at most


def _grid(main: Knobs) -> list[Knobs]:
    """The curve's points: reuse alone, hedged launches, longer idle timeouts, a warm pool,
    predictive pre-launch; and the point the flags chose. Wider hedges cost launches, not
    money (no charge until Ready; the spares still Starting when one is Ready are stopped
    unbilled): each launch is slow (3 min) half the time, so with 5 per machine needed the
    p95 of the wait is the fast start-up's (1 in 32 jobs waits for a slow one)."""
    grid = [
        Knobs(60.0, 0, 1),
        Knobs(60.0, 0, 2),
        Knobs(60.0, 0, 3),
        Knobs(60.0, 0, 5),
        Knobs(60.0, 1, 2),
        Knobs(60.0, 0, 2, prelaunch_max=3, prelaunch_factor=2.0),
        Knobs(180.0, 0, 2, prelaunch_max=2),
    ]
    return grid if main in grid else [main, *grid]


def _day_run(what: str, jobs: list[DayJob], knobs: Knobs | None) -> dict[str, float]:
    """One whole day in this process (a worker's task): ``ours`` with ``knobs``, or the
    seeds' policy."""

    with tempfile.TemporaryDirectory() as tmp:
        if what == "seeds":
            return _run_deterministic(_seeds_day, jobs, Path(tmp))  # type: ignore[no-any-return]
        return _run_deterministic(_ours_day, jobs, Path(tmp), knobs)  # type: ignore[no-any-return]


def _cost_section(args: argparse.Namespace) -> bool:
    jobs = _day(args.day_jobs, args.seed)
    main = Knobs(
        args.idle_timeout,
        args.warm_pool,
        args.launch_hedge,
        args.prelaunch_max,
        args.prelaunch_factor,
    )
    grid = _grid(main) if args.curve else [main]
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as workers:
        seeds_f = workers.submit(_day_run, "seeds", jobs, None)
        again_f = workers.submit(_day_run, "ours", jobs, main)  # same seed: the same figures?
        points_f = [workers.submit(_day_run, "ours", jobs, k) for k in grid]
        seeds_day = seeds_f.result()
        points = [f.result() for f in points_f]
        again = again_f.result()
    elapsed = time.perf_counter() - t0
    ours_day = points[grid.index(main)]
    deterministic = again == ours_day
    # No policy beats running each job the moment it arrives on a machine already Ready:
    # every job's latency is at least its GPU time, so every order statistic is too.
    _, floor_p95 = _latencies_summary([j.gpu_seconds for j in jobs])
    print(
        f"\n== cost efficiency: {args.day_jobs} jobs over a simulated day (seed "
        f"{args.seed}), start-up 60-180 s, jobs 100-500 s; ours: {main.label()}"
    )
    print(f"{'figure':<34}{'our policy':>14}{'seeds policy':>14}{'ratio':>8}")
    for label, key in (
        ("billed / useful GPU-seconds", "ratio"),
        ("p50 latency (s)", "p50"),
        ("p95 latency (s)", "p95"),
        ("p95 queueing (latency - GPU, s)", "q95"),
        ("machines launched", "machines"),
    ):
        a, b = ours_day[key], seeds_day[key]
        print(f"{label:<34}{a:>14.2f}{b:>14.2f}{a / b:>8.2f}")
    print(
        f"{'p95 floor (GPU time alone, s)':<34}{floor_p95:>14.2f}{seeds_day['p95']:>14.2f}"
        f"{floor_p95 / seeds_day['p95']:>8.2f}   no policy can go below this"
    )
    print(
        f"{'same seed, second run':<34}{'same' if deterministic else 'DIFFERENT':>14}"
        + ("" if deterministic else f"   p95 {again['p95']:.2f}, ratio {again['ratio']:.2f}")
    )
    if args.curve:
        _print_curve(grid, points, seeds_day)
    # The verdict: the best point (lowest p95 within the bill's bound) against the goal.
    within = [(p, k) for p, k in zip(points, grid, strict=True) if p["ratio"] <= RATIO_TARGET]
    best, best_knobs = min(within, key=lambda pk: pk[0]["p95"]) if within else (ours_day, main)
    p95_ratio = best["p95"] / seeds_day["p95"]
    floor_ratio = floor_p95 / seeds_day["p95"]
    met = best["ratio"] <= RATIO_TARGET and p95_ratio <= P95_TARGET and deterministic
    print(
        f"target (p95 <= {P95_TARGET:.2f} of the seeds' with billed/useful <= {RATIO_TARGET}, "
        f"deterministic): {'met' if met else 'NOT met'}; best point ({best_knobs.label()}): "
        f"p95 {p95_ratio:.2f} of the seeds', billed/useful {best['ratio']:.2f}, queueing p95 "
        f"{best['q95'] / seeds_day['q95']:.2f} of the seeds'"
    )
    if floor_ratio > P95_TARGET:
        print(
            f"  unreachable on this day: every job's latency >= its GPU time, so p95 >= the "
            f"GPU time's p95 {floor_p95:.0f} s = {floor_ratio:.2f} of the seeds' "
            f"{seeds_day['p95']:.0f} s > {P95_TARGET:.2f} (the goal needs p95 <= "
            f"{P95_TARGET * seeds_day['p95']:.0f} s)"
        )
    print(f"({len(grid) + 2} simulated days in {elapsed:.0f} s on {args.workers} workers)")
    return met


def _print_curve(
    grid: list[Knobs], points: list[dict[str, float]], seeds: dict[str, float]
) -> None:
    print(
        f"\n== trade-off curve: the same day under each setting of the pool's knobs "
        f"(pool.idle_timeout, pool.warm_pool, pool.launch_hedge, pool.prelaunch_max x "
        f"pool.prelaunch_factor, window {PRELAUNCH_WINDOW:g} s, service "
        f"{PRELAUNCH_SERVICE:g} s); against the seeds' p95 {seeds['p95']:.0f} s and "
        f"queueing p95 {seeds['q95']:.0f} s"
    )
    print(
        f"{'idle_timeout':>12}{'warm':>5}{'hedge':>6}{'prelaunch':>10}{'billed/useful':>14}"
        f"{'p50 (s)':>9}{'p95 (s)':>9}{'p95/seeds':>10}{'queue p95/seeds':>16}{'launched':>9}"
    )
    for knobs, r in zip(grid, points, strict=True):
        mark = (
            " <= targets"
            if r["ratio"] <= RATIO_TARGET and r["p95"] / seeds["p95"] <= P95_TARGET
            else (" within the bill" if r["ratio"] <= RATIO_TARGET else "")
        )
        print(
            f"{knobs.idle_timeout:>12g}{knobs.warm_pool:>5}{knobs.launch_hedge:>6}"
            f"{knobs.prelaunch_label():>10}{r['ratio']:>14.2f}{r['p50']:>9.0f}{r['p95']:>9.0f}"
            f"{r['p95'] / seeds['p95']:>10.2f}{r['q95'] / seeds['q95']:>16.2f}"
            f"{r['machines']:>9.0f}{mark}"
        )


class _TieBreak(random.Random):
    """trio's order between tasks runnable together, seeded and stateless: each batch
    (sorted by task creation, as trio does when deterministic scheduling is on) is permuted
    by a function of its size alone, the driver set aside. A running random stream would
    be shifted by every extra batch the driver makes while a worker thread writes a file,
    and that depends on how busy the machine is: the same seed would not give the same
    run from one process to the next."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.tie_seed = seed
        self.driver: Any = None

    def shuffle(self, x: Any) -> None:  # type: ignore[override]
        rest = [t for t in x if t is not self.driver]
        random.Random(self.tie_seed * 1_000_003 + len(rest)).shuffle(rest)
        x[:] = rest + [t for t in x if t is self.driver]


def _quiet_monitor() -> None:
    """Nobody watches the simulated day: the monitor's redraw tick (0.25 s, for a terminal)
    would be 345,600 wake-ups, a third of a day's CPU. Every 5 s it still looks for stalled
    jobs (stall_seconds 60); no decision of the pool depends on it."""
    from conjure_actors.actors.monitor import MonitorActor

    kwdefaults = MonitorActor.__init__.__kwdefaults__
    assert kwdefaults is not None
    assert "refresh" in kwdefaults
    kwdefaults["refresh"] = 5.0


def _run_deterministic(fn: Any, *args: Any) -> Any:
    """Run ``fn`` on a MockClock that moves only once every task is blocked AND no worker
    thread is in flight (autojump would jump while a file is written in a thread, so
    simulated time would depend on the disk), with trio's tie-breaking between runnable
    tasks seeded (:class:`_TieBreak`): the same seed gives the same run."""
    run = trio._core._run
    run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    tie = run._r = _TieBreak(1)

    def on_drive() -> None:
        tie.driver = trio.lowlevel.current_task()

    return run_on_mock(fn, *args, on_drive=on_drive, step=0.0002)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day-jobs", type=positive_int, default=300, help="jobs in the day")
    parser.add_argument(
        "--idle-timeout", type=non_negative_number, default=60.0, help="our idle timeout (s)"
    )
    parser.add_argument("--warm-pool", type=non_negative_int, default=0, help="idle machines kept")
    parser.add_argument(
        "--launch-hedge", type=positive_int, default=2, help="machines launched per machine needed"
    )
    parser.add_argument(
        "--prelaunch-max", type=non_negative_int, default=0, help="pre-launch's cap (0: off)"
    )
    parser.add_argument(
        "--prelaunch-factor", type=positive_number, default=1.0, help="pre-launch's headroom factor"
    )
    parser.add_argument(
        "--no-curve", dest="curve", action="store_false", help="skip the trade-off curve"
    )
    parser.add_argument("--seed", type=int, default=11, help="arrival seed")
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="processes running the days (default 2)"
    )
    args = parser.parse_args()
    _quiet_monitor()
    _cost_section(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
