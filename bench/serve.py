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
   Each client has its own keep-alive connection and submits one job after the other.
   Both services really run every job on their simulator while the next ones arrive
   (``serve`` runs ``--parallel`` of them at once on its ComfyUI, default 8). The three
   backends are up at once and measured in interleaved rounds: one warm-up round
   (discarded), then ``--rounds`` rounds whose order alternates (A B C, C B A, ...); each
   load starts once every backend is quiet (its accepted jobs ran), so a drift of the
   machine's load weighs on all three alike. The server under test (each ``serve``, the
   proxy) is pinned to core 0 and this process (the clients, bare HTTP/1.1 over
   keep-alive sockets) and the simulators to core 1, so both servers get the same
   dedicated core (said in the output when the platform cannot pin). jobs/s and p50 are
   the medians of the rounds (min-max printed), p99 comes from all their latencies.
2. Memory per 10,000 retained jobs: ``serve``'s resident memory after replaying a log of
   10,000 finished jobs, minus its resident memory started on an empty log.
3. Restart: seconds from starting ``serve`` on that log of 10,000 jobs to its first line
   (the URL it serves on: the log is replayed, the runtime started, the socket bound), and
   the same on an empty log (interpreter and imports alone).

It prints a table with the ratios against the proxy measured in the same run, the rounds'
spread (min-median-max) and paired ratios, a breakdown (each backend's CPU time per
accepted job: during the load, until its jobs ran, and its simulator's), a completion
table (per round, from the load's start until every job the backend accepted has run:
``serve``'s log holds a terminal event for each (its outputs stored), durable (its
/metrics, asked once or twice at the end, counts it), the proxy's ComfyUI has an empty
queue, both followed from the driver core while the jobs run (see ``Finished``); so a
backend that answers fast by deferring its jobs shows it there), and a verdict line
checking the goal on ``serve``'s default level: at least as
fast as the proxy at every concurrency (jobs/s not lower, p50 not higher), decided on the
paired rounds (serve's round i against the proxy's round i, run close together) by a sign
test (see ``decide``): PASS when every row's rounds agree it is, FAIL when a row's rounds
agree it is not, NOT DECIDED otherwise (a pass or fail from noise decides nothing); that
``serve`` ran the jobs it accepted at its core's speed (FAIL if its core was busy less than
``BUSY`` of the span until they ran: the rate itself is not compared with the proxy's, whose
jobs need none of serve's work after their 201, see ``core_busy``); and a restart under 2 s.
The same comparison at the proxy's level is printed beside it. ``--part`` runs the
submission table or the restart figures alone (each fits one turn of a shared lock). Every
loop is bounded in count and time. The last line is the load average before the bench
started its processes: other work on the box, which makes every figure noisy.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import trio
from _mockrun import (  # bench/_mockrun.py: the arguments' types (exit 2)
    positive_int,
    positive_number,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package ``eventlog``, not bench/eventlog.py

import eventlog  # noqa: E402
from conjure_actors.domain.events import (  # noqa: E402
    UPCASTERS,
    Event,
    ExecutionStarted,
    ExecutionSucceeded,
    JobCancelled,
    JobFailed,
    JobSubmitted,
    JobSucceeded,
    MachineLeased,
    MachineReleased,
    OutputSaved,
    PromptSubmitted,
)

WORKFLOW = json.loads((ROOT / "conjure_actors" / "workflows" / "invert_save.json").read_text())
LEVELS = (1, 10, 50)
RETAINED = 10_000
START_TIMEOUT = 60.0
ANSWER_SLACK = 60.0  # seconds past a round's budget one request may still take
TICKS = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- cores

# The server under test (serve, or the proxy) runs alone on SERVER_CORE; this process (the
# load's clients) and every ComfyUI simulator share DRIVER_CORE. Both servers so get the
# same dedicated core, whatever else the box runs: unpinned, the scheduler put them beside
# the load generator one round and not the next (rounds of one backend spread 402-729
# jobs/s). serve also runs the jobs it accepts (follows them, downloads their outputs) in
# its own process: that work stays on its core and in its figures.
SERVER_CORE: Final = 0
DRIVER_CORE: Final = 1
PINNED = False  # set by main() once this process is pinned


def pinning() -> str | None:
    """Pin this process (and so the simulators it starts) to ``DRIVER_CORE``; returns why
    it could not (a note for the output), or None once pinned."""
    if not hasattr(os, "sched_setaffinity"):
        return "no sched_setaffinity on this platform"
    allowed = os.sched_getaffinity(0)
    if not {SERVER_CORE, DRIVER_CORE} <= allowed:
        return f"cores {SERVER_CORE} and {DRIVER_CORE} not both allowed ({sorted(allowed)})"
    os.sched_setaffinity(0, {DRIVER_CORE})
    return None


def server_core() -> None:
    """``preexec_fn`` of a server: its every thread on ``SERVER_CORE`` (set before exec,
    so no thread starts elsewhere)."""
    os.sched_setaffinity(0, {SERVER_CORE})


# ----------------------------------------------------------------------------- processes


class Proc:
    """A child process we started, with its stdout lines read by a thread-free poll."""

    def __init__(self, argv: list[str], cwd: Path, name: str, server: bool = False) -> None:
        self.name = name
        self.out = (cwd / f"{name}.out").open("w+b")
        self.err = (cwd / f"{name}.err").open("w+b")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=self.out,
            stderr=self.err,
            stdin=subprocess.DEVNULL,
            preexec_fn=server_core if server and PINNED else None,  # this process has no threads
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
def simulator(work: Path, name: str, node_scale: float = 0.0) -> Iterator[tuple[str, Proc]]:
    """A ComfyUI simulator (instant nodes unless ``node_scale``); yields its loopback URL and
    its process."""
    proc = Proc(
        [
            sys.executable,
            "-m",
            "conjure_actors",
            "sim",
            "--seed",
            "0",
            "--node-scale",
            f"{node_scale:g}",
        ],
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
        server=True,
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
        server=True,
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


async def read_response(stream: trio.SocketStream, buf: bytearray) -> tuple[int, bool, bytearray]:
    """One HTTP/1.1 response off a keep-alive connection: its status, whether the server
    closes the connection after it (``Connection: close``: hypercorn does after 1000
    requests on one), and the bytes read past its end (Content-Length bodies, which both
    backends send for a job)."""
    while (head_end := buf.find(b"\r\n\r\n")) < 0:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError("the backend closed the connection mid-response")
        buf += chunk
    head = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = None
    close = False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
    if length is None:
        raise RuntimeError(f"a response without Content-Length: {head[0]!r}")
    end = head_end + 4 + length
    while len(buf) < end:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError("the backend closed the connection mid-body")
        buf += chunk
    return status, close, buf[end:]


async def submit_load(url: str, clients: int, per_client: int, budget: float) -> dict[str, Any]:
    """``clients`` concurrent clients, each submitting ``per_client`` jobs one after the
    other (or until ``budget`` seconds pass): latencies of the 201s, jobs/s, non-201s."""
    latencies: list[float] = []
    refused: dict[int, int] = {}
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    body = json.dumps({"workflow": WORKFLOW}).encode()
    request = (
        f"POST /api/v2/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    # Each client has its own keep-alive connection, as separate clients do, opened before
    # the clock starts, and speaks HTTP/1.1 over a bare socket: one prebuilt request, the
    # status line and Content-Length read back. httpx cost this process 0.7 ms of CPU per
    # request at 10 clients (1.5-2.1 at 50) on the core the simulators share; the 50-client
    # row then measured the load generator as much as the backend.
    streams = [await trio.open_tcp_stream(host, port) for _ in range(clients)]

    async def one_client(i: int, deadline: float) -> None:
        buf = bytearray()
        for _ in range(per_client):
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            # Bounded: a backend that never answers one request ends the round at its
            # budget (plus ANSWER_SLACK), counted as refused with status 0 (no answer).
            with trio.move_on_after(deadline - t0 + ANSWER_SLACK) as waited:
                await streams[i].send_all(request)
                status, close, buf = await read_response(streams[i], buf)
            if waited.cancelled_caught:
                refused[0] = refused.get(0, 0) + 1
                return  # the connection is in an unknown state: this client is done
            if close:  # as a client does: a new connection for the next request
                await streams[i].aclose()
                streams[i] = await trio.open_tcp_stream(host, port)
            took = time.perf_counter() - t0
            if status == 201:
                latencies.append(took)
            else:
                refused[status] = refused.get(status, 0) + 1

    try:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(clients):
                nursery.start_soon(one_client, i, start + budget)
        elapsed = time.perf_counter() - start
    finally:
        for stream in streams:
            await stream.aclose()
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


# How "its jobs ran" is told, per backend (the completion columns), each from this process
# (the driver core), so neither check costs the server's core or slows its jobs: ``serve``
# once its log holds a terminal event (``JobSucceeded``, written once every output is
# downloaded, verified and stored; or ``JobFailed``, ``JobCancelled``) for every job it
# accepted, read by tailing the log file (see ``Finished``), then the same count from its
# /metrics, which counts a job once its terminal event is durable (one or two scrapes at the
# end of a round: a record is in the file before its group commit's fsync); the proxy
# once its ComfyUI simulator's queue is empty (the proxy POSTs each
# prompt to ComfyUI before its 201, and keeps nothing else to do: a job is done when its
# prompt ran). Each is polled every 20 ms from the end of the load, so the time includes no
# more than that. (Polling serve's /metrics instead cost serve ~0.6-0.95 ms of its core per
# job and slowed the jobs it was timing.)
POLL: Final = 0.02
TERMINAL: Final = (JobSucceeded, JobFailed, JobCancelled)
# A job's way through serve, as its log stamps it (each record's append time): where the
# seconds between its submission and the release of its ComfyUI slot go. serve runs
# ``--parallel`` jobs at once on its ComfyUI, so a slot held longer than ComfyUI's own work
# bounds "ran/s" below ComfyUI's rate even with CPU to spare (see ``cycle_line``).
CYCLE_STEPS: Final = (
    JobSubmitted,
    MachineLeased,
    PromptSubmitted,
    ExecutionStarted,
    ExecutionSucceeded,
    OutputSaved,
    MachineReleased,
)
CYCLE_NAMES: Final = ("queued", "submit", "comfy queue", "run", "outputs", "release")


def cycle_line(name: str, cycles: list[dict[type, float]]) -> str:
    """Median ms of each step of ``cycles`` (the jobs' stamps, see ``Finished``), and of a
    slot's hold (lease to release) of which ComfyUI's queue and run are the part no client
    can shorten."""
    if not cycles:
        return f"{name:<11} no job ran straight through"
    parts = []
    for i, step in enumerate(CYCLE_NAMES):
        a, b = CYCLE_STEPS[i], CYCLE_STEPS[i + 1]
        parts.append(f"{step} {1000 * statistics.median(c[b] - c[a] for c in cycles):.1f}")
    hold = statistics.median(c[MachineReleased] - c[MachineLeased] for c in cycles)
    return f"{name:<11} {' | '.join(parts)} | slot held {1000 * hold:.1f} ({len(cycles)} jobs)"


class Finished:
    """Jobs a ``serve`` finished, counted from its log file by this process.

    One follower per log, kept across rounds: each poll reads only what was appended since
    the last (a ``stat`` and a ``pread``) and decodes it here, on the driver core. A record
    is in the file once ``serve`` wrote it; at ``--journal-sync batch`` its fsync may still
    be in flight (one group commit, a few ms): ``serve_ran`` confirms with /metrics."""

    def __init__(self, log: Path) -> None:
        self.follower = eventlog.follow(log, Event, poll_interval=POLL, upcasters=UPCASTERS)
        self.count = 0
        self.stamps: dict[str, dict[type, float]] = {}  # job -> first append time of each step
        self.cycles: list[dict[type, float]] = []  # the jobs released, with every step

    def _note(self, record: Any) -> None:
        event = record.event
        if isinstance(event, TERMINAL):
            self.count += 1
        step = type(event)
        if step in CYCLE_STEPS:
            stamps = self.stamps.setdefault(event.job_id, {})
            stamps.setdefault(step, record.ts)
            if step is MachineReleased:
                del self.stamps[event.job_id]
                if len(stamps) == len(CYCLE_STEPS):  # a job that ran once, straight through
                    self.cycles.append(stamps)

    def now(self, settle: float = 0.2) -> int:
        """The count once the log has been read to its end (no new record for ``settle`` s;
        a long backlog is read whole, however long that takes)."""

        async def read() -> None:
            while True:
                # A cancelled wait loses no record: the follower keeps what it read.
                with trio.move_on_after(settle) as scope:
                    record = await self.follower.__anext__()
                if scope.cancelled_caught:
                    return
                self._note(record)

        trio.run(read)
        return self.count

    def until(self, target: int, timeout: float = 300.0) -> float:
        """``perf_counter()`` once ``target`` jobs are finished (bounded)."""

        async def wait() -> bool:
            if self.count >= target:  # nothing more to wait for (a round that accepted none)
                return True
            with trio.move_on_after(timeout):
                async for record in self.follower:
                    self._note(record)
                    if self.count >= target:
                        return True
            return False

        if not trio.run(wait):
            raise RuntimeError(f"the accepted jobs did not all run within {timeout:g} s")
        return time.perf_counter()


Ran = Any  # () -> (accepted -> perf_counter() once they ran), one per round (see measure)


def measure(
    targets: dict[str, tuple[str, list[Proc], Any]],
    per_round: dict[int, int],
    budget: float,
    rounds: int,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every target at every concurrency, in one warm-up round (discarded: first
    connections, caches, the log's first segment) then ``rounds`` interleaved rounds whose
    order alternates (A B C, then C B A: each target goes first as often as last; an
    unalternated order favoured whichever server ran first, 3 A/Bs out of 3). Each load
    starts once every backend is quiet (the jobs the previous one accepted have run).
    Per target and level: jobs/s and p50 are medians of the rounds' (each round's kept, to
    pair them across targets), p99 comes from all the rounds' latencies. Each round also
    times the load's start to the moment every job it accepted has run (``ran()`` before the
    load, then ``(accepted) -> perf_counter()``: a target's third element): "ran/s" is the
    median of accepted jobs per second of that span, "done s" its median."""
    names = list(targets)
    every = [proc for _, procs, _ in targets.values() for proc in procs]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in LEVELS} for n in names}
    for clients in LEVELS:
        each = max(1, per_round[clients] // clients)
        for turn in range(rounds + 1):  # turn 0 is the warm-up
            for name in names if turn % 2 else names[::-1]:
                wait_quiet(every)
                url, procs, ran = targets[name]
                front, behind = procs[:1], procs[1:]
                before = cpu_ticks(front), cpu_ticks(behind)
                until = ran()
                run = trio.run(submit_load, url, clients, each, budget)
                during = cpu_ticks(front) - before[0]
                span = until(run["ok"]) - run["started"]
                run["ran_s"] = span
                run["ran_per_s"] = run["ok"] / span if span > 0 else 0.0
                wait_quiet(every)  # its accepted jobs ran (the next load waits for it anyway)
                run["cpu"] = (during, cpu_ticks(front) - before[0], cpu_ticks(behind) - before[1])
                if turn:
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
                "rounds_p50_ms": [r["p50_ms"] for r in done],
                "rounds_ran_per_s": [r["ran_per_s"] for r in done],
                "ran_s": statistics.median(r["ran_s"] for r in done),
                "ran_per_s": statistics.median(r["ran_per_s"] for r in done),
                "p50_ms": statistics.median(r["p50_ms"] for r in done),
                "p99_ms": 1000 * latencies[min(n - 1, math.ceil(0.99 * n) - 1)] if n else math.nan,
                # CPU ms per accepted job: the service during the load, the service until
                # its jobs ran, its simulator until then (the breakdown under the table).
                "cpu_ms": tuple(
                    1000 * sum(r["cpu"][i] for r in done) / TICKS / max(1, n) for i in range(3)
                ),
            }
    return out


# How a row is decided from paired rounds. Round i of serve and round i of the proxy ran
# close together, so their ratio cancels most of the box's drift, and a sign test over the
# rounds says whether they agree beyond chance: "yes" needs the median ratio on the right
# side of 1 and at least ``needed(n)`` of the n rounds no more than TOLERANCE on the wrong
# side; "no" needs the median on the wrong side and at least ``needed(n)`` rounds on the
# wrong side; anything between is "not decided" (a pass or fail would be noise). One round
# disturbed by other work on the box cannot flip a verdict from 8 rounds.
TOLERANCE: Final = 0.05
ALPHA: Final = 0.05


def needed(n: int) -> int | None:
    """The fewest of ``n`` rounds that must agree for a one-sided sign test at ``ALPHA``
    (None: ``n`` rounds cannot decide, fewer than 5)."""
    for k in range(n + 1):
        tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
        if tail <= ALPHA:
            return k
    return None


def decide(ratios: list[float], higher_is_better: bool) -> str:
    """``yes``/``no``/``not decided`` for one figure's paired ratios (serve / proxy)."""
    sign = 1.0 if higher_is_better else -1.0
    margins = [sign * math.log(r) for r in ratios]  # > 0: serve better in that round
    k = needed(len(margins))
    if k is None:
        return "not decided"
    middle = statistics.median(margins)
    if middle >= 0 and sum(m >= math.log(1 - TOLERANCE) for m in margins) >= k:
        return "yes"
    if middle < 0 and sum(m < 0 for m in margins) >= k:
        return "no"
    return "not decided"


def row_verdict(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[str, str]:
    """(verdict, ratios text) of one row: jobs/s not lower and p50 not higher than the
    proxy's, per paired round (issue 13's goal). The text also gives the ratio of the rates
    at which the accepted jobs ran, which the verdict does not compare (see ``core_busy``)."""
    pairs = zip(ours["rounds_jobs_per_s"], theirs["rounds_jobs_per_s"], strict=True)
    speed = [a / b for a, b in pairs]
    p50 = [a / b for a, b in zip(ours["rounds_p50_ms"], theirs["rounds_p50_ms"], strict=True)]
    ran = [a / b for a, b in zip(ours["rounds_ran_per_s"], theirs["rounds_ran_per_s"], strict=True)]
    both = (decide(speed, higher_is_better=True), decide(p50, higher_is_better=False))
    verdict = "no" if "no" in both else "yes" if set(both) == {"yes"} else "not decided"
    text = (
        f"jobs/s x {min(speed):.2f}-{max(speed):.2f} ({both[0]}),"
        f" p50 x {min(p50):.2f}-{max(p50):.2f} ({both[1]}),"
        f" ran/s x {min(ran):.2f}-{max(ran):.2f} (not compared: different work)"
    )
    return verdict, text


# The rate at which serve runs the jobs it accepted is not compared with the proxy's: the
# proxy's jobs "ran" once its ComfyUI's queue is empty, and it does nothing for a job after
# forwarding it, where serve follows each prompt, downloads, verifies and durably stores its
# outputs (a rented machine's files go when it stops) and journals every step. What the
# verdict checks instead is that a fast 201 is not bought by deferring the jobs and then
# idling (the gate puts requests first): from the load's start until its accepted jobs ran,
# serve's pinned core must be busy (its process's CPU time over that span) at least BUSY of
# the time, so the only thing between an accepted job and its outputs is serve's own work.
BUSY: Final = 0.8


def core_busy(row: dict[str, Any]) -> float:
    """The share of its span, from the load's start until every accepted job ran, during
    which serve's process ran on its (one, pinned) core."""
    return float(row["ran_per_s"] * row["cpu_ms"][1] / 1000)


def overall(verdicts: list[str]) -> str:
    """PASS when every row is a yes, FAIL when one is a no, NOT DECIDED otherwise."""
    if "no" in verdicts:
        return "FAIL"
    return "PASS" if all(v == "yes" for v in verdicts) else "NOT DECIDED"


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


def serve_ran(finished: Finished, url: str) -> Ran:
    """A target's ``ran``: the ``serve`` writing ``finished``'s log (at ``url``) finished
    ``accepted``
    more jobs than when the round started, durably. Counted from the log while the jobs
    run (see ``Finished``: no load on serve's core), then confirmed by its ``/metrics``,
    which counts a job only once its terminal event is durable (one or two scrapes a
    round, where polling /metrics cost serve 0.5-0.75 scrapes per job)."""

    def start() -> Any:
        before = finished.now()
        durable = serve_finished(url)

        def until(accepted: int) -> float:
            finished.until(before + accepted)
            return wait_ran(lambda: serve_finished(url) >= durable + accepted, poll=0.002)

        return until

    return start


def proxy_ran(comfyui: str) -> Ran:
    """A target's ``ran``: the proxy's ComfyUI simulator is idle (see ``measure``)."""
    return lambda: lambda accepted: wait_ran(lambda: comfyui_idle(comfyui), poll=POLL)


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=200,
        help="submissions per round at every concurrency",
    )
    parser.add_argument(
        "--budget", type=positive_number, default=30.0, help="seconds at most per round"
    )
    parser.add_argument(
        "--retained", type=positive_int, default=RETAINED, help="jobs in the restart log"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--parallel", type=positive_int, default=8, help="jobs serve runs at once on its ComfyUI"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=8,
        help="measured rounds per concurrency level (after one warm-up round; at least 5"
        " to decide)",
    )
    parser.add_argument(
        "--node-scale",
        type=float,
        default=0.0,
        help="the simulators' node durations (0: instant, the default; 1: a real server's)",
    )
    parser.add_argument(
        "--part",
        choices=("all", "load", "restart"),
        default="all",
        help="load: the submission table only; restart: the memory and restart figures only"
        " (each fits one turn of a shared benchmark lock)",
    )
    args = parser.parse_args()
    per_round = {1: args.jobs, 10: args.jobs, 50: args.jobs}
    load, restarts = args.part in ("all", "load"), args.part in ("all", "restart")
    global PINNED
    unpinned = pinning()
    PINNED = unpinned is None
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
            simulator(work, "sim-proxy", args.node_scale) as (proxy_comfy, proxy_sim),
            simulator(work, "sim-serve-none", args.node_scale) as (none_comfy, none_sim),
            simulator(work, "sim-serve", args.node_scale) as (comfyui, serve_sim),
        ):
            empty, _, empty_start = start_serve(
                work, comfyui, work / "empty.log", "serve-empty", args.parallel
            )
            empty_rss = empty.rss_bytes()
            empty.stop()
            proxy, proxy_url = start_proxy(work, proxy_comfy)
            none_log = work / "serve-none.log"
            unsynced, unsynced_url, _ = start_serve(
                work, none_comfy, none_log, "serve-none", args.parallel, "none"
            )
            serve, url, _ = start_serve(work, comfyui, log, "serve", args.parallel)
            followed = {"serve fsync": Finished(log), "serve write": Finished(none_log)}
            try:
                measured = load and measure(
                    {
                        "proxy": (proxy_url, [proxy, proxy_sim], proxy_ran(proxy_comfy)),
                        "fsync": (url, [serve, serve_sim], serve_ran(followed["serve fsync"], url)),
                        "write": (
                            unsynced_url,
                            [unsynced, none_sim],
                            serve_ran(followed["serve write"], unsynced_url),
                        ),
                    },
                    per_round,
                    args.budget,
                    max(1, args.rounds),
                )
                proxy.stop()
                unsynced.stop()
                submitted = serve_finished(url)  # measure() waited until every job ran
                left = args.retained - submitted if restarts else 0
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
            if restarts:
                again, _, restart = start_serve(work, comfyui, log, "serve-restart", args.parallel)
                time.sleep(1.0)  # let the replayed runtime settle before reading its memory
                retained_rss = again.rss_bytes()
                again.stop()
    finally:
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    fast_enough = "not measured (--part restart)"
    kept_up = "not measured"
    if measured:
        theirs, ours, written = measured["proxy"], measured["fsync"], measured["write"]
        rows = (("proxy", theirs), ("serve fsync", ours), ("serve write", written))
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
        verdicts: dict[str, list[str]] = {"fsync": [], "write": []}
        why: dict[str, list[str]] = {"fsync": [], "write": []}
        for clients in LEVELS:
            b = theirs[clients]
            for level, results in (("fsync", ours), ("write", written)):
                a = results[clients]
                speed = a["jobs_per_s"] / b["jobs_per_s"] if b["jobs_per_s"] else math.inf
                p50 = a["p50_ms"] / b["p50_ms"] if b["p50_ms"] else math.inf
                verdict, text = row_verdict(a, b)
                verdicts[level].append(verdict)
                why[level].append(f"{clients:>7} | serve {level:<5} {verdict:<11} {text}")
                print(
                    f"{clients:>7} | {'serve ' + level:<11} {a['jobs_per_s']:>8.1f}"
                    f" {a['p50_ms']:>8.2f} {a['p99_ms']:>8.2f} | {b['jobs_per_s']:>12.1f}"
                    f" {b['p50_ms']:>8.2f} {b['p99_ms']:>8.2f} | {speed:>8.2f} {p50:>6.2f}"
                )
                if a["refused"]:
                    print(f"        serve {level} answered non-201s: {a['refused']}")
            if b["refused"]:
                print(f"        proxy answered non-201s: {b['refused']}")
        # The medians above hide how far apart the rounds were: each row's spread (min-max of
        # its rounds) and the paired ratios say whether the rounds agree on a verdict.
        print(
            f"spread: jobs/s min-median-max of the {args.rounds} rounds (after a warm-up), p50 ms"
            " min-max"
        )
        for clients in LEVELS:
            for name, results in rows:
                r = results[clients]
                js, p50s = r["rounds_jobs_per_s"], r["rounds_p50_ms"]
                print(
                    f"{clients:>7} | {name:<11} {min(js):>7.0f} {statistics.median(js):>7.0f}"
                    f" {max(js):>7.0f} | p50 {min(p50s):>6.2f}-{max(p50s):<6.2f}"
                )
        print(
            "paired rounds (serve / proxy of the same round), a sign test: yes = median on the"
            f" right side of 1 and {needed(args.rounds)} of {args.rounds} rounds at most"
            f" {TOLERANCE:.0%} on the wrong side; no = median and {needed(args.rounds)} rounds on"
            " the wrong side; otherwise not decided"
        )
        for level in ("fsync", "write"):
            for line in why[level]:
                print(line)
        print(
            "breakdown: CPU ms per accepted job (user+system, /proc) of each backend's process"
            " during the load, until its accepted jobs ran, and of its ComfyUI simulator"
        )
        print(f"{'clients':>7} | {'backend':<11} {'load':>8} {'all':>8} {'sim':>8}")
        for clients in LEVELS:
            for name, results in rows:
                load, whole, sim = results[clients]["cpu_ms"]
                print(f"{clients:>7} | {name:<11} {load:>8.2f} {whole:>8.2f} {sim:>8.2f}")
        print(
            "completion: from each load's start until every job it accepted ran (serve: its"
            " log holds them finished, read by this process, durable by its /metrics; proxy: its"
            " ComfyUI's queue is empty),"
            " median of the"
            " rounds: seconds, and accepted jobs per second of that span"
        )
        head = f"{'clients':>7} | {'backend':<11} {'done s':>8} {'ran/s':>8} |"
        print(f"{head} {'ran/s x proxy':>13} {'core busy':>9}")
        kept_busy: list[str] = []
        for clients in LEVELS:
            for name, results in rows:
                r = results[clients]
                base = theirs[clients]["ran_per_s"]
                ratio = r["ran_per_s"] / base if base else math.inf
                share = "" if results is theirs else f"{core_busy(r):>9.2f}"
                print(
                    f"{clients:>7} | {name:<11} {r['ran_s']:>8.2f} {r['ran_per_s']:>8.1f} |"
                    f" {ratio:>13.2f} {share}"
                )
            kept_busy.append("yes" if core_busy(ours[clients]) >= BUSY else "no")
        print(
            "  ran/s is not compared with the proxy's: its jobs ran once its ComfyUI's queue"
            " is empty, and it does nothing for a job after forwarding it; serve follows each"
            " prompt, downloads, verifies and durably stores its outputs and journals every"
            " step (its CPU per job above). core busy: serve's CPU time over the span (its"
            f" core's share): at least {BUSY:.2f} means its accepted jobs waited for nothing"
            " but its own work (a fast 201 is not bought by deferring them and idling)"
        )
        print(
            "cycle: serve's jobs step by step, median ms from one step's log record to the"
            " next (every round, warm-ups too): queued (submitted -> leased a slot on its"
            " ComfyUI), submit (-> prompt accepted), comfy queue (-> started), run (->"
            " succeeded), outputs (-> stored), release (-> slot free); a slot held longer than"
            " ComfyUI's run keeps ran/s under ComfyUI's rate"
        )
        for name, finished in followed.items():
            print(cycle_line(name, finished.cycles))
        fast_enough = overall(verdicts["fsync"])
        kept_up = "yes" if all(v == "yes" for v in kept_busy) else "no"
    if restarts:
        per_10k = (retained_rss - empty_rss) * RETAINED / max(1, submitted)
        print(
            f"log of {submitted} jobs ({done} finished): restart to first line {restart:.2f} s"
            f" (empty log: {empty_start:.2f} s); memory {retained_rss / 2**20:.0f} MiB vs"
            f" {empty_rss / 2**20:.0f} MiB empty -> {per_10k / 2**20:.1f} MiB per 10,000 jobs"
        )
        restart_ok = "yes" if restart < 2.0 else "no"
        restart_text = f"restart on {submitted} jobs under 2 s: {restart_ok} ({restart:.2f} s)"
    else:
        restart_ok, restart_text = "yes", "restart: not measured (--part load)"
    if not measured:
        verdict = "FAIL" if restart_ok != "yes" else "PASS (restart only)"
        kept_text = ""
    else:
        verdict = "FAIL" if "no" in (restart_ok, kept_up) else fast_enough
        kept_text = (
            f"; its accepted jobs ran at its core's speed (core busy >= {BUSY:.2f} at every"
            f" concurrency): {kept_up}"
        )
    print(
        f"verdict: {verdict}: serve (default, fsync) as fast as the proxy at every"
        f" concurrency: {fast_enough}{kept_text}; {restart_text}"
    )
    if measured:
        print(
            "at the proxy's durability (serve write): as fast as the proxy at every concurrency:"
            f" {overall(verdicts['write'])}"
        )
    print(
        f"cores: servers on core {SERVER_CORE}, load clients and simulators on core {DRIVER_CORE}"
        if PINNED
        else f"cores: NOT pinned ({unpinned}): servers, clients and simulators share the cores"
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
