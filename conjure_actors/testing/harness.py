"""The harness: the real runtime against the in-memory simulated cloud, under MockClock.

A :class:`Harness` owns one :class:`~conjure_actors.sim.SimulatedCloud` (RunComfy plus one
ComfyUI per machine, in memory), one :class:`eventlog.MemoryLog` (the "disk") and, at any
moment, at most one *incarnation* of the runtime (``open_conjure`` over a journal on that
log). It can

- **start** an incarnation (on an empty log, or on what a crashed one left: a resume);
- **crash** it: every record not yet durable is dropped (``MemoryLog.crash()``), the
  incarnation's network is cut (a killed process sends nothing more: its HTTP transport and
  WebSocket connector refuse from that instant) and its tasks are cancelled; nothing it does
  while dying reaches the log or the cloud. The cloud lives on (machines keep billing);
- **drive the clock** deterministically (:meth:`Harness.advance`): trio's ``MockClock`` with
  autojump off, jumped by the harness to the next deadline only once every task is blocked
  *and* no worker thread (``trio.Path`` file writes) is in flight. Autojump would jump while a
  thread is still writing a file, so a run would not replay exactly from its seed;
- **inject faults** (:mod:`conjure_actors.testing.faults`) and **lose a machine**;
- **check the invariants** (:mod:`conjure_actors.testing.invariants`).

Every method is ``async`` and runs inside trio. :class:`conjure_actors.testing.HarnessThread`
runs a harness in a background thread for synchronous callers (hypothesis state machines).

Ids: the runtime names runs, jobs, prompts, launch requests and WebSocket clients with the
id factory it is given (``open_conjure(..., ids=...)``, ``uuid.uuid4`` by default). So that a
failing case replays exactly from its seed, the harness (with ``deterministic_ids``) gives
every incarnation one factory drawing from a generator seeded by the harness seed
(:func:`seeded_ids`). Nothing global is patched: two harnesses may run at once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import httpx
import outcome
import trio
import trio.testing

import eventlog
from conjure_actors.actors.conjure import Conjure, open_conjure
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import (
    BudgetConfig,
    Config,
    PoolConfig,
    RetryConfig,
    RunComfyConfig,
    Secret,
)
from conjure_actors.domain import state as st
from conjure_actors.domain.cost_policy import budget_micros
from conjure_actors.domain.events import Event
from conjure_actors.domain.prices import default_price_table
from conjure_actors.errors import ConjureError
from conjure_actors.sim import (
    CloudFaults,
    CloudTimings,
    ComfyFaults,
    ComfyTimings,
    RunComfyFaults,
    RunComfyTimings,
    SimulatedCloud,
    open_simulated_cloud,
)
from conjure_actors.testing.faults import Fault, TimedFault
from conjure_actors.testing.requests import JobRequest

__all__ = [
    "SIM_WORKFLOW_VERSION",
    "Harness",
    "HarnessError",
    "HarnessSettings",
    "open_harness",
]

SIM_WORKFLOW_VERSION: Final = "wv-conjure-flux-mesh-1"
_MAX_JUMPS_PER_ADVANCE: Final = 1_000_000
_CRASH_GRACE: Final = 600.0
T = TypeVar("T")  # virtual seconds a dying incarnation may take to unwind


class HarnessError(ConjureError):
    """The harness itself cannot go on (the runtime died, a step was used wrongly)."""


@attrs.frozen
class HarnessSettings:
    """How the simulated world and the runtime are set up for one harness.

    Times are seconds of simulated (MockClock) time. The defaults make a CONJURE job take
    about a minute of machine time and a machine about a minute to become Ready, so that
    crashes, cancels and lost machines land in the middle of things.
    """

    seed: int = 0
    max_machines: int = 3
    jobs_per_machine: int = 1
    lease_seconds: float = 300.0
    renew_margin: float = 90.0
    idle_timeout: float = 60.0
    ready_timeout: float = 300.0
    poll_interval: float = 5.0
    ready_delay: float = 60.0
    node_time_scale: float = 30.0
    server_type: str = "medium"
    budget_usd: float | None = None
    retry_initial: float = 2.0
    retry_max_delay: float = 30.0
    max_attempts: int = 3
    attempt_timeout: float = 600.0
    total_timeout: float = 1200.0
    stall_seconds: float = 60.0
    faults: CloudFaults = attrs.field(factory=CloudFaults)
    deterministic_ids: bool = True
    start_retries: int = 0

    def config(self, cloud: SimulatedCloud) -> Config:
        """The runtime's :class:`~conjure_actors.config.Config` aimed at ``cloud``."""
        from conjure_actors.config import MonitorConfig

        return Config(
            runcomfy=RunComfyConfig(
                user_id=cloud.user_id,
                api_token=Secret(cloud.token),
                base_url=cloud.base_url,
                server_type=self.server_type,
                workflow_version=SIM_WORKFLOW_VERSION,
            ),
            pool=PoolConfig(
                max_machines=self.max_machines,
                jobs_per_machine=self.jobs_per_machine,
                lease_seconds=self.lease_seconds,
                renew_margin=self.renew_margin,
                idle_timeout=self.idle_timeout,
                ready_timeout=self.ready_timeout,
                poll_interval=self.poll_interval,
            ),
            retry=RetryConfig(
                initial=self.retry_initial,
                max_delay=self.retry_max_delay,
                max_attempts=self.max_attempts,
                attempt_timeout=self.attempt_timeout,
                total_timeout=self.total_timeout,
            ),
            budget=BudgetConfig(usd=self.budget_usd),
            monitor=MonitorConfig(stall_seconds=self.stall_seconds),
        )

    def timings(self) -> CloudTimings:
        return CloudTimings(
            runcomfy=RunComfyTimings(ready_delay=self.ready_delay),
            comfyui=ComfyTimings(scale=self.node_time_scale),
        )

    def one_lease_micros(self) -> int:
        """What one lease of the configured server type costs (the budget's slack)."""
        table = default_price_table("hobby")
        rate = table.rate(self.server_type)
        return math.ceil(rate * self.lease_seconds / 3600)

    def quiet_bound(self) -> float:
        """Simulated seconds after which, without faults, every job must be terminal and
        every machine stopped: the job's total timeout, then idle timeout and one lease."""
        return (
            self.total_timeout
            + self.ready_timeout
            + self.idle_timeout
            + self.lease_seconds
            + 10 * self.poll_interval
        )


