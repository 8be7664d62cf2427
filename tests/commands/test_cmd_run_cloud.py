"""``run`` as a subprocess against a simulated RunComfy account served on loopback by the
test: kill -9 at several points then ``--resume``; Ctrl-C; a wrong token."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import eventlog
from conjure_actors.domain.events import Event
from conjure_actors.domain.prices import billed_seconds, cost_micros
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.runtime.events import ActorCrashed
from conjure_actors.sim.cloud import CloudFaults, CloudTimings
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, serve_cloud

pytestmark = pytest.mark.slow

VERSION = "wv-conjure-flux-mesh-1"


@asynccontextmanager
async def served_cloud(retry_after: float = 2.0) -> AsyncIterator[ServedCloud]:
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=0.5, deleting_delay=0.2, rate_per_second=20, burst=20)
    )
    faults = CloudFaults(runcomfy=RunComfyFaults(retry_after=retry_after))
    async with trio.open_nursery() as nursery:
        cloud: ServedCloud = await nursery.start(
            partial(serve_cloud, timings=timings, faults=faults, seed=7)
        )
        yield cloud
        nursery.cancel_scope.cancel()


def _env(cloud: ServedCloud, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    env.update(
        RUNCOMFY_API_BASE_URL=cloud.base_url,
        RUNCOMFY_USER_ID=cloud.user_id,
        RUNCOMFY_API_TOKEN=token or cloud.token,
        CONJURE_POOL_POLL_INTERVAL="0.2",
        CONJURE_POOL_IDLE_TIMEOUT="30",
    )
    return env


@attrs.define
class Run:
    """One ``run`` subprocess: its JSON lines as they come, its exit code."""

    process: Any
    lines: list[dict[str, Any]] = attrs.Factory(list)
    stderr: bytes = b""
    # The unfinished last line of stdout read so far: kept across calls (a chunk ends
    # wherever the pipe was when read, mid-line as often as not).
    partial: bytes = b""

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read stdout until a JSON line matches (fails if the process ends first).

        Every complete line read is kept in ``lines``, those after the match included: a
        later call (or a predicate over ``lines``) sees them."""
        checked = 0
        while True:
            for line in self.lines[checked:]:
                if predicate(line):
                    return line
            checked = len(self.lines)
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"run ended before the expected line; got {self.lines[-3:]}")
            *complete, self.partial = (self.partial + chunk).split(b"\n")
            self.lines.extend(json.loads(raw) for raw in complete)

    async def until_stderr(self, text: bytes) -> None:
        """Read stderr until ``text`` appears (fails if the process ends first)."""
        while text not in self.stderr:
            chunk = await self.process.stderr.receive_some(65536)
            if not chunk:
                raise AssertionError(f"run ended before {text!r}; stderr: {self.stderr!r}")
            self.stderr += chunk

    async def finish(self) -> int:
        async with trio.open_nursery() as nursery:

            async def drain_err() -> None:
                while chunk := await self.process.stderr.receive_some(65536):
                    self.stderr += chunk

            nursery.start_soon(drain_err)
            while await self.process.stdout.receive_some(65536):
                pass
        return int(await self.process.wait())


# Every ``run`` a test started: the autouse fixture below kills those still running when the
# test ends, so a failing scenario (whose siblings are cancelled mid-way) leaves no process.
_STARTED: list[Any] = []


