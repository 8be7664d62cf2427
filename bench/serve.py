"""Benchmark of ``serve`` against the Comfy API v2 reference proxy (``python bench/serve.py``).

In one run, on loopback only:

1. Submission: ``POST /api/v2/jobs`` -> 201 latency (p50/p99) and jobs/s with 1, 10 and 50
   concurrent clients, against our ``serve`` (``--comfyui-url``) and against
   ``comfy-api-proxy`` (the ``bench`` extra; ``--state-dir``, so its submissions survive a
   crash of the process: SQLite WAL with ``synchronous=NORMAL``, which does not fsync each
   commit, where ``serve`` answers 201 only once the submission is fsynced), each in front
   of its own fresh ComfyUI simulator (``python -m conjure_actors sim``, nodes
   instantaneous) so neither backend's queue slows the other. ``serve`` is measured at
   both durability levels, each on its own simulator and log: its default
   (``--journal-sync batch``: the 201 once the submission is fsynced, which survives a power
   loss) and the proxy's (``--journal-sync none``: the 201 once the submission is written
   to the OS, which survives a crash of the process, not a power loss). The workflow is
   ``invert_save.json`` (EmptyImage -> ImageInvert -> SaveImage: no input to upload).
   Each client has its own connection (its own HTTP client) and submits one job after
   the other.
   Both services really run every job on their simulator while the next ones arrive
   (``serve`` runs ``--parallel`` of them at once on its ComfyUI, default 8). The three
   backends are up at once and measured in ``--rounds`` interleaved rounds (the order
   rotates; each load starts once every backend is quiet, its accepted jobs run), so a
   drift of the machine's load weighs on all three alike: jobs/s is the median of the
   rounds, p50/p99 come from all their latencies.
2. Memory per 10,000 retained jobs: ``serve``'s resident memory after replaying a log of
   10,000 finished jobs, minus its resident memory started on an empty log.
3. Restart: seconds from starting ``serve`` on that log of 10,000 jobs to its first line
   (the URL it serves on: the log is replayed, the runtime started, the socket bound), and
   the same on an empty log (interpreter and imports alone).

It prints a table with the ratios against the proxy measured in the same run, each round's
jobs/s (the spread: on a busy box one round may be half or twice another), a breakdown
(each backend's CPU time per accepted job: during the load, until its jobs ran, and its
simulator's), a completion table (per round, from the load's start until every job the
backend accepted has run: ``serve``'s /metrics count them finished, the proxy's ComfyUI has
an empty queue; so a backend that answers fast by deferring its jobs shows it there), and a
verdict line checking the goal on ``serve``'s default level: at least as
fast as the proxy at every concurrency (jobs/s not lower, p50 not higher) and a restart
under 2 s; the same comparison at the proxy's level is printed beside it. Every loop is
bounded in count and time. The last line is the load average before the bench started its
processes: other work on the box, which makes every figure noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from _mockrun import (  # bench/_mockrun.py: the arguments' types (exit 2)
    positive_int,
    positive_number,
)

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = json.loads((ROOT / "conjure_actors" / "workflows" / "invert_save.json").read_text())
LEVELS = (1, 10, 50)
RETAINED = 10_000
START_TIMEOUT = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- processes


class Proc:
    """A child process we started, with its stdout lines read by a thread-free poll."""

    def __init__(self, argv: list[str], cwd: Path, name: str) -> None:
        self.name = name
        self.out = (cwd / f"{name}.out").open("w+b")
        self.err = (cwd / f"{name}.err").open("w+b")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            argv, cwd=cwd, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL
        )

    def wait_line(self, needle: str, timeout: float = START_TIMEOUT) -> str:
        """The first stdout line containing ``needle`` (polls the file; bounded)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.out.seek(0)
            for line in self.out.read().decode(errors="replace").splitlines():
                if needle in line:
                    return line
            if self.popen.poll() is not None:
                break
            time.sleep(0.005)
        self.err.seek(0)
        tail = self.err.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not print {needle!r}:\n{tail}")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout: float = 60.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.out.close()
        self.err.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def simulator(work: Path, name: str) -> Iterator[tuple[str, Proc]]:
    """A ComfyUI simulator (instant nodes); yields its loopback URL and its process."""
    proc = Proc(
        [sys.executable, "-m", "conjure_actors", "sim", "--seed", "0", "--node-scale", "0"],
        work,
        name,
    )
    try:
        yield proc.wait_line("standalone ComfyUI simulator").split()[-1], proc
    finally:
        proc.stop()