# ---------------------------------------------------------------------------- plumbing


class _Severable(httpx.AsyncBaseTransport):
    """The HTTP transport of one incarnation: cut at the crash, as a killed process's
    sockets are. Requests already inside the cloud finish there; new ones never leave."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("the process is dead (harness crash)", request=request)
        return await self._inner.handle_async_request(request)

    def ws_connect(self, connect: Callable[[str], AbstractAsyncContextManager[Any]]) -> Any:
        def guarded(url: str) -> AbstractAsyncContextManager[Any]:
            if self.cut:
                raise ConnectionRefusedError("the process is dead (harness crash)")
            return connect(url)

        return guarded


def seeded_ids(seed: int) -> Callable[[], uuid.UUID]:
    """An id factory: version-4 UUIDs drawn from ``Random`` seeded by ``seed`` (the same seed
    gives the same ids, in the same order)."""
    rng = random.Random(f"uuid:{seed}")

    def new_id() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    return new_id


@attrs.define(eq=False)
class _Incarnation:
    """One run of the runtime over the log, from start to crash (or shutdown)."""

    number: int
    transport: _Severable
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    conjure: Conjure | None = None
    journal: Any = None
    records: trio.MemoryReceiveChannel[Any] | None = None
    error: BaseException | None = None
    crashed: bool = False


@attrs.define(eq=False)
class Submitted:
    """What the harness asked for and what came of it (``job_id`` None: refused)."""

    request: JobRequest
    job_id: str | None
    refused: str | None = None


# ------------------------------------------------------------------------------ harness


class Harness:
    """See the module docstring. Make one with :func:`open_harness`."""

    def __init__(
        self,
        settings: HarnessSettings,
        *,
        cloud: SimulatedCloud,
        wall: TrioWallClock,
        nursery: trio.Nursery,
        out_dir: Path,
    ) -> None:
        self.settings = settings
        self.ids = seeded_ids(settings.seed) if settings.deterministic_ids else uuid.uuid4
        self.cloud = cloud
        self.wall = wall
        self.out_dir = out_dir
        self.log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, clock=wall.now)
        self.config = settings.config(cloud)
        self._nursery = nursery
        self._current: _Incarnation | None = None
        self.incarnations = 0
        self.crashes = 0
        # Every record a subscriber of any incarnation saw: acknowledged as durable.
        self.acked: list[eventlog.Record[Any]] = []
        self.submitted: list[Submitted] = []
        self.cancelled: list[str] = []
        self.lost: list[str] = []
        self.faults_applied: list[Fault] = []
        self._timed: list[tuple[float, int, Fault]] = []
        self._tie = itertools.count()
        # The budget in force and the spend at the moment it was set (see invariants).
        self.budget_limit_micros: int | None = budget_micros(settings.budget_usd)
        self.budget_floor_micros = 0
        self.start_failures: list[str] = []

    # ------------------------------------------------------------------ views

    @property
    def conjure(self) -> Conjure:
        """The running incarnation's runtime (raises if none runs)."""
        inc = self._current
        if inc is None or inc.conjure is None:
            raise HarnessError("the runtime is not running: start() it first")
        return inc.conjure

    @property
    def running(self) -> bool:
        inc = self._current
        return inc is not None and inc.conjure is not None and not inc.done.is_set()

    @property
    def state(self) -> st.State:
        """The live state (the running incarnation's ``journal.state``)."""
        return self.conjure.state

    @property
    def runtime_error(self) -> BaseException | None:
        """Why the running incarnation died on its own (None while it is healthy)."""
        inc = self._current
        return None if inc is None else inc.error

    def job_ids(self) -> list[str]:
        """Ids of every job the runtime accepted."""
        return [s.job_id for s in self.submitted if s.job_id is not None]

    def sims(self) -> dict[str, Any]:
        """``server_id -> ComfyUISim`` of every machine that ever became Ready."""
        out: dict[str, Any] = {}
        for bill in self.cloud.billing():
            with contextlib.suppress(KeyError):
                out[bill.server_id] = self.cloud.machine_sim(bill.server_id)
        return out

    def spent_micros(self) -> int:
        """What the simulated cloud has billed so far (running machines up to now)."""
        return sum(b.cost_micros for b in self.cloud.billing())

    def one_lease_micros(self) -> int:
        return self.settings.one_lease_micros()

    def now(self) -> float:
        """The wall time (seconds since the epoch) the runtime and the cloud see."""
        return self.wall.now()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start an incarnation on the log (a resume when the log is not empty).

        The runtime waits out rate limits and outages while it starts and reconciles, so
        the first start must work (``start_retries=0``, the default), except on a log with
        nothing at stake (no job, machine or launch intent: a fresh start waits out an
        outage for a minute only, by design), which may try once more. A harness of your
        own may allow ``settings.start_retries`` more, 30 simulated seconds apart, as an
        operator re-running ``--resume`` would; each failure is kept in
        :attr:`start_failures`."""
        if self.running:
            raise HarnessError("the runtime is already running")
        retries = self.settings.start_retries
        if retries == 0 and self._nothing_at_stake():
            retries = 1
        for attempt in range(retries + 1):
            if attempt:
                await self.advance(30.0)
            inc = await self._start_once()
            if inc.conjure is not None:
                return
            self.start_failures.append(repr(inc.error))
        raise HarnessError(
            f"the runtime did not start ({retries + 1} tries): {inc.error!r}"
            if inc.error is not None
            else "the runtime did not start within 3600 simulated s"
        )

    def _nothing_at_stake(self) -> bool:
        """The log has no job, machine or launch intent (what the runtime itself calls a
        fresh start, not a resume: see ``conjure._start``)."""
        state = st.apply_all(st.initial_state(), (r.event for r in self.log.records()))
        return not (state.jobs or state.machines or state.launch_requests)

    async def _start_once(self) -> _Incarnation:
        self.incarnations += 1
        inc = _Incarnation(self.incarnations, _Severable(self.cloud.http_transport()))
        self._current = inc
        # Starting may need simulated time (a resume reconciles with the cloud under its
        # rate limit): drive the clock until the runtime is up (or has died).
        self._nursery.start_soon(self._run_incarnation, inc)
        await self._advance_until(lambda: inc.conjure is not None or inc.done.is_set(), 3600.0)
        return inc

    async def _run_incarnation(self, inc: _Incarnation) -> None:
        # The journal stays open while the runtime dies: the crash cancels only the
        # runtime's scope. (Cancelling both at once would kill the journal's committer
        # while supervisors still await shielded appends of their stop events.) After the
        # crash the log refuses every append, so nothing the dying runtime says survives.
        try:
            async with (
                eventlog.open_journal(
                    self.log,
                    Event,
                    apply=st.apply,
                    initial=st.initial_state(),
                    clock=self.wall.now,
                ) as journal,
                journal.subscribe(max_buffer=math.inf) as records,
            ):
                inc.journal = journal
                inc.records = records
                with inc.scope:
                    async with open_conjure(
                        self.config,
                        journal=journal,
                        http=inc.transport,
                        ws_connect=inc.transport.ws_connect(self.cloud.ws_connect),
                        wall=self.wall,
                        out_dir=self.out_dir,
                        seed=self.settings.seed * 7919 + inc.number,
                        mode="simulated",
                        ids=self.ids,
                    ) as conjure:
                        inc.conjure = conjure
                        await trio.sleep_forever()
                self._collect(inc)
        except BaseException as exc:
            if inc.crashed:
                # The dying noises of a crashed incarnation (appends refused by the crashed
                # log, requests refused by the cut network) are what a kill -9 leaves
                # unsaid: dropped. A cancellation from outside still propagates.
                if isinstance(exc, BaseExceptionGroup):
                    cancelled, _ = exc.split(trio.Cancelled)
                    if cancelled is not None:
                        raise cancelled from None
                elif isinstance(exc, trio.Cancelled):
                    raise
                return
            # The runtime died on its own: keep why, for the invariants to report.
            inc.error = exc
            if isinstance(exc, trio.Cancelled):
                raise
        finally:
            inc.done.set()

    def _collect(self, inc: _Incarnation | None = None) -> None:
        """Move what the journal published (durable, acknowledged) into ``acked``."""
        inc = inc or self._current
        if inc is None or inc.records is None:
            return
        while True:
            try:
                record = inc.records.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self.acked.append(record)

    async def crash(self) -> int:
        """Kill the running incarnation abruptly; returns how many records were lost
        (appended but not durable). Nothing it does while dying reaches log or cloud."""
        inc = self._current
        if inc is None or inc.done.is_set():
            raise HarnessError("the runtime is not running: nothing to crash")
        # No checkpoint between these lines: no task of the runtime runs in between.
        self._collect(inc)
        lost = self.log.crash()
        inc.crashed = True
        inc.transport.cut = True
        inc.scope.cancel()
        self.crashes += 1
        # Shielded cleanups (stops with deadlines, retries) may sleep while unwinding:
        # let simulated time pass until the incarnation is gone.
        await self._advance_until(inc.done.is_set, _CRASH_GRACE)
        if not inc.done.is_set():
            raise HarnessError(
                f"incarnation {inc.number} did not unwind within {_CRASH_GRACE:g} simulated s"
            )
        self.log = self.log.reopen()
        return lost

    async def restart(self) -> int:
        """Crash, then resume from the log. Returns the records lost by the crash."""
        lost = await self.crash()
        await self.start()
        return lost

    async def shutdown(self) -> list[str]:
        """An orderly shutdown of the running incarnation (``Conjure.shutdown``)."""
        inc = self._current
        if inc is None or inc.conjure is None or inc.done.is_set():
            raise HarnessError("the runtime is not running: nothing to shut down")
        conjure = inc.conjure
        still = await self.drive(conjure.shutdown, bound=600.0)
        inc.crashed = True  # what follows is the end of the process, not a failure
        inc.scope.cancel()
        await self._advance_until(inc.done.is_set, _CRASH_GRACE)
        return still

    # ------------------------------------------------------------------ the clock

    async def settle(self) -> None:
        """Return once every other task is blocked and no worker thread is in flight:
        nothing more can happen until simulated time moves."""
        limiter = trio.to_thread.current_default_thread_limiter()
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if limiter.statistics().borrowed_tokens == 0:
                self._collect()
                return
            # A worker thread (a file write) is running: give it the GIL, then look again.
            time.sleep(0.0002)  # noqa: ASYNC251 - deliberate: no trio time may pass here
            await trio.lowlevel.checkpoint()

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (timed faults fire on the way)."""
        end = trio.current_time() + max(0.0, seconds)
        await self._advance_until(lambda: False, end - trio.current_time())

    async def _advance_until(self, done: Callable[[], bool], seconds: float) -> None:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            raise HarnessError("the harness needs trio.testing.MockClock (clock=MockClock())")
        end = trio.current_time() + seconds
        for _ in range(_MAX_JUMPS_PER_ADVANCE):
            await self.settle()
            await self._fire_due_faults()
            if done():
                return
            now = trio.current_time()
            if now >= end:
                return
            gap = trio.lowlevel.current_statistics().seconds_to_next_deadline
            if self._timed:
                gap = min(gap, max(0.0, self._timed[0][0] - now))
            step = min(gap, end - now)
            if step > 0:
                if clock.autojump_threshold != math.inf:
                    await trio.sleep(step)
                else:
                    clock.jump(step)
            else:
                await trio.lowlevel.checkpoint()
        raise HarnessError("the clock could not advance: tasks keep waking at the same time")

    async def run_until_quiet(self, max_seconds: float | None = None) -> bool:
        """Stop every fault, then let time run until every job is terminal and no machine
        runs (in the cloud or in the runtime's view). True if that happened in time."""
        await self.clear_faults()
        bound = self.settings.quiet_bound() if max_seconds is None else max_seconds
        await self._advance_until(self.quiet, bound)
        if not self.quiet():
            return False
        # Quiet the moment nothing runs in the cloud: give the runtime a few listings to
        # learn what went (a bill it corrects at the next listing), and check that it stays
        # quiet (nothing launched or adopted after that moment).
        await self.advance(3 * self.settings.poll_interval + 1.0)
        return self.quiet()

    def quiet(self) -> bool:
        """No active job, no launch in flight, no machine running anywhere."""
        if not self.running:
            return False
        state = self.state
        if any(j.status in st.ACTIVE_STATUSES for j in state.jobs.values()):
            return False
        if state.launch_requests:  # a launch in flight: its machine is not listed yet
            return False
        if any(
            m.kind == "runcomfy" and m.status not in st.MACHINE_GONE
            for m in state.machines.values()
        ):
            return False
        return not self.cloud.running()

    async def drive(self, fn: Callable[[], Awaitable[T]], *, bound: float = 3600.0) -> T:
        """Run ``fn()`` as a task and let simulated time pass until it returns (at most
        ``bound`` s): a command may need time (rate limits, retries) to complete."""
        box: list[outcome.Outcome[T]] = []

        async def call() -> None:
            box.append(await outcome.acapture(fn))

        self._nursery.start_soon(call)
        await self._advance_until(lambda: bool(box), bound)
        if not box:
            raise HarnessError(f"a command did not finish within {bound:g} simulated s")
        return box[0].unwrap()

    # ------------------------------------------------------------------ commands

    async def submit(self, request: JobRequest) -> str | None:
        """Submit a job; None if the runtime refused it at once (invalid workflow...)."""
        conjure = self.conjure
        job_id = f"job-{len(self.submitted) + 1:04d}"
        try:
            got = await self.drive(
                lambda: conjure.submit(
                    dict(request.workflow),
                    image=request.image,
                    prompt=request.prompt,
                    sets=request.sets,
                    priority=request.priority,
                    seed=request.seed,
                    job_id=job_id,
                    name=request.name,
                )
            )
        except ConjureError as exc:  # WorkflowError and UsageError among them
            self.submitted.append(Submitted(request, None, refused=str(exc)))
            await self.settle()
            return None
        self.submitted.append(Submitted(request, got))
        await self.settle()
        return got

    async def cancel(self, job_id: str) -> None:
        """Cancel a job (a no-op for a terminal one)."""
        self.cancelled.append(job_id)
        conjure = self.conjure
        await self.drive(lambda: conjure.cancel(job_id, reason="cancelled by the harness"))

    async def set_budget(self, usd: float | None) -> None:
        """Change the budget; the spend ceiling becomes max(limit, spent now) + one lease."""
        conjure = self.conjure
        await self.drive(lambda: conjure.set_budget(usd))
        self.budget_limit_micros = budget_micros(usd)
        self.budget_floor_micros = self.spent_micros()
        await self.settle()

    async def lose_machine(self, index: int) -> str | None:
        """Make the ``index``-th running machine (mod the count) vanish: 404, its ComfyUI
        gone, billing stopped. Returns its id (None if no machine runs)."""
        running = sorted(self.cloud.running())
        if not running:
            return None
        server_id = running[index % len(running)]
        vanish(self.cloud, server_id)
        self.lost.append(server_id)
        await self.settle()
        return server_id

    async def inject(self, fault: Fault) -> None:
        """Apply a fault now."""
        fault.apply(self)
        self.faults_applied.append(fault)
        await self.settle()

    def schedule(self, faults: list[TimedFault]) -> None:
        """Apply each fault once ``after`` simulated seconds have passed from now."""
        now = trio.current_time()
        for timed in faults:
            heapq.heappush(self._timed, (now + timed.after, next(self._tie), timed.fault))

    async def _fire_due_faults(self) -> None:
        now = trio.current_time()
        while self._timed and self._timed[0][0] <= now:
            _, _, fault = heapq.heappop(self._timed)
            fault.apply(self)
            self.faults_applied.append(fault)

    async def clear_faults(self) -> None:
        """Stop every fault: knobs back to zero, scheduled faults dropped."""
        self._timed.clear()
        set_cloud_faults(self.cloud, CloudFaults())
        await self.settle()

    # ------------------------------------------------------------------ artefacts

    def save_log(self, path: str | Path) -> Path:
        """Write the log (what survived so far, timestamps kept) to an event-log file that
        ``python -m conjure_actors replay PATH`` reads."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        records = list(self.log.records())
        with eventlog.open_writer(target, Event, sync="none") as writer:
            if records:
                writer.append_many([r.event for r in records], ts=[r.ts for r in records])
        return target


# ------------------------------------------------------------------------ cloud helpers


def vanish(cloud: SimulatedCloud, server_id: str) -> None:
    """Make a machine disappear (the RunComfy sim's ``vanished`` fate, applied now)."""
    cloud.runcomfy.vanish(server_id)


def set_cloud_faults(cloud: SimulatedCloud, faults: CloudFaults) -> None:
    """Swap the fault knobs of the RunComfy sim, every live ComfyUI and future machines."""
    cloud.set_faults(faults)


def live_comfyuis(cloud: SimulatedCloud) -> dict[str, Any]:
    """``server_id -> ComfyUISim`` of the machines whose ComfyUI currently answers."""
    return dict(sorted(cloud.live_machines().items()))


@contextlib.asynccontextmanager
async def open_harness(
    settings: HarnessSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    start: bool = True,
) -> AsyncIterator[Harness]:
    """A :class:`Harness` with its cloud running (and the runtime started unless
    ``start=False``). Needs ``trio.testing.MockClock`` as trio's clock; with autojump off
    the harness drives time itself (deterministic); with autojump on it sleeps.

    ``out_dir``: where jobs' outputs go (default: a temporary directory removed on exit).
    """
    settings = settings or HarnessSettings()
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise HarnessError("open_harness needs trio.run(..., clock=trio.testing.MockClock())")
    tmp = None
    if out_dir is None:
        tmp = tempfile.mkdtemp(prefix="conjure-harness-")
        out = Path(tmp)
    else:
        out = Path(out_dir)
    wall = TrioWallClock()
    try:
        async with (
            open_simulated_cloud(
                seed=settings.seed,
                faults=settings.faults,
                timings=settings.timings(),
                wall=wall.now,
            ) as cloud,
            trio.open_nursery() as nursery,
        ):
            harness = Harness(settings, cloud=cloud, wall=wall, nursery=nursery, out_dir=out)
            if start:
                await harness.start()
            try:
                yield harness
            finally:
                # Kill a runtime still running before the cloud goes (see
                # _run_incarnation for why the journal must outlive it).
                if harness.running:
                    with trio.CancelScope(shield=True):
                        await harness.crash()
                nursery.cancel_scope.cancel()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


_ = (ComfyFaults, RunComfyFaults)  # re-exported through conjure_actors.testing