@pytest.fixture(autouse=True)
def kill_leftover_runs() -> Iterator[None]:
    """Kill any ``run`` subprocess the test left running (only a failed test leaves one)."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.returncode is None:
            process.kill()


async def start_run(
    cloud: ServedCloud, cwd: Path, *args: str, token: str | None = None, **env: str
) -> Run:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "conjure_actors",
            "run",
            "--json",
            "--workflow-version",
            VERSION,
            *args,
        ],
        cwd=cwd,
        env={**_env(cloud, token), **env},
        stdout=-1,
        stderr=-1,
    )
    _STARTED.append(process)
    return Run(process)


def _state(log: Path) -> Any:
    return eventlog.fold(eventlog.read(log, Event), apply, initial_state())


def _crashes(log: Path) -> list[str]:
    """Every actor crash the log records (a supervisor restart hides a bug otherwise)."""
    return [
        f"{r.event.actor}: {r.event.error_type}: {r.event.message}"
        for r in eventlog.read(log, Event)
        if isinstance(r.event, ActorCrashed)
    ]


def _is(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("type") == kind


KILL_POINTS = {
    "before_launch": _is("machine.launch_requested"),
    "while_starting": _is("machine.launched"),
    "mid_prompt": _is("exec.prompt_submitted"),
    "mid_download": _is("exec.output_saved"),
}


async def _kill_and_resume(root: Path, point: str, results: dict[str, Any]) -> None:
    """One scenario on its own account (a resume adopts the account's unknown servers)."""
    cwd = root / point
    cwd.mkdir()
    log = cwd / "run.log"
    async with served_cloud() as cloud:
        first = await start_run(cloud, cwd, "--log", str(log), "--jobs", "2", "--seed", "5")
        with trio.fail_after(120):
            await first.until(KILL_POINTS[point])
            # The run logs its jobs one by one while the pool already acts on the first: a
            # launch may be logged before the second job is (every run seen so far logged it
            # just after). A job the killed run never logged was never accepted and no resume
            # can know it, so the kill waits for both: the scenario is about resuming them.
            await first.until(lambda _: sum(map(_is("job.submitted"), first.lines)) == 2)
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        second = await start_run(cloud, cwd, "--resume", str(log))
        with trio.fail_after(180):
            code = await second.finish()
        with trio.move_on_after(30):
            while cloud.runcomfy.running():  # noqa: ASYNC110 - the sim offers no event
                await trio.sleep(0.1)
        left = cloud.runcomfy.running()
        assert left == [], (point, left, _state(log).machines, second.stderr.decode())
        bills = {b.server_id: b.cost_micros for b in cloud.runcomfy.billing()}
        ran = [p for sim in cloud.machines.values() for p in sim.prompts_run]
    results[point] = (code, second.stderr.decode(), _state(log), bills, ran, _crashes(log))


def _ledger_bounds(m: Any) -> set[int]:
    """The bills the cloud may have recorded for a machine the ledger closed.

    The ledger is exact but for one instant a client in another process cannot observe:
    when, within a ``DELETE``'s round trip, the cloud stopped billing. The ledger bills a
    stop up to the ``DELETE``'s 200 (an upper bound: the cloud stopped after the logged
    stop intent and before the 200), and a ``DELETE`` in flight at a crash up to the logged
    intent (a lower bound: it arrived within its latency, well under a second here). When
    that bracket of a few milliseconds straddles a whole second, the cloud's bill is one
    second off the ledger's.
    """
    if m.stop_requested_at is None or m.stopped_at is None:
        return {m.cost_micros}
    low = m.stop_requested_at
    high = m.stopped_at if m.stopped_at > low else low + 1.0
    first = billed_seconds(m.service_ready_at, low)
    last = billed_seconds(m.service_ready_at, high)
    return {cost_micros(m.rate_micros_per_hour, s) for s in range(first, last + 1)}


async def test_kill_9_then_resume_at_four_points(tmp_path: Path) -> None:
    """kill -9 before launch, while Starting, mid-prompt and mid-download, then --resume:
    every job succeeds, no machine is left running, no prompt ran twice, and the ledger
    equals the simulator's bills."""
    results: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        for point in KILL_POINTS:
            nursery.start_soon(_kill_and_resume, tmp_path, point, results)
    for point, (code, stderr, state, bills, ran, crashes) in results.items():
        assert code == 0, (point, stderr)
        assert crashes == [], point
        assert "Traceback" not in stderr
        assert [j.status for j in state.jobs.values()] == ["succeeded", "succeeded"], (
            point,
            [(j.status, j.error, j.queue_reason) for j in state.jobs.values()],
            stderr,
        )
        for m in state.machines.values():
            assert m.status in ("stopped", "lost"), (point, m)
        assert set(bills) == set(state.machines), point
        for m in state.machines.values():
            assert bills[m.server_id] in _ledger_bounds(m), (point, m, bills[m.server_id])
        assert len(ran) == len(set(ran)), f"{point}: a prompt ran twice"


async def test_ctrl_c_stops_every_machine(tmp_path: Path) -> None:
    """SIGINT mid-run: jobs interrupted, machines stopped, summary printed, exit 130."""
    async with served_cloud() as cloud:
        run = await start_run(
            cloud,
            tmp_path,
            "--log",
            str(tmp_path / "r.log"),
            "--jobs",
            "3",
            "--set",
            "20.steps=400",
        )
        with trio.fail_after(60):
            await run.until(_is("exec.node_progress"))
        run.process.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            code = await run.finish()
        assert code == 130, run.stderr.decode()
        assert "jobs: 3" in run.stderr.decode()
        assert cloud.runcomfy.running() == []
        state = _state(tmp_path / "r.log")
        assert state.system.stop_reason == "interrupted"
        assert _crashes(tmp_path / "r.log") == []
        assert all(j.status == "interrupted" for j in state.jobs.values())  # for --resume
        # Secrets: the token appears in no output and no logged event.
        raw_log = (tmp_path / "r.log").read_bytes()
        assert cloud.token.encode() not in raw_log
        assert cloud.token not in json.dumps(run.lines) + run.stderr.decode()


async def test_second_ctrl_c_quits_at_once_naming_what_may_still_run(tmp_path: Path) -> None:
    """A second SIGINT while the machines' stops are held up by 429s: exit 130 at once,
    naming every machine still billing and the command that stops them; that command then
    stops them and runs the interrupted jobs to the end (no prompt runs twice)."""
    log = tmp_path / "r.log"
    async with served_cloud(retry_after=1.0) as cloud:
        run = await start_run(
            cloud, tmp_path, "--log", str(log), "--jobs", "2", "--set", "20.steps=400"
        )
        with trio.fail_after(60):
            await run.until(_is("exec.node_progress"))
        cloud.runcomfy.inject_rate_limit_burst(3)  # the stops wait on Retry-After
        run.process.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            # A person's second Ctrl-C comes after the interruptions are durable.
            await run.until(lambda line: sum(_is("job.interrupted")(x) for x in run.lines) == 2)
        run.process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            code = await run.finish()
        still_running = cloud.runcomfy.running()
        err = run.stderr.decode()
        assert code == 130, err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("quitting now; "), err
        assert all(server_id in last for server_id in still_running), (still_running, last)
        if still_running:
            assert last.endswith(f"python -m conjure_actors run --resume {log} stops them")
        assert cloud.token not in err

        resume = await start_run(cloud, tmp_path, "--resume", str(log))
        with trio.fail_after(120):
            code = await resume.finish()
        assert code == 0, resume.stderr.decode()  # interrupted, not cancelled: finished now
        assert "jobs: 2 (2 succeeded, 0 failed, 0 cancelled)" in resume.stderr.decode()
        assert cloud.runcomfy.running() == []
        state = _state(log)
        assert all(m.status in ("stopped", "lost") for m in state.machines.values())
        assert [j.status for j in state.jobs.values()] == ["succeeded", "succeeded"]
        assert _crashes(log) == []
        ran = [p for sim in cloud.machines.values() for p in sim.prompts_run]
        assert len(ran) == len(set(ran)), "a prompt ran twice"


async def test_wrong_token_is_one_line(tmp_path: Path) -> None:
    """A wrong API token: a one-line error, non-zero exit, no machine launched."""
    async with served_cloud() as cloud:
        run = await start_run(cloud, tmp_path, token="not-the-token")
        with trio.fail_after(60):
            code = await run.finish()
        err = run.stderr.decode()
        assert code != 0
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("error: ")
        assert cloud.runcomfy.billing() == []
        assert "not-the-token" not in err


@pytest.mark.parametrize(
    ("after", "poll"),
    [(0.0, "0.2"), (2.0, "60")],
    ids=["while_starting", "ready_between_polls"],
)
async def test_interrupt_before_the_run_saw_ready_bills_what_the_cloud_bills(
    tmp_path: Path, after: float, poll: str
) -> None:
    """Ctrl-C right after the launch (the machine still Starting), or once the cloud made it
    Ready but no poll has seen it: the machine is stopped, and the ledger bills it from the
    server's own Ready time (its final record), as the cloud does, not "0 s"."""
    log = tmp_path / "r.log"
    async with served_cloud() as cloud:
        run = await start_run(
            cloud, tmp_path, "--log", str(log), "--jobs", "1", CONJURE_POOL_POLL_INTERVAL=poll
        )
        with trio.fail_after(60):
            await run.until(_is("machine.launched"))
        await trio.sleep(after)
        run.process.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            code = await run.finish()
        assert code == 130, run.stderr.decode()
        assert cloud.runcomfy.running() == []
        bills = {b.server_id: b for b in cloud.runcomfy.billing()}
    state = _state(log)
    assert _crashes(log) == []
    assert set(bills) == set(state.machines)
    for m in state.machines.values():
        assert m.status == "stopped", m
        assert bills[m.server_id].cost_micros in _ledger_bounds(m), (m, bills[m.server_id])
        if after:  # Ready for about 1.5 s before the stop: billed, from the server's time
            assert m.service_ready_at == bills[m.server_id].service_ready_at
            assert (m.billed_seconds or 0) >= 1


async def test_kill_9_while_stopping_then_resume_bills_no_time_nothing_ran(
    tmp_path: Path,
) -> None:
    """kill -9 just after the stop of the idle machine was logged (its DELETE in flight):
    the resume finds it gone (or stops it) and bills it up to its stop, not up to the
    resume; the ledger equals the cloud's bill."""
    log = tmp_path / "r.log"
    async with served_cloud() as cloud:
        first = await start_run(
            cloud, tmp_path, "--log", str(log), "--jobs", "1", CONJURE_POOL_IDLE_TIMEOUT="0.5"
        )
        with trio.fail_after(120):
            await first.until(_is("machine.stopping"))
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        await trio.sleep(3.0)  # time in which no machine runs: never billed
        second = await start_run(cloud, tmp_path, "--resume", str(log))
        with trio.fail_after(120):
            code = await second.finish()
        assert code == 0, second.stderr.decode()
        assert cloud.runcomfy.running() == []
        bills = {b.server_id: b for b in cloud.runcomfy.billing()}
    state = _state(log)
    assert _crashes(log) == []
    assert set(bills) == set(state.machines)
    for m in state.machines.values():
        assert m.status in ("stopped", "lost"), m
        assert bills[m.server_id].cost_micros in _ledger_bounds(m), (m, bills[m.server_id])