def cpu_ticks(procs: list[Proc]) -> int:
    """User + system CPU ticks the processes used so far (``/proc/PID/stat``)."""
    total = 0
    for proc in procs:
        try:
            fields = Path(f"/proc/{proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def wait_quiet(procs: list[Proc], timeout: float = 300.0) -> None:
    """Return once the processes use under ~5% of a core (the jobs a backend accepted in
    the previous round have run), so no round pays for another backend's backlog."""
    window = 0.5
    quiet = max(1, int(os.sysconf("SC_CLK_TCK") * window * 0.05))
    deadline = time.perf_counter() + timeout
    before = cpu_ticks(procs)
    while time.perf_counter() < deadline:
        time.sleep(window)
        now = cpu_ticks(procs)
        if now - before <= quiet:
            return
        before = now


def start_serve(
    work: Path, comfyui: str, log: Path, name: str, parallel: int, sync: str = "batch"
) -> tuple[Proc, str, float]:
    """``serve`` on ``log`` (``parallel`` jobs at once on the ComfyUI, ``--journal-sync
    sync``); returns it, its URL and the seconds to its first line."""
    config = work / "conjure.toml"
    config.write_text(f"[pool]\njobs_per_machine = {parallel}\n")
    proc = Proc(
        [
            sys.executable,
            "-m",
            "conjure_actors",
            "serve",
            "--port",
            "0",
            "--comfyui-url",
            comfyui,
            "--log",
            str(log),
            "--out",
            str(work / "out"),
            "--max-queue",
            "1000000",
            "--drain-timeout",
            "5",
            "--journal-sync",
            sync,
            "--config",
            str(config),
        ],
        work,
        name,
    )
    line = proc.wait_line("serving the Comfy API v2 on")
    return proc, line.split()[-1], time.perf_counter() - proc.started


def start_proxy(work: Path, comfyui: str) -> tuple[Proc, str]:
    port = free_port()
    proxy = shutil.which("comfy-api-proxy")
    if proxy is None:
        raise RuntimeError("comfy-api-proxy is not installed: pip install -e '.[bench]'")
    proc = Proc(
        [
            proxy,
            "run",
            "--comfyui",
            comfyui,
            "--port",
            str(port),
            "--state-dir",
            str(work / "proxy-state"),
        ],
        work,
        "proxy",
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.perf_counter() + START_TIMEOUT
    while time.perf_counter() < deadline:
        try:
            if httpx.get(f"{url}/api/v2/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.popen.poll() is not None:
            break
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError("comfy-api-proxy did not answer /api/v2/health")


# ----------------------------------------------------------------------------- load


async def submit_load(url: str, clients: int, per_client: int, budget: float) -> dict[str, Any]:
    """``clients`` concurrent clients, each submitting ``per_client`` jobs one after the
    other (or until ``budget`` seconds pass): latencies of the 201s, jobs/s, non-201s."""
    latencies: list[float] = []
    refused: dict[int, int] = {}
    body = json.dumps({"workflow": WORKFLOW}).encode()
    headers = {"Content-Type": "application/json"}
    # Each client has its own connection (its own httpx client), as separate clients do.
    # One pool of ``clients`` connections shared by all of them cost this process ~3.3 ms
    # of CPU per request at 50 clients (httpcore's pool walks its connections and queued
    # requests on each assignment) against ~0.7 ms at 10, on the cores the backends share:
    # the 50-client row then measured the load generator more than the backend.
    # The clients are made before the clock starts: each builds a TLS context (~20 ms of
    # CPU, even for http), which at 50 clients put ~1 s before the first answers.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one_client(client: httpx.AsyncClient, deadline: float) -> None:
        for _ in range(per_client):
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            r = await client.post("/api/v2/jobs", content=body, headers=headers)
            took = time.perf_counter() - t0
            if r.status_code == 201:
                latencies.append(took)
            else:
                refused[r.status_code] = refused.get(r.status_code, 0) + 1

    async with AsyncExitStack() as stack:
        each = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=60)
            )
            for _ in range(clients)
        ]
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for client in each:
                nursery.start_soon(one_client, client, start + budget)
        elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {
        "ok": n,
        "latencies": latencies,
        "refused": refused,
        "started": start,
        "jobs_per_s": n / elapsed if elapsed > 0 else 0.0,
        "p50_ms": 1000 * latencies[n // 2] if n else math.nan,
        "p99_ms": 1000 * latencies[min(n - 1, math.ceil(0.99 * n) - 1)] if n else math.nan,
    }


def serve_finished(url: str) -> int:
    """Jobs ``serve`` has finished (succeeded, failed or cancelled), from its ``/metrics``."""
    done = 0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("conjure_jobs{") and any(
            f'status="{s}"' in line for s in ("succeeded", "failed", "cancelled")
        ):
            done += int(float(line.split()[-1]))
    return done


def comfyui_idle(comfyui: str) -> bool:
    """The ComfyUI simulator runs nothing and has nothing queued (its ``/queue``)."""
    queue = httpx.get(f"{comfyui}/queue", timeout=10).json()
    return not queue.get("queue_running") and not queue.get("queue_pending")


def wait_ran(done: Any, timeout: float = 300.0, poll: float = 0.02) -> float:
    """``perf_counter()`` once ``done()`` holds (polled every ``poll`` s; bounded)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if done():
            return time.perf_counter()
        time.sleep(poll)
    raise RuntimeError(f"the accepted jobs did not all run within {timeout:g} s")


# How "its jobs ran" is told, per backend (the completion columns): ``serve`` once its
# /metrics count every job it accepted as finished; the proxy once its ComfyUI simulator's
# queue is empty (the proxy POSTs each prompt to ComfyUI before its 201, and keeps nothing
# else to do: a job is done when its prompt ran). Each is polled every 20 ms from the end
# of the load, so the time includes no more than that; one poll costs the backend ~1 ms.
Done = Any  # () -> bool, made per round by a target's ``ran`` factory (expected count)


def measure(
    targets: dict[str, tuple[str, list[Proc], Any]],
    per_level: dict[int, int],
    budget: float,
    rounds: int,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every target at every concurrency, in ``rounds`` interleaved rounds (the order
    rotates each round, and each load starts once every backend is quiet), so a drift of
    the machine's load over the run weighs on all of them alike. Per target and level:
    jobs/s is the median of the rounds', p50/p99 come from all the rounds' latencies.
    Each round also times the load's start to the moment every job it accepted has run
    (``ran(accepted) -> done()``, a target's third element): "ran/s" is the median of
    accepted jobs per second of that span, "done s" its median."""
    names = list(targets)
    every = [proc for _, procs, _ in targets.values() for proc in procs]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in LEVELS} for n in names}
    for clients in LEVELS:
        each = max(1, per_level[clients] // rounds // clients)
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                wait_quiet(every)
                url, procs, ran = targets[name]
                front, behind = procs[:1], procs[1:]
                before = cpu_ticks(front), cpu_ticks(behind)
                done = ran()
                run = trio.run(submit_load, url, clients, each, budget / rounds)
                during = cpu_ticks(front) - before[0]
                span = wait_ran(done(run["ok"])) - run["started"]
                run["ran_s"] = span
                run["ran_per_s"] = run["ok"] / span if span > 0 else 0.0
                wait_quiet(every)  # its accepted jobs ran (the next load waits for it anyway)
                run["cpu"] = (during, cpu_ticks(front) - before[0], cpu_ticks(behind) - before[1])
                runs[name][clients].append(run)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for name in names:
        out[name] = {}
        for clients in LEVELS:
            done = runs[name][clients]
            latencies = sorted(x for r in done for x in r["latencies"])
            n = len(latencies)
            refused: dict[int, int] = {}
            for r in done:
                for code, count in r["refused"].items():
                    refused[code] = refused.get(code, 0) + count
            out[name][clients] = {
                "ok": n,
                "refused": refused,
                "jobs_per_s": statistics.median(r["jobs_per_s"] for r in done),
                "rounds_jobs_per_s": [r["jobs_per_s"] for r in done],
                "ran_s": statistics.median(r["ran_s"] for r in done),
                "ran_per_s": statistics.median(r["ran_per_s"] for r in done),
                "p50_ms": 1000 * latencies[n // 2] if n else math.nan,
                "p99_ms": 1000 * latencies[min(n - 1, math.ceil(0.99 * n) - 1)] if n else math.nan,
                # CPU ms per accepted job: the service during the load, the service until
                # its jobs ran, its simulator until then (the breakdown under the table).
                "cpu_ms": tuple(
                    1000 * sum(r["cpu"][i] for r in done) / TICKS / max(1, n) for i in range(3)
                ),
            }
    return out


def wait_all_done(url: str, expected: int, timeout: float) -> int:
    """Poll ``serve``'s metrics until ``expected`` jobs are finished; returns how many are."""
    deadline = time.perf_counter() + timeout
    done = 0
    while time.perf_counter() < deadline:
        done = serve_finished(url)
        if done >= expected:
            return done
        time.sleep(0.5)
    return done


def serve_ran(url: str) -> Any:
    """A target's ``ran``: ``serve`` at ``url`` finished ``accepted`` more jobs than now."""

    def start() -> Any:
        before = serve_finished(url)
        return lambda accepted: lambda: serve_finished(url) >= before + accepted

    return start


def proxy_ran(comfyui: str) -> Any:
    """A target's ``ran``: the proxy's ComfyUI simulator is idle (see ``measure``)."""
    return lambda: lambda accepted: lambda: comfyui_idle(comfyui)


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", type=positive_int, default=1000, help="submissions per concurrency level"
    )
    parser.add_argument(
        "--budget", type=positive_number, default=60.0, help="seconds at most per level"
    )
    parser.add_argument(
        "--retained", type=positive_int, default=RETAINED, help="jobs in the restart log"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--parallel", type=positive_int, default=8, help="jobs serve runs at once on its ComfyUI"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="interleaved rounds per concurrency level"
    )
    args = parser.parse_args()
    per_level = {1: max(50, args.jobs // 5), 10: args.jobs, 50: args.jobs}
    load_before = os.getloadavg()[0]  # other work on the box (see the last line)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ.pop("RUNCOMFY_USER_ID", None)
    os.environ.pop("RUNCOMFY_API_TOKEN", None)
    try:
        # --- the proxy and serve at both durability levels, each on its own simulator, all
        # up at once and measured in interleaved rounds; then the default serve's log is
        # topped up to --retained finished jobs for the memory and restart figures.
        log = work / "serve.log"
        with (
            simulator(work, "sim-proxy") as (proxy_comfy, proxy_sim),
            simulator(work, "sim-serve-none") as (none_comfy, none_sim),
            simulator(work, "sim-serve") as (comfyui, serve_sim),
        ):
            empty, _, empty_start = start_serve(
                work, comfyui, work / "empty.log", "serve-empty", args.parallel
            )
            empty_rss = empty.rss_bytes()
            empty.stop()
            proxy, proxy_url = start_proxy(work, proxy_comfy)
            unsynced, unsynced_url, _ = start_serve(
                work, none_comfy, work / "serve-none.log", "serve-none", args.parallel, "none"
            )
            serve, url, _ = start_serve(work, comfyui, log, "serve", args.parallel)
            try:
                measured = measure(
                    {
                        "proxy": (proxy_url, [proxy, proxy_sim], proxy_ran(proxy_comfy)),
                        "fsync": (url, [serve, serve_sim], serve_ran(url)),
                        "write": (unsynced_url, [unsynced, none_sim], serve_ran(unsynced_url)),
                    },
                    per_level,
                    args.budget,
                    max(1, args.rounds),
                )
                theirs, ours, written = measured["proxy"], measured["fsync"], measured["write"]
                proxy.stop()
                unsynced.stop()
                submitted = sum(r["ok"] for r in ours.values())
                left = args.retained - submitted
                while left > 0:
                    batch = trio.run(submit_load, url, 50, max(1, left // 50), 600.0)
                    if not batch["ok"]:
                        raise RuntimeError(f"top-up refused: {batch['refused']}")
                    submitted += batch["ok"]
                    left = args.retained - submitted
                done = wait_all_done(url, submitted, timeout=900)
            finally:
                for proc in (proxy, unsynced, serve):
                    proc.stop()
            again, _, restart = start_serve(work, comfyui, log, "serve-restart", args.parallel)
            time.sleep(1.0)  # let the replayed runtime settle before reading its memory
            retained_rss = again.rss_bytes()
            again.stop()
    finally:
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print("serve vs comfy-api-proxy: POST /api/v2/jobs -> 201 (invert_save.json, loopback)")
    print(
        "  serve fsync = default (--journal-sync batch: 201 once fsynced, survives power loss);"
        "\n  serve write = the proxy's level (--journal-sync none: 201 once written to the OS,"
        " survives kill -9, not power loss)"
    )
    print(
        f"{'clients':>7} | {'level':<11} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} | "
        f"{'proxy jobs/s':>12} {'p50 ms':>8} {'p99 ms':>8} | {'jobs/s x':>8} {'p50 x':>6}"
    )
    verdicts = {"fsync": True, "write": True}
    for clients in LEVELS:
        b = theirs[clients]
        for level, results in (("fsync", ours), ("write", written)):
            a = results[clients]
            speed = a["jobs_per_s"] / b["jobs_per_s"] if b["jobs_per_s"] else math.inf
            p50 = a["p50_ms"] / b["p50_ms"] if b["p50_ms"] else math.inf
            verdicts[level] &= speed >= 1.0 and p50 <= 1.0
            print(
                f"{clients:>7} | {'serve ' + level:<11} {a['jobs_per_s']:>8.1f} {a['p50_ms']:>8.2f}"
                f" {a['p99_ms']:>8.2f} | {b['jobs_per_s']:>12.1f} {b['p50_ms']:>8.2f}"
                f" {b['p99_ms']:>8.2f} | {speed:>8.2f} {p50:>6.2f}"
            )
            if a["refused"]:
                print(f"        serve {level} answered non-201s: {a['refused']}")
        if b["refused"]:
            print(f"        proxy answered non-201s: {b['refused']}")
    # A round's jobs/s on a busy box can be half or twice the median: the spread says how
    # far the ratios above can be trusted (a verdict from rounds that overlap is noise).
    print("spread: jobs/s of each round (in order), per backend")
    for clients in LEVELS:
        for name, results in (("proxy", theirs), ("serve fsync", ours), ("serve write", written)):
            rounds = " ".join(f"{x:.0f}" for x in results[clients]["rounds_jobs_per_s"])
            print(f"{clients:>7} | {name:<11} {rounds}")
    print(
        "breakdown: CPU ms per accepted job (user+system, /proc) of each backend's process"
        " during the load, until its accepted jobs ran, and of its ComfyUI simulator"
    )
    print(f"{'clients':>7} | {'backend':<11} {'load':>8} {'all':>8} {'sim':>8}")
    for clients in LEVELS:
        for name, results in (("proxy", theirs), ("serve fsync", ours), ("serve write", written)):
            load, whole, sim = results[clients]["cpu_ms"]
            print(f"{clients:>7} | {name:<11} {load:>8.2f} {whole:>8.2f} {sim:>8.2f}")
    print(
        "completion: from each load's start until every job it accepted ran (serve: its"
        " /metrics count them finished; proxy: its ComfyUI's queue is empty), median of the"
        " rounds: seconds, and accepted jobs per second of that span"
    )
    print(f"{'clients':>7} | {'backend':<11} {'done s':>8} {'ran/s':>8} | {'ran/s x proxy':>13}")
    for clients in LEVELS:
        for name, results in (("proxy", theirs), ("serve fsync", ours), ("serve write", written)):
            r = results[clients]
            base = theirs[clients]["ran_per_s"]
            ratio = r["ran_per_s"] / base if base else math.inf
            print(
                f"{clients:>7} | {name:<11} {r['ran_s']:>8.2f} {r['ran_per_s']:>8.1f} |"
                f" {ratio:>13.2f}"
            )
    fast_enough = verdicts["fsync"]
    per_10k = (retained_rss - empty_rss) * RETAINED / max(1, submitted)
    print(
        f"log of {submitted} jobs ({done} finished): restart to first line {restart:.2f} s"
        f" (empty log: {empty_start:.2f} s); memory {retained_rss / 2**20:.0f} MiB vs"
        f" {empty_rss / 2**20:.0f} MiB empty -> {per_10k / 2**20:.1f} MiB per 10,000 jobs"
    )
    restart_ok = restart < 2.0
    verdict = "PASS" if fast_enough and restart_ok else "FAIL"
    print(
        f"verdict: {verdict}: serve (default, fsync) as fast as the proxy at every"
        f" concurrency: {'yes' if fast_enough else 'no'}; restart on {submitted} jobs under"
        f" 2 s: {'yes' if restart_ok else 'no'} ({restart:.2f} s)"
    )
    print(
        "at the proxy's durability (serve write): as fast as the proxy at every concurrency: "
        f"{'yes' if verdicts['write'] else 'no'}"
    )
    cores = os.cpu_count() or 1
    busy = ": a busy box, other work shares the cores and the figures are noisy"
    print(
        f"load average (1 min) before the bench started its processes: {load_before:.2f} on"
        f" {cores} cores{busy if load_before >= cores / 2 else ''}"
    )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
