"""The assembly: ``open_conjure`` runs the four actors under supervision over one journal.

::

    async with open_conjure(config, journal=journal, http=transport, ws_connect=connect,
                            wall=wall, out_dir=out) as conjure:
        job_id = await conjure.submit(graph, image=png_bytes, prompt="a fox")
        await conjure.wait_until_idle()
        conjure.state                      # the live folded state (journal.state)
        await conjure.shutdown()           # ordered: stop launching, cancel, stop machines

The tree::

    root
    ├── cost        CostActor      (permanent)
    ├── machines    MachineActor   (permanent)
    ├── monitor     MonitorActor   (permanent)
    └── jobs        supervisor: one WorkflowActor per job (transient)

Start-up on a journal that already holds events is a *resume*: the state was replayed by
the journal; the MachineActor reconciles it with the cloud (one ``GET /servers``: adopt what
is alive, close what is gone, match dangling launch intents), then every job that is not
terminal gets its WorkflowActor again, which re-attaches to its submitted prompt or runs
anew. Leaving the block normally shuts down in order; leaving it by cancellation (a crash in
a test harness) does not: nothing more is journaled, as after a kill -9.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import math
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx
import trio

import conjure_actors
import eventlog
from conjure_actors.actors import files
from conjure_actors.actors.actors import CostActor, MachineActor, _Reconcile
from conjure_actors.actors.context import Context, Ids, Journal, PromptCheck, WsConnect
from conjure_actors.actors.cost import LaunchWaitsOver, Ledger
from conjure_actors.actors.job import JobSide, PoolPort, WorkflowActor
from conjure_actors.actors.messages import (
    ApproveLaunch,
    ApproveRenewal,
    CancelJob,
    InterruptJob,
    JobStallNoticed,
    LaunchApprovalUnused,
    Lease,
    LeaseFailedError,
    QueueJob,
    Reply,
    ResumeLaunching,
    SetBudget,
    StopAllMachines,
    StopLaunching,
    StopMachine,
)
from conjure_actors.actors.monitor import MonitorActor, MonitorSink
from conjure_actors.actors.pool import MachinePool, list_servers_patiently
from conjure_actors.clients.comfyui import ComfyUIClient, base_path, origin_of, probe_problem
from conjure_actors.clients.cookieless import CookielessClient
from conjure_actors.clients.errors import ClientError
from conjure_actors.clock import SystemWallClock, WallClock
from conjure_actors.config import Config
from conjure_actors.domain import decide, machines_policy
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.domain.cost_policy import StartBudget, budget_micros, start_budget
from conjure_actors.domain.errors import CommandRejectedError, DomainError
from conjure_actors.domain.prices import default_price_table
from conjure_actors.domain.workflow import Workflow, bindings_for, load_workflow
from conjure_actors.errgroups import describe, meaningful, single_error
from conjure_actors.errors import ConjureError, UsageError
from conjure_actors.runtime import (
    ActorRef,
    ActorSystem,
    EscalationError,
    Restart,
    SupervisorRef,
    open_actor_system,
    this_process,
)
from conjure_actors.runtime.errors import ActorStoppedError, MailboxFullError
from conjure_actors.runtime.policy import Intensity

SIM_WORKFLOW_VERSION = "wv-conjure-flux-mesh-1"
SHUTDOWN_DEADLINE = 60.0

ATTACH_PROBE_SECONDS: Final = 45.0
"""How long start-up waits for an attached ComfyUI's ``/system_stats``, its retries
included. A server that accepts connections and never answers is refused in this time, not
after every retry's full timeout (about 3 minutes), while nothing is at stake yet."""

JOBS_INTENSITY: Final = Intensity(max_restarts=sys.maxsize, period=1.0)
"""The job supervisor never gives up as a whole: each WorkflowActor counts its own crashes
and fails its job after ``job.MAX_JOB_CRASHES`` (restart intensity per job, not shared), so
one job's crash loop cannot stop the run."""

START_TOGETHER: Final = 64
"""At most this many queue answers are taken together by the starter (their jobs' actors
start in one scheduler pass: ``Conjure._run_starter``)."""

log = logging.getLogger("conjure_actors.actors.conjure")


def _disk_full_error(journal: Any) -> eventlog.DiskFullError:
    """The error of a journal whose hold a shutdown ended (the disk was full at its last
    try), as its held appends get it; the log's path when it is a file."""
    path = getattr(journal, "path", None) or "the event log"
    return eventlog.DiskFullError(path, f"{os.strerror(errno.ENOSPC)} (held)")


class _FatalError(Exception):
    """Internal: cancels the body of ``open_conjure`` after :meth:`Conjure.fail_run`."""


class RunStoppedError(ConjureError):
    """The run stopped on an error (an actor crash loop, a journal that refuses writes); its
    one line says what failed and which machines the shutdown stopped. ``failure``: what
    failed; ``stops``: the line's part that says what was stopped (``serve`` words its own
    line from them)."""

    def __init__(self, note: str, *, failure: BaseException | None = None, stops: str = "") -> None:
        super().__init__(note)
        self.failure = failure
        self.stops = stops


def make_comfyui_client(ctx: Context, server_id: str, url: Any) -> ComfyUIClient:
    """A ComfyUI client for a machine; its URL never appears in messages (``redact``)."""
    raw = url.reveal() if hasattr(url, "reveal") else str(url)
    kwargs: dict[str, Any] = {
        "http": ctx.http,
        "redact": f"server {server_id}",
        "ids": ctx.ids,
        # Its retry and reconnect jitter from the run's seeded generator: a seeded run (the
        # harness, a hypothesis example) replays the same waits, hence the same log.
        "rng": random.Random(ctx.rng.getrandbits(64)),
    }
    if ctx.ws_connect is not None:
        kwargs["ws_connect"] = ctx.ws_connect
    return ComfyUIClient(raw, **kwargs)


_WAITS_FOR_MACHINE: Final = frozenset({st.PENDING, st.QUEUED, st.RETRYING})
"""The statuses of a job that will ask the pool for a machine (a retrying one, after its
pause): while one waits, a launch the budget refused may still be asked for it."""


class Conjure:
    """A running runtime: submit, cancel, budget, wait, shut down. Made by open_conjure."""

    def __init__(
        self,
        ctx: Context,
        system: ActorSystem,
        *,
        cost: ActorRef,
        machines: ActorRef,
        pool: MachinePool,
        jobs: SupervisorRef,
    ) -> None:
        self.ctx = ctx
        self.system = system
        self.cost = cost
        self.machines = machines
        self.pool = pool
        self.jobs = jobs
        self._job_refs: dict[str, ActorRef] = {}
        # Only the starter task (_run_starter) spawns job actors, those it took together
        # at a time.
        self._starting: set[str] = set()  # the jobs whose actors are being spawned
        self._ended_starting: set[str] = set()  # ... those of them that ended in on_start
        # The cancels asked for jobs not ended yet (job -> reason): kept here, not only in
        # a mailbox, so a request never depends on which side of the hand-off the job is
        # (an actor that puts its job back into the queue drops its mail; _job_done
        # delivers the request again).
        self._cancels: dict[str, str] = {}
        # The log's unfinished jobs a resume left as they are (``hold_resumed``): no actor
        # runs them in this process, whatever status the log gives them.
        self.held: frozenset[str] = frozenset()
        # The starter's re-check and actor start, and the shutdown's split of the jobs into
        # "has an actor" and "queued": never interleaved.
        self._start_lock = trio.Lock()
        self._job_ended = trio.Event()  # set (and replaced) when a job's actor is done
        self._shut_down = False
        self._stop_why = "shutdown"  # the JobInterrupted reason once the run stops
        self._fatal: BaseException | None = None
        self._fatal_event = trio.Event()
        self.system_started = False
        """``SystemStarted`` is logged: from here on, whatever ends the run shuts it down."""
        self.stop_note: str | None = None
        """After a shutdown without a log (a full disk): what was stopped, in one line."""
        self.stop_stops = ""
        """:attr:`stop_note`'s part that says what was stopped."""
        self._stopped_unlogged: set[str] = set()
        """Machines a shutdown without a log stopped: the state, which never heard of it,
        still has them running; they are not among those that may still run."""
        self.launch_problem: str | None = None
        """Why launching stopped on launch failures (the jobs waiting then failed; the next
        job queued launches again), until it goes again: serve's health probe says it."""
        self.budget_problem: str | None = None
        """The budget's refusal of launches, in its notice's words, from the first refusal
        until a launch is granted, the budget is set again, or no job waits for a machine
        any more (the refused ones failed, or a running machine took them): serve's health
        probe says it (see :meth:`_budget_refusing`)."""
        # While it does: the jobs that wait for a machine, kept by a journal listener
        # (registered for the episode only), and that listener.
        self._refusal_waiters: set[str] | None = None
        self._refusal_listener = contextlib.ExitStack()
        self.run_id = ctx.ids().hex[:12]
        self.side = JobSide()
        """Per-job facts that are never logged (a prompt's ``extra_data``, previews)."""
        # Workflows whose WorkflowRegistered is being logged (sha256 -> set once it is): a
        # submission of one waits for it instead of logging it again.
        self._registering: dict[str, trio.Event] = {}
        # What the queue answered jobs waiting without an actor, for _run_starter to act on
        # in order (the pool tells without waiting; starting an actor waits).
        self._starts: tuple[
            trio.MemorySendChannel[tuple[str, Any]], trio.MemoryReceiveChannel[tuple[str, Any]]
        ] = trio.open_memory_channel(math.inf)
        # What callers that must not wait (the CostActor's budget rule) tell the
        # MachineActor, in order, delivered by _run_machine_tells (waiting while its
        # mailbox is full: a budget stop is never dropped, unlike a tell_nowait).
        self._machine_tells: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]] = (
            trio.open_memory_channel(math.inf)
        )

    @property
    def state(self) -> st.State:
        """The live folded state (``journal.state``)."""
        return self.ctx.state

    @property
    def journal(self) -> Journal:
        return self.ctx.journal

    # ------------------------------------------------------------------ jobs

    async def submit(
        self,
        workflow: Workflow | Mapping[str, Any] | str | os.PathLike[str],
        *,
        image: bytes | str | os.PathLike[str] | None = None,
        prompt: str | None = None,
        sets: Sequence[str] = (),
        priority: int = 0,
        seed: int | None = None,
        workflow_version: str | None = None,
        job_id: str | None = None,
        name: str | None = None,
        images: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
    ) -> str:
        """Register the workflow (once), log ``JobSubmitted`` and start its WorkflowActor
        (the options are :meth:`prepare_submission`'s)."""
        job_id, submitted = await self.prepare_submission(
            workflow,
            image=image,
            prompt=prompt,
            sets=sets,
            priority=priority,
            seed=seed,
            workflow_version=workflow_version,
            job_id=job_id,
            name=name,
            images=images,
        )
        if self._shut_down:
            await self.ctx.emit(submitted)
            return job_id
        # Submitted and queued in one append (the submitter writes both: a queued job has
        # no actor until a machine is leased to it). JobQueued is built here, not by
        # decide.queue_job, which checks a job the state holds: this one is in the same
        # append, and a fresh submission is pending (pending -> queued) by construction.
        await self.ctx.emit(submitted, ev.JobQueued(job_id=job_id, at=submitted.at))
        await self._queue(job_id)
        return job_id

    async def prepare_submission(
        self,
        workflow: Workflow | Mapping[str, Any] | str | os.PathLike[str],
        *,
        image: bytes | str | os.PathLike[str] | None = None,
        prompt: str | None = None,
        sets: Sequence[str] = (),
        priority: int = 0,
        seed: int | None = None,
        workflow_version: str | None = None,
        job_id: str | None = None,
        name: str | None = None,
        images: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
        checked: bool = False,
    ) -> tuple[str, ev.JobSubmitted]:
        """A submission decided but not logged: the inputs kept, the workflow registered
        (once), and the job id with its ``JobSubmitted``. The caller logs it (the job
        service, with its own facts, in one append) then calls :meth:`start_submitted`.

        ``images``: more input files than ``image``, by ``"NODE.INPUT"`` (kept like it, then
        uploaded to the machine before the prompt and bound there). ``checked``: the caller
        validated the graph already (the job service does, against its catalogue), so with
        nothing to bind (no prompt, sets or seed) it is not walked again here."""
        if self._shut_down:
            raise UsageError("the runtime is shutting down: no new jobs")
        wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow, shared=True)
        if name is not None:
            wf = Workflow(wf.graph, name)
        image_path, image_sha = await self._store_image(image)
        extra_inputs: dict[str, str] = {}
        for key, extra in (images or {}).items():
            kept, _ = await self._store_image(extra)
            if kept is not None:
                extra_inputs[key] = kept
        bindings = (
            {}
            if checked and prompt is None and not sets and seed is None
            else bindings_for(wf, prompt=prompt, sets=sets, seed=seed)
        )
        ctx = self.ctx
        sha = wf.sha256
        while (registering := self._registering.get(sha)) is not None:
            await registering.wait()  # another submission is logging it: its commit
        if sha not in ctx.state.workflows:
            self._registering[sha] = done = trio.Event()
            try:
                await ctx.emit(
                    ev.WorkflowRegistered(
                        sha256=sha, name=wf.name, graph_json=wf.canonical_json(), at=ctx.now()
                    )
                )
            finally:
                del self._registering[sha]
                done.set()
        job_id = job_id or f"job-{ctx.ids().hex[:12]}"
        version = workflow_version or self._default_version()
        submitted = decide.submit_job(
            ctx.state,
            job_id=job_id,
            workflow_sha256=sha,
            at=ctx.now(),
            bindings=bindings,
            image_path=image_path,
            image_sha256=image_sha,
            prompt=prompt,
            priority=priority,
            seed=seed,
            workflow_version=version,
            extra_inputs=extra_inputs,
        )
        return job_id, submitted

    async def start_submitted(self, job_id: str) -> None:
        """Queue a job whose ``JobSubmitted`` the caller logged: an entry in the pool's
        queue (and its ``JobQueued`` first, unless the caller logged that too, as the job
        service does); its actor starts once a machine is leased to it. After a shutdown
        began it stays as the log has it: the next start runs it."""
        if not self._shut_down:
            await self._queue(job_id)

    def _default_version(self) -> str | None:
        if self.ctx.mode == "comfyui":
            return None
        return self.ctx.config.runcomfy.workflow_version or (
            SIM_WORKFLOW_VERSION if self.ctx.mode == "simulated" else None
        )

    async def _store_image(
        self, image: bytes | str | os.PathLike[str] | None
    ) -> tuple[str | None, str | None]:
        """Keep a copy of the input under ``OUT/.inputs/<sha256>`` so a resume finds it."""
        if image is None:
            return None, None
        if isinstance(image, bytes | bytearray):
            data, suffix = bytes(image), ".png"
        else:
            path = Path(image)
            try:
                data = files.read_bytes(path)
            except OSError as exc:
                raise UsageError(f"cannot read image {path}: {exc.strerror or exc}") from None
            suffix = path.suffix or ".png"
        if not data:
            raise UsageError("the input image is empty")
        digest = hashlib.sha256(data).hexdigest()
        target = files.keep_input(self.ctx.inputs_dir, f"{digest}{suffix}", data)
        # Absolute: a resume from another directory finds it (issue 17).
        return str(target.resolve()), digest

    # A queued job is state, not a live actor (issue 16). Its JobSubmitted/JobQueued are in
    # the log and the fold; the pool's one waiting queue holds a small entry for it (priority,
    # order, deadline). A job requeued later (its machine lost, a retry, a resume) is put
    # back there by its actor, which then ends (a restarted incarnation waits itself, so its
    # crashes stay counted). Its WorkflowActor starts only when a machine is leased to it
    # (MachinePool.on_granted -> _granted), or briefly to write what ends it while queued:
    # its cancellation, its timeout, a refusal (budget, nothing can serve it). Only the run's
    # stop writes JobInterrupted for the queued jobs itself, in one append (Conjure already
    # wrote it for jobs whose actor did not answer), rather than start thousands of actors.

    async def _queue(self, job_id: str) -> None:
        """Put an active job the log says waits (pending, queued) into the pool's queue;
        any other status (running, retrying, interrupted) gets its actor from the starter."""
        job = self.state.jobs[job_id]
        if job.status not in st.RESUMABLE_STATUSES:
            return  # ended already (cancelled before it was started)
        if job.status not in (st.PENDING, st.QUEUED):
            self._starts[0].send_nowait((job_id, None))
            return
        if job.status == st.PENDING:
            await self.ctx.emit(decide.queue_job(self.state, job_id, at=self.ctx.now()))
        deadline = decide.job_deadline(
            self.state, job_id, total_timeout=self.ctx.config.retry.total_timeout
        )
        at = trio.current_time() + max(0.0, deadline - self.ctx.now())
        await self.machines.tell(QueueJob(job_id, job.workflow_version, job.priority, at))

    def _granted(self, job_id: str, lease: Lease) -> None:
        """From the pool: a machine is leased to a queued job (start its actor with it)."""
        self._starts[0].send_nowait((job_id, lease))

    def _refused(self, job_id: str, error: LeaseFailedError) -> None:
        """From the pool: a queued job cannot be served, or waited past its deadline."""
        if error.reason != "cancelled":  # withdrawn by whoever cancels it
            self._starts[0].send_nowait((job_id, error))

    async def _run_starter(self) -> None:
        """Start the job actors as the queue answers queued jobs (and for the resumed and
        the cancelled ones): the only task that starts a job's actor. A job has one actor:
        what comes for a job whose actor runs goes to it, or is given back. Once the run
        stops no actor starts: a queued job is interrupted (or cancelled, if that was asked)
        here. An error starting one job is logged; the others go on.

        What the queue answered meanwhile is taken together, in order, under one hold of
        the start lock: the jobs to start among it (up to :data:`START_TOGETHER`, each
        once) start together (``spawn_many``: their actors' ``on_start`` s in one scheduler
        pass). One after another, each start was a round trip through the job supervisor
        (five scheduler passes): ten machines freed together started their next jobs five
        passes apart, and never ran in step again (issue 16)."""
        port = PoolPort(self.machines, self._tell_machines)
        lock = self._start_lock
        starts = self._starts[1]
        async for item in starts:
            items = [item]
            while len(items) < START_TOGETHER:
                try:
                    items.append(starts.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):  # (the loop then ends)
                    break
            # The lock is nearly always free: taken without a schedule point, one task
            # step and one scheduler pass less on every job's way to its actor (issue 16).
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                await self._start_items(port, items)
            finally:
                lock.release()

    async def _start_items(self, port: PoolPort, items: list[tuple[str, Any]]) -> None:
        """The starter's step for what it took together (holding the start lock), in order:
        the jobs to start are gathered and started together, before anything that comes
        after them for the same job (or a ``_wait_starts`` mark)."""
        group: list[tuple[str, Lease | LeaseFailedError | CancelJob | None]] = []
        for job_id, first in items:
            if isinstance(first, trio.Event):  # see _wait_starts
                await self._start_jobs(port, group)
                first.set()
                continue
            if any(job_id == started for started, _ in group):
                await self._start_jobs(port, group)
            try:
                start, first = await self._check_one(port, job_id, first)
            except Exception as exc:  # not this run's end: the next job must still start
                await self._not_started(port, job_id, first, exc)
                continue
            if start:
                group.append((job_id, first))
        await self._start_jobs(port, group)

    async def _not_started(self, port: PoolPort, job_id: str, first: Any, exc: Exception) -> None:
        log.error("job %s: its actor did not start: %s", job_id, describe(exc))
        log.debug("job %s: start traceback", job_id, exc_info=True)
        if isinstance(first, Lease):
            await port.release(first.server_id, job_id)
        await self._fail_unstarted(job_id, exc)

    async def _run_machine_tells(self) -> None:
        """Deliver to the MachineActor what :meth:`_tell_machines` queued, in order,
        waiting while its mailbox is full (``open_conjure``'s guard runs it)."""
        async for msg in self._machine_tells[1]:
            try:
                await self.machines.tell(msg)
            except ActorStoppedError as exc:  # the run is ending: its shutdown stops them
                log.warning("%s not delivered to the pool: %s", type(msg).__name__, exc)

    def _tell_machines(self, *msgs: Any) -> None:
        """Queue ``msgs`` for the MachineActor without waiting and without losing them (a
        full mailbox delays them; ``tell_nowait`` would raise and drop them)."""
        for msg in msgs:
            self._machine_tells[0].send_nowait(msg)

    async def _fail_unstarted(self, job_id: str, exc: Exception) -> None:
        """A job whose actor could not start is failed here (it is in no queue any more:
        left active, it would wait forever and keep ``wait_until_idle`` from returning).
        Its actor never ran, so this is the one writer of that job's end. A job whose
        cancel was asked (its actor was started only to cancel it) ends cancelled."""
        job = self.state.jobs.get(job_id)
        if job is None or job.status not in st.RESUMABLE_STATUSES or job_id in self._job_refs:
            return  # it ended, or an actor runs it after all
        try:
            reason = self._cancels.get(job_id)
            ended = (
                decide.cancel_job(self.state, job_id, reason=reason, at=self.ctx.now())
                if reason is not None
                else decide.fail_job(
                    self.state,
                    job_id,
                    error_type="ActorStartFailed",
                    message=f"its actor did not start: {describe(exc)}; rerun it",
                    at=self.ctx.now(),
                )
            )
            await self.ctx.emit(ended)
        except (CommandRejectedError, eventlog.EventLogError) as err:  # the log says why elsewhere
            log.error("job %s: could not record that its actor did not start: %s", job_id, err)
            return
        self._cancels.pop(job_id, None)
        self._wake_waiters()

    async def _wait_starts(self) -> None:
        """Return once the starter has handled everything sent to it before this call."""
        handled = trio.Event()
        self._starts[0].send_nowait(("", handled))
        await handled.wait()

    async def _check_one(
        self, port: PoolPort, job_id: str, first: Lease | LeaseFailedError | CancelJob | None
    ) -> tuple[bool, Lease | LeaseFailedError | CancelJob | None]:
        """The starter's look at one answer (holding the start lock): whether the job's
        actor is to start, and with what (``first``, or a cancel asked meanwhile); False:
        dealt with here (its lease given back, its message delivered, the job ended)."""
        ref = self._job_refs.get(job_id)
        job = self.state.jobs.get(job_id)
        if job is None or job.status not in st.RESUMABLE_STATUSES:
            self._cancels.pop(job_id, None)
            if isinstance(first, Lease):
                await port.release(first.server_id, job_id)
            return False, first
        if ref is not None:
            if isinstance(first, Lease):
                await port.release(first.server_id, job_id)
            elif isinstance(first, CancelJob):
                with contextlib.suppress(ActorStoppedError):  # it ended: _job_done re-sends
                    await ref.tell(first)
            return False, first
        if self._shut_down:
            if isinstance(first, Lease):
                await port.release(first.server_id, job_id)
            await self._end_queued([job_id], self._stop_why)
            return False, first
        if job.status == st.INTERRUPTED and first is not None and not isinstance(first, CancelJob):
            if isinstance(first, Lease):  # interrupted while its lease was on its way
                await port.release(first.server_id, job_id)
            return False, first
        if job_id in self._cancels:  # cancelled while its machine was on its way: not run
            if isinstance(first, Lease):
                await port.release(first.server_id, job_id)
            first = CancelJob(job_id, self._cancels[job_id])
        return True, first

    async def _start_jobs(
        self, port: PoolPort, group: list[tuple[str, Lease | LeaseFailedError | CancelJob | None]]
    ) -> None:
        """Start the actors of ``group`` (jobs checked by ``_check_one``) together, then
        empty it."""
        if not group:
            return
        jobs, group[:] = list(group), []
        for job_id, _ in jobs:
            # An actor that put its job back into the queue may still be ending.
            await self.jobs.wait_child_ended(job_id)
        try:
            answers = await self._start_job(jobs)
        except Exception as exc:  # ActorStoppedError: the job supervisor is stopping
            answers = [exc] * len(jobs)
        for (job_id, first), answer in zip(jobs, answers, strict=True):
            if isinstance(answer, ActorStoppedError):
                log.info("job %s not started: %s", job_id, answer)
                if isinstance(first, Lease):
                    await port.release(first.server_id, job_id)
                continue
            if isinstance(answer, Exception):
                await self._not_started(port, job_id, first, answer)
                continue
            ref = self._job_refs.get(job_id)
            if self._shut_down and ref is not None:
                # The run's stop began while this actor started (the stop waits for the
                # lock): its interruption goes in now, ahead of what its first steps report.
                try:
                    ref.tell_nowait(InterruptJob(job_id, self._stop_why))
                except (ActorStoppedError, MailboxFullError) as exc:  # the stop tells it again
                    log.debug("job %s: interruption not delivered at its start: %s", job_id, exc)

    def _stopping(self) -> str | None:
        """For the job actors: the reason their jobs are interrupted once the stop began."""
        return self._stop_why if self._shut_down else None

    async def _end_queued(self, job_ids: Sequence[str], why: str) -> None:
        """The run stops: end the jobs that have no actor in one append, cancelled if a
        cancel was asked (an interrupted one too), else interrupted if still active
        (``run --resume`` takes them up)."""
        now = self.ctx.now()
        events: list[Any] = []
        for job_id in dict.fromkeys(job_ids):  # once each
            job = self.state.jobs.get(job_id)
            if job is None or job.status in st.TERMINAL_STATUSES:
                self._cancels.pop(job_id, None)
                continue  # it ended meanwhile
            reason = self._cancels.pop(job_id, None)
            if reason is not None:
                events.append(decide.cancel_job(self.state, job_id, reason=reason, at=now))
            elif job.status in st.ACTIVE_STATUSES:
                events.append(decide.interrupt_job(self.state, job_id, reason=why, at=now))
        if events:
            await self.ctx.emit(*events)
            self._wake_waiters()

    async def _start_job(
        self, jobs: list[tuple[str, Lease | LeaseFailedError | CancelJob | None]]
    ) -> list[ActorRef | Exception]:
        """Spawn the jobs' actors together (the starter only, holding the start lock); each
        one's ref, or why it did not start, in order."""
        port = PoolPort(self.machines, self._tell_machines)
        self._starting = {job_id for job_id, _ in jobs}
        self._ended_starting = set()
        try:
            answers = await self.jobs.spawn_many(
                [
                    (
                        job_id,
                        functools.partial(
                            WorkflowActor,
                            self.ctx,
                            job_id,
                            port,
                            self._job_done,
                            self.fail_run,
                            side=self.side,
                            first=first,
                            stopping=self._stopping,
                        ),
                    )
                    for job_id, first in jobs
                ],
                restart=Restart.TRANSIENT,
                shutdown_timeout=20.0,
            )
            ended = self._ended_starting
        finally:
            self._starting = set()
            self._ended_starting = set()
        for (job_id, _), ref in zip(jobs, answers, strict=True):
            # Not already done in its on_start (a job that ended).
            if isinstance(ref, ActorRef) and job_id not in ended:
                self._job_refs[job_id] = ref
        return answers

    def _job_done(self, job_id: str) -> None:
        """From a job's actor: it needs its actor no more (ended, or put back into the
        queue). A job still active got no answer to a cancel or an interruption that may
        have reached that actor too late: the starter delivers it again."""
        self._job_refs.pop(job_id, None)
        if job_id in self._starting:
            self._ended_starting.add(job_id)
        job = self.state.jobs.get(job_id)
        if job is None or job.status in st.TERMINAL_STATUSES:
            self._cancels.pop(job_id, None)
        elif job_id in self._cancels:
            # Active, or interrupted by the stop while the cancel waited behind it in the
            # actor's mailbox: the cancel still wins (interrupted -> cancelled).
            self._starts[0].send_nowait((job_id, CancelJob(job_id, self._cancels[job_id])))
        elif self._shut_down and job.status in st.ACTIVE_STATUSES:
            self._starts[0].send_nowait((job_id, None))  # the starter interrupts it
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """A job ended: every wait_until_idle looks at what was published (each waiter then
        waits on the fresh event)."""
        ended, self._job_ended = self._job_ended, trio.Event()
        ended.set()

    def _notify_stall(self, job_id: str) -> None:
        ref = self._job_refs.get(job_id)
        if ref is not None:
            try:
                ref.tell_nowait(JobStallNoticed(job_id))
            except (ActorStoppedError, MailboxFullError) as exc:  # it ended, or is busy
                log.debug("stall of %s not delivered: %s", job_id, exc)

    async def cancel(self, job_id: str, reason: str = "cancelled") -> None:
        """Cancel a job: dequeue or interrupt it; it ends with ``JobCancelled``."""
        job = self.state.jobs.get(job_id)
        if job is None:
            raise UsageError(f"no job {job_id}")
        if job.status in st.TERMINAL_STATUSES:
            return
        self._cancels.setdefault(job_id, reason)
        if self._shut_down:  # no actor starts any more: the job's own, or Conjure ends it
            async with self._start_lock:
                ref = self._job_refs.get(job_id)
                job = self.state.jobs.get(job_id)  # (None: it ended and expired meanwhile)
                if ref is None and job is not None and job.status not in st.TERMINAL_STATUSES:
                    await self.ctx.emit(
                        decide.cancel_job(self.state, job_id, reason=reason, at=self.ctx.now())
                    )
                    self._cancels.pop(job_id, None)
                    self._wake_waiters()
                    return
        ref = self._job_refs.get(job_id)
        if ref is None:  # queued: the starter starts its actor to cancel it (and dequeue it)
            self._starts[0].send_nowait((job_id, CancelJob(job_id, reason)))
            return
        try:
            await ref.tell(CancelJob(job_id, reason))
        except ActorStoppedError:  # it just ended: _job_done delivered it again if need be
            log.debug("job %s: its actor ended before the cancel", job_id)

    async def set_budget(self, usd: float | None) -> None:
        """Set or change the budget (``None``: unlimited)."""
        await self.cost.ask(SetBudget(usd), timeout=60)

    # ------------------------------------------------------------------ waiting

    def active_jobs(self) -> list[str]:
        return [j.job_id for j in self.state.jobs.values() if j.status in st.ACTIVE_STATUSES]

    def running_machines(self) -> list[str]:
        return [m for m in self.pool.still_running() if m not in self._stopped_unlogged]

    async def wait_until_idle(self, *, machines_stopped: bool = False) -> None:
        """Return once every job is terminal (and, if asked, every machine we pay for has
        stopped: idle shutdown or lease end)."""

        # The active jobs are counted once; each job's end then costs O(1) (a set of the
        # ones still active), so waiting on n jobs is O(n), not a rescan per job end. The
        # full check runs only once none seems active, and on each timeout.
        active = set(self.active_jobs())

        def idle() -> bool:
            if active:
                return False
            active.update(self.active_jobs())
            if active:
                return False
            return not (machines_stopped and self.running_machines())

        # Events are final classes: a type looked up in a set, not three isinstance chains
        # per published event (issue 16).
        job_enders = frozenset((ev.JobSucceeded, ev.JobFailed, ev.JobCancelled, ev.JobInterrupted))
        machine_enders = frozenset((ev.MachineStopped, ev.MachineLost, ev.SystemStopped))
        submitted = ev.JobSubmitted

        def ends(event: Any) -> bool:
            """Take one published event into account: may the run be idle now?"""
            kind = type(event)
            if kind is submitted:
                active.add(event.job_id)
            elif kind in job_enders:
                job = self.state.jobs.get(event.job_id)
                if job is None or job.status not in st.ACTIVE_STATUSES:
                    active.discard(event.job_id)
                    return not active
            elif kind in machine_enders:
                return not active
            return False

        # The records are taken into account by a journal listener, in the committing task
        # as each batch is applied: no channel in between (a send per record, then a
        # receive per record in the waiter: ~70 Python bytecodes per event of the run,
        # issue 16). While jobs are active the waiter wakes when a job's actor is done (its
        # terminal event is published by then), not for every record (a task switch per
        # event); once none is, it wakes when a record may make the run idle (machines
        # stopping). A job that ends with no actor of ours is seen at the next timeout's
        # full check at the latest.
        seen = _IdleSeen()

        # Most records are of none of these types: one set lookup each, not a call of ends.
        counted = job_enders | machine_enders | {submitted}

        def on_records(batch: list[Any]) -> None:
            for record in batch:
                event = record.event
                if type(event) in counted and ends(event):
                    seen.done = True
            if seen.done:
                seen.wake.set()

        def on_end(error: Exception) -> None:
            # The journal failed or closed: no record will make the run idle any more.
            seen.error = error
            seen.done = True
            seen.wake.set()

        with self.ctx.journal.listen(on_records, on_end=on_end):
            while not idle():
                with trio.move_on_after(max(1.0, self.ctx.config.pool.poll_interval)):
                    while not seen.done:
                        if active:
                            await self._job_ended.wait()
                        else:
                            await seen.wake.wait()
                    if seen.error is not None:
                        raise seen.error
                    seen.done = False
                    if seen.wake.is_set():
                        seen.wake = trio.Event()
                    continue
                active.clear()  # a timeout: the next check is a full one

    # ------------------------------------------------------------------ stop

    def fail_run(self, error: BaseException) -> None:
        """Something the run cannot go on without failed (the journal refused an event):
        ``open_conjure`` ends the run with the ordered shutdown."""
        if self._fatal is None:
            self._fatal = error
        self._fatal_event.set()

    async def _wait_fatal(self) -> None:
        """``open_conjure``'s guard: a fatal failure cancels the block (the shutdown then
        stops everything and raises :class:`RunStoppedError` with its one line)."""
        await self._fatal_event.wait()
        raise _FatalError from self._fatal

    async def shutdown(self, reason: str = "done") -> list[str]:
        """Ordered stop: no more launches, every unfinished job ``interrupted`` (``run
        --resume`` finishes it), every machine stopped (shielded, with a deadline),
        ``SystemStopped``. Returns machines that may still run (and launches still
        without an answer, which may have started one). If the journal refuses writes (a
        full disk), the machines are stopped anyway, without logging, and
        :attr:`stop_note` says so in one line."""
        if self._shut_down:
            return self.running_machines() + self.pool.launches_unanswered()
        self._shut_down = True
        self._stop_why = "shutdown" if reason == "done" else reason
        # A journal holding a full disk (serve's) holds no more: the stop's events would
        # wait for the disk while the machines bill; they fail at once instead, and the
        # machines are stopped without a log (below), whoever called this. A hold in
        # progress means the disk refused the log at its last try (at most 5 s ago): the
        # ordered stop would wait for answers that a refused event never gives (the pool's
        # MachineStopping, a supervisor's record: 25 s to 10 min while the machines bill),
        # so the machines are stopped without a log at once.
        held = getattr(self.ctx.journal, "held", None) is not None  # a file journal's
        self.ctx.journal.stop_holding()
        if held and self._fatal is None:
            self.fail_run(_disk_full_error(self.ctx.journal))
        # The stops may wait out a rate limit for up to ``pool.stop_patience``.
        patience = SHUTDOWN_DEADLINE + self.ctx.config.pool.stop_patience
        with trio.CancelScope(shield=True), trio.move_on_after(patience):
            if self._fatal is None:
                try:
                    await self._ordered_stop(reason)
                except eventlog.LogClosedError:
                    raise  # the journal is closed: the process is going away
                except eventlog.EventLogError as exc:
                    self.fail_run(exc)
                except ActorStoppedError as exc:
                    # The MachineActor is gone (its supervisor gave up): stop from here.
                    log.warning("shutdown without the machine actor: %s", exc)
                    await stop_machines_directly(self.ctx, reason)
                    await self.ctx.emit(ev.SystemStopped(reason=reason, at=self.ctx.now()))
            if self._fatal is not None:
                await self._stop_without_log(reason)
        return self.running_machines() + self.pool.launches_unanswered()

    async def _ordered_stop(self, reason: str) -> None:
        await self.machines.tell(StopLaunching(reason))
        why = "shutdown" if reason == "done" else reason
        # Under the start lock: no actor is being started while the jobs are split into
        # "has an actor" (told to stop) and "queued" (ended here); none starts after it
        # (_shut_down is set). An actor that puts its job back into the queue meanwhile
        # drops the interruption; its _job_done has the starter end the job instead.
        async with self._start_lock:
            queued: list[str] = []
            for job_id in self.active_jobs():
                ref = self._job_refs.get(job_id)
                if ref is None:
                    queued.append(job_id)
                    continue
                try:
                    await ref.tell(InterruptJob(job_id, why))
                except ActorStoppedError:
                    log.debug("job %s ended before its interruption", job_id)
            await self._end_queued(queued, why)  # waiting without an actor: in one append
        with trio.move_on_after(25):
            await self.wait_until_idle()
        async with self._start_lock:
            # Actors that did not answer in time, and the cancels that reached an actor
            # after its interruption: in one append (decided on the state right before it).
            await self._end_queued([*self.active_jobs(), *self._cancels], why)
        reply: Reply[list[str]] = Reply()
        await self.machines.tell(StopAllMachines(reason, reply))
        with trio.move_on_after(self.ctx.config.pool.stop_patience + 15):
            await reply.wait()
        if self._fatal is not None:
            return
        await self.cost.ask(_accrue(), timeout=10)
        await self.ctx.emit(ev.SystemStopped(reason=reason, at=self.ctx.now()))

    def stop_error(self) -> RunStoppedError:
        """The error a shutdown without a log ends the run with (:attr:`stop_note`)."""
        return RunStoppedError(self.stop_note or "", failure=self._fatal, stops=self.stop_stops)

    async def _stop_without_log(self, reason: str) -> None:
        """The journal refuses writes: stop every machine anyway, then say so in one line."""
        stopped, failed = await stop_machines_directly(self.ctx, reason)
        self._stopped_unlogged.update(stopped)
        what = describe(self._fatal) if self._fatal is not None else "unknown error"
        parts = [f"the event log refused writes ({what})"]
        parts.append(
            f"stopped machines {', '.join(stopped)} without logging it"
            if stopped
            else "no machine was running"
        )
        if failed:
            parts.append(f"could not stop {', '.join(failed)}")
        if self.state.launch_requests:
            parts.append(f"{len(self.state.launch_requests)} launch(es) in flight")
        self.stop_note = "; ".join(parts)
        self.stop_stops = "; ".join(parts[1:])
        log.info("%s", self.stop_note)  # the same line leaves as RunStoppedError

    async def _on_budget_exceeded(self, reason: str) -> None:
        """From the CostActor: stop launching, cancel the jobs, stop the machines (tells
        only: the CostActor must not wait on the MachineActor; the pool's through
        :meth:`_tell_machines`, which never drops them)."""
        self._tell_machines(StopLaunching(reason))
        for job_id in self.active_jobs():
            self._cancels.setdefault(job_id, reason)
            ref = self._job_refs.get(job_id)
            if ref is not None:
                try:
                    ref.tell_nowait(CancelJob(job_id, reason))
                    continue
                except ActorStoppedError:  # it just ended: _job_done re-sends if need be
                    continue
                except MailboxFullError:  # busy: the starter delivers it, waiting
                    pass
            # Queued (or a busy actor): through the starter, which starts an actor to
            # cancel it, or after the run's stop began, ends it cancelled itself.
            self._starts[0].send_nowait((job_id, CancelJob(job_id, self._cancels[job_id])))
        self._tell_machines(StopAllMachines(reason))

    # The budget's refusal of launches is an episode: from its first refusal (said once on
    # the terminal by its BudgetLimitReached) until a launch is granted, the budget is set
    # again, or no job waits for a machine any more. The CostActor knows the first two; the
    # last is read from the log: the jobs waiting when it began, and those queued since,
    # are followed by a journal listener (one look per job event, only during an episode)
    # until none is left waiting. Its end is said once too, and serve's health is ok again.

    def _budget_refusing(self, line: str | None, why: str) -> None:
        """From the CostActor: the budget refuses launches (``line``: its notice's words),
        or no longer (``None``, ``why``)."""
        if line is None:
            self._end_refusal(why)
            return
        self.budget_problem = line
        if self._refusal_waiters is not None:
            return
        self._refusal_waiters = {
            j.job_id for j in self.state.jobs.values() if j.status in _WAITS_FOR_MACHINE
        }
        try:
            self._refusal_listener.enter_context(self.journal.listen(self._on_refusal_records))
        except eventlog.EventLogError as exc:  # the run is ending: nothing more is decided
            log.debug("budget: the refusal's end is not watched: %s", exc)

    def _end_refusal(self, why: str) -> None:
        self._refusal_waiters = None
        self._refusal_listener.close()
        was, self.budget_problem = self.budget_problem, None
        # Not once the budget is exceeded: that was said, and so is its lifting.
        if was is not None and not self.state.budget.exceeded:
            log.warning("budget: %s", why)

    def _on_refusal_records(self, records: list[Any]) -> None:
        """Journal listener, during an episode of refused launches: follow the jobs that
        wait for a machine; once none is left, the episode is over."""
        waiters = self._refusal_waiters
        if waiters is None:
            return
        jobs = self.state.jobs
        for record in records:
            job_id = getattr(record.event, "job_id", None)
            if job_id is None:
                continue
            job = jobs.get(job_id)
            if job is not None and job.status in _WAITS_FOR_MACHINE:
                waiters.add(job_id)
            else:
                waiters.discard(job_id)
        if waiters:
            return
        # Not "no longer refused": the budget would refuse the next launch all the same.
        self._end_refusal(
            "no job waits on a refused launch any more; a new job's launch is judged against"
            " the budget again"
        )
        # The next refusal is news again (said, health degraded), not one told before.
        try:
            self.cost.tell_nowait(LaunchWaitsOver())
        except (ActorStoppedError, MailboxFullError) as exc:  # the run ends, or next time
            log.debug("budget: LaunchWaitsOver not told: %s", exc)

    def _on_budget_lifted(self, reason: str) -> None:
        """From the CostActor: the budget was raised past the spend after it stopped every
        machine (``serve`` runs on): new jobs get machines again, unless the run is
        stopping (a tell only, as above)."""
        if not self._shut_down:  # after the stop it lifts, in order
            self._tell_machines(ResumeLaunching(reason))


def _accrue() -> Any:
    from conjure_actors.actors.messages import AccrueNow

    return AccrueNow()


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).absolute()


@asynccontextmanager
async def open_conjure(
    config: Config,
    *,
    journal: Journal,
    http: httpx.AsyncBaseTransport | httpx.AsyncClient | None = None,
    ws_connect: WsConnect | None = None,
    wall: WallClock | None = None,
    out_dir: str | os.PathLike[str] = "out",
    monitor: MonitorSink | None = None,
    seed: int | None = None,
    mode: str | None = None,
    attach: Mapping[str, Any] | None = None,
    ids: Ids = uuid.uuid4,
    prompt_check: PromptCheck | None = None,
    hold_resumed: Callable[[], bool] | None = None,
    fresh_cloud: bool = False,
    checks: trio.CancelScope | None = None,
    not_resumable: Callable[[st.State, st.Job], str | None] | None = None,
) -> AsyncIterator[Conjure]:
    """Run the runtime over ``journal`` (an ``eventlog.Journal`` opened with the domain's
    ``apply``). ``http``: a transport (the simulated cloud's) or a ready client.
    ``attach``: ``{name: url}`` of machines we do not pay for (dev machine).
    ``ids``: makes every new id (``uuid.uuid4``; the test harness passes a seeded one).
    ``prompt_check``: checks each prompt before its POST (a RunComfy version's catalogue).
    ``hold_resumed``: asked on a resume, after the reconcile, before each unfinished job is
    started again: True leaves it (and the rest) as the log has it, unfinished, for a later
    ``--resume``; the caller's way to say "stopping" (a signal during start-up) before a
    resumed job launches a machine that the stop would only stop again (a paid start).
    ``not_resumable``: asked on a resume for each unfinished job: why it cannot run again (it
    fails with that, ``NotResumable``, before anything is launched for it), or None.
    ``fresh_cloud``: the cloud began with this process and ends with it (the embedded
    simulated one): the launch intents the log holds went to a cloud that is gone, so they
    are closed at the reconcile instead of after ``NOT_VISIBLE_GRACE``. Never for RunComfy.
    ``checks``: the scope of start-up's checks (RunComfy's credentials, which an outage makes
    it retry for up to a minute on a fresh start; the attached ComfyUIs), before the log says
    the run started: the caller cancels it to stop a start-up that has nothing to stop yet,
    and entering the block then raises :class:`StartUpStopped`.

    Whatever ends the block runs the ordered shutdown (:meth:`Conjure.shutdown`): a normal
    exit, an exception in the block or in the runtime (a job's failure is only that job's),
    a journal that refuses writes. If the actor system itself fails, the machines are
    stopped from here. Only a pure cancellation (a test's simulated kill -9) skips it.
    """
    wall = wall or SystemWallClock()
    # Absolute: the outputs' paths in the log must not depend on the directory a later
    # resume or replay runs in (a resume reads its folder back absolute: QA H1).
    out = _absolute(out_dir)  # one getcwd at start-up
    mode = mode or config.mode
    own_client = not isinstance(http, httpx.AsyncClient)
    client = (
        http
        if isinstance(http, httpx.AsyncClient)
        else CookielessClient(transport=http, timeout=httpx.Timeout(60.0))
    )
    try:
        table = default_price_table(config.runcomfy.plan)
        rc = None
        if mode in ("runcomfy", "simulated"):
            from conjure_actors.clients.runcomfy import RunComfyClient

            rc = RunComfyClient(
                config.runcomfy.base_url,
                config.runcomfy.user_id,
                config.runcomfy.api_token.reveal(),
                http=client,
                rng=random.Random(seed),
                wall=wall.now,  # RunComfy's times in the clock the runtime reads
            )
        ctx = Context(
            config=config,
            journal=journal,
            wall=wall,
            table=table,
            out_dir=out,
            http=client,
            ws_connect=ws_connect,
            runcomfy=rc,
            rng=random.Random(seed),
            inputs_dir=out / ".inputs",
            mode=mode,
            ids=ids,
            prompt_check=prompt_check,
        )
        conjure: Conjure | None = None
        try:
            async with open_actor_system(journal=journal, clock=wall, rng=seed) as system:
                conjure = await _assemble(ctx, system, monitor, fresh_cloud=fresh_cloud)
                with single_error():
                    async with trio.open_nursery() as guard:
                        guard.start_soon(conjure._wait_fatal)
                        guard.start_soon(conjure._run_starter)
                        guard.start_soon(conjure._run_machine_tells)
                        try:
                            await _start(conjure, attach or {}, hold_resumed, checks, not_resumable)
                            yield conjure
                        except BaseException as exc:
                            if meaningful(exc) is None and conjure._fatal is None:
                                raise  # a pure cancellation: as after a kill -9
                            if not conjure.system_started:
                                raise  # the run never began (a usage error): nothing to stop
                            await conjure.shutdown(_reason(exc))
                            if conjure.stop_note is not None:
                                raise conjure.stop_error() from exc
                            raise
                        await conjure.shutdown()
                        guard.cancel_scope.cancel()
                if conjure.stop_note is not None:
                    raise conjure.stop_error()
        except BaseException as exc:
            # The actor system itself failed (a supervisor gave up): its actors are gone,
            # so the machines are stopped from here, without the MachineActor.
            leaf = meaningful(exc)
            if leaf is None or isinstance(leaf, eventlog.LogClosedError):
                raise  # a cancellation, or the process is ending (its journal closed)
            if conjure is not None and conjure.stop_note is not None:
                # The shutdown ran without a log: its line says it all (the runtime's own
                # last records failed to journal too, for the same reason).
                raise conjure.stop_error() from exc
            if conjure is not None and conjure.system_started and not conjure._shut_down:
                raise await _stop_after_failure(ctx, exc) from exc
            # The ordered shutdown ran (or the run never began): the error, as itself.
            raise leaf from leaf.__cause__
    finally:
        if own_client:
            with trio.CancelScope(shield=True):
                await client.aclose()


def _reason(exc: BaseException) -> str:
    """The ``SystemStopped`` reason for a run that ends on ``exc``."""
    leaf = meaningful(exc)
    if isinstance(leaf, KeyboardInterrupt):
        return "interrupted"
    return "error" if leaf is not None else "cancelled"


async def _assemble(
    ctx: Context, system: Any, monitor: MonitorSink | None, *, fresh_cloud: bool = False
) -> Conjure:
    """Spawn the actors (monitor, cost, machines, the job supervisor) and the Conjure."""
    holder: dict[str, Conjure] = {}

    async def on_exceeded(reason: str) -> None:
        await holder["c"]._on_budget_exceeded(reason)

    async def on_lifted(reason: str) -> None:
        holder["c"]._on_budget_lifted(reason)

    def notify_stall(job_id: str) -> None:
        if "c" in holder:
            holder["c"]._notify_stall(job_id)

    await system.spawn(functools.partial(MonitorActor, ctx, monitor, notify_stall), name="monitor")

    def on_refusing(line: str | None, why: str) -> None:
        if "c" in holder:
            holder["c"]._budget_refusing(line, why)

    async def on_over_budget(server_ids: list[str]) -> None:
        # Told, not asked: the CostActor must not wait on the MachineActor.
        holder["c"]._tell_machines(*(StopMachine(sid, "budget") for sid in server_ids))

    ledger = Ledger(
        ctx,
        on_exceeded=on_exceeded,
        on_lifted=on_lifted,
        on_refusing=on_refusing,
        on_over_budget=on_over_budget,
    )
    cost_ref = await system.spawn(functools.partial(CostActor, ledger), name="cost")

    async def approve_launch(job_id: str, server_type: str) -> bool:
        return bool(await cost_ref.ask(ApproveLaunch(job_id, server_type), timeout=60))

    async def approve_renewal(server_id: str, seconds: float) -> float | None:
        granted = await cost_ref.ask(ApproveRenewal(server_id, seconds), timeout=60)
        return None if granted is None else float(granted)

    async def approval_unused(job_id: str) -> None:
        await cost_ref.tell(LaunchApprovalUnused(job_id))

    pool = MachinePool(
        ctx,
        approve_launch=approve_launch,
        approve_renewal=approve_renewal,
        approval_unused=approval_unused,
        make_client=functools.partial(make_comfyui_client, ctx),
        on_granted=lambda job_id, lease: holder["c"]._granted(job_id, lease),
        on_refused=lambda job_id, error: holder["c"]._refused(job_id, error),
        on_launching=lambda problem: setattr(holder["c"], "launch_problem", problem),
        fresh_cloud=fresh_cloud and ctx.mode == "simulated",
    )
    machines_ref = await system.spawn(
        functools.partial(MachineActor, pool), name="machines", shutdown_timeout=45.0
    )
    # Job actors are background work: while a service's requests are in flight they wait
    # (bounded) at the system's gate before each message; nothing a request awaits is one.
    jobs_sup = await system.spawn_supervisor("jobs", intensity=JOBS_INTENSITY, background=True)
    conjure = Conjure(ctx, system, cost=cost_ref, machines=machines_ref, pool=pool, jobs=jobs_sup)
    holder["c"] = conjure
    return conjure


async def stop_machines_directly(ctx: Context, reason: str) -> tuple[list[str], list[str]]:
    """The last resort, when the MachineActor cannot (the actor system failed, or the log
    refuses writes): stop every RunComfy machine the state says runs, straight through the
    RunComfy client (shielded, bounded). ``MachineStopping``/``MachineStopped`` are logged
    while the journal takes them. Returns (stopped, could not stop)."""
    stopped: list[str] = []
    failed: list[str] = []
    runcomfy = ctx.runcomfy
    if runcomfy is None:
        return stopped, failed
    logging_ok = True

    async def emit(event_of: Callable[[], Any]) -> None:
        nonlocal logging_ok
        if not logging_ok:
            return
        try:
            await ctx.emit(event_of())
        except (eventlog.EventLogError, DomainError) as exc:
            logging_ok = False
            log.info("shutdown: not logged: %s", describe(exc))

    async def stop_one(sid: str) -> None:
        m = ctx.state.machines[sid]
        if m.status != st.M_STOPPING:
            await emit(lambda: decide.stop_machine(ctx.state, sid, reason=reason, at=ctx.now()))
        try:
            server = await runcomfy.stop(sid, missing_ok=True)
        except ClientError as exc:
            log.warning("shutdown: stopping %s failed: %s", sid, exc)
            failed.append(sid)
            return
        stopped.append(sid)
        now = ctx.now()
        # Billed as the MachineActor bills a stop: from the server's own Ready time (its
        # final record); gone before the DELETE (404): up to now, or its lease's end.
        await emit(
            lambda: machines_policy.bill_after_delete(
                ctx.state,
                sid,
                found=server is not None,
                answered_at=now,
                server_ready_at=server.service_ready_at if server is not None else None,
                table=ctx.table,
                at=now,
            )
        )

    running = [m.server_id for m in machines_policy.paid_machines(ctx.state)]
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_DEADLINE):
        async with trio.open_nursery() as nursery:
            for sid in running:
                nursery.start_soon(stop_one, sid)
    return sorted(stopped), sorted(failed)


async def _stop_after_failure(ctx: Context, exc: BaseException) -> RunStoppedError:
    """The actor system failed: stop the machines, log ``SystemStopped`` if the log still
    takes it; returns the error whose one line says what failed and what was stopped."""
    stopped, failed = await stop_machines_directly(ctx, "error")
    with trio.CancelScope(shield=True):
        try:
            await ctx.emit(ev.SystemStopped(reason="error", at=ctx.now()))
        except eventlog.EventLogError as log_exc:
            log.info("shutdown: SystemStopped not logged: %s", describe(log_exc))
    leaf = meaningful(exc) or exc
    what = describe(leaf)
    if leaf.__cause__ is not None and not isinstance(leaf, EscalationError):
        # (A supervisor that gave up names the crash in its own message.)
        what += f" (last error: {describe(leaf.__cause__)})"
    parts = [f"the run stopped: {what}"]
    if stopped:
        parts.append(f"stopped machines {', '.join(stopped)}")
    if failed:
        parts.append(f"could not stop {', '.join(failed)}")
    if ctx.runcomfy is not None and ctx.state.launch_requests:
        n = len(ctx.state.launch_requests)
        parts.append(
            f"{n} launch{'es' if n > 1 else ''} without answer may have started a machine"
            " (--resume stops it)"
        )
    note = "; ".join(parts)
    log.info("%s", note)  # the same line leaves as RunStoppedError
    return RunStoppedError(note, failure=leaf, stops="; ".join(parts[1:]))


async def probe_comfyui(client: ComfyUIClient, name: str, url: Any) -> dict[str, Any]:
    """An attached ComfyUI's ``/system_stats`` (the health check, its retries included,
    within ATTACH_PROBE_SECONDS), or the UsageError that says why it failed (``status
    --comfyui-url`` asks the user's ComfyUI through it too, in the same words)."""
    problem = ""
    with trio.move_on_after(ATTACH_PROBE_SECONDS) as probe:
        try:
            return await client.system_stats()
        except Exception as exc:
            problem = probe_problem(exc)
    if probe.cancelled_caught:
        problem = f"no answer within {ATTACH_PROBE_SECONDS:g} s"
    raise probe_refusal(name, url, problem)


def probe_refusal(name: str, url: Any, problem: str, route: str = "/system_stats") -> UsageError:
    """Why asking an attached ComfyUI ``GET route`` failed (``problem``: probe_problem's
    words), in one line that says what to check."""
    # The user's URL: its origin and path prefix (its query is refused before); a dev
    # machine's URL is a secret: its name only.
    what, asked = f"dev machine {name}", f"GET {route}"
    if name == "comfyui":
        what = f"the ComfyUI at {origin_of(str(url))}"
        asked = f"GET {base_path(str(url))}{route}"
    # It answered (an HTTP error, or a page that is not ComfyUI's, such as a proxy's sign-in
    # page): the user's URL is the suspect, not whether it runs. A dev machine's URL is
    # RunComfy's, not the user's: what to check is whether it is still up.
    answered = problem.startswith(("HTTP ", "an answer "))
    said = (
        f"answered {asked} with {problem}" if answered else f"does not answer {asked} ({problem})"
    )
    if not answered:
        check = "is it running?"
    elif name == "comfyui":
        check = "is the URL its base URL (with the path a reverse proxy serves it under, if any)?"
    else:
        check = "is it still up? (`python -m conjure_actors machine status` says)"
    return UsageError(f"{what} {said}: {check}")


async def _start_budget(conjure: Conjure) -> None:
    """The start's budget (``--budget``, ``budget.usd``) against the log's: kept, set or
    replaced by :func:`~conjure_actors.domain.cost_policy.start_budget`'s rule, in one line
    when the two differ."""
    ctx = conjure.ctx
    budget = ctx.config.budget.usd
    limit = budget_micros(budget)
    logged = ctx.state.budget.limit_micros
    started = ctx.state.budget.start_micros
    rule = start_budget(ctx.state.budget, limit)
    if rule is StartBudget.NONE or limit is None:
        return
    if rule is StartBudget.KEEP:
        # A restart (serve's supervisor) passes the --budget it always passes: a budget
        # set at run time since (PUT /api/conjure/budget) is the operator's, and stays.
        if limit != logged:
            log.warning(
                "budget: keeping %s set at run time (PUT /api/conjure/budget); --budget %s"
                " is what this log was started with: pass a different --budget to replace it",
                "no limit, as" if logged is None else f"the {_usd(logged)}",
                _usd(limit, sign=""),
            )
        return
    if logged is not None and limit != logged:
        if started is None:
            # A log that does not say which budget its last start had: the rule of its
            # time, the configured budget wins. Said, with the way to keep the log's.
            log.warning(
                "budget: --budget %s replaces the %s budget this log ends with (set at run"
                " time, e.g. PUT /api/conjure/budget, or by an earlier start); start"
                " without --budget to keep the log's",
                _usd(limit, sign=""),
                _usd(logged),
            )
        else:
            log.warning(
                "budget: --budget %s replaces the %s budget this log ends with (its last"
                " start had --budget %s); start without --budget to keep the log's",
                _usd(limit, sign=""),
                _usd(logged),
                _usd(started, sign=""),
            )
    await conjure.cost.ask(SetBudget(budget, from_start=True), timeout=60)


def _usd(micros: int, *, sign: str = "$") -> str:
    """``30000`` -> ``$0.03``: a budget as one would type it (cents, more places if any)."""
    amount = Decimal(micros) / 1_000_000
    cents = amount.quantize(Decimal("0.01"))
    return sign + format(cents if cents == amount else amount.normalize(), "f")


class StartUpStopped(Exception):
    """Start-up's checks were stopped (``open_conjure(checks=...)`` cancelled) before the
    log said the run started: nothing was launched, nothing is to stop."""


async def _start(
    conjure: Conjure,
    attach: Mapping[str, Any],
    hold_resumed: Callable[[], bool] | None = None,
    checks: trio.CancelScope | None = None,
    not_resumable: Callable[[st.State, st.Job], str | None] | None = None,
) -> None:
    """Check what the run depends on (credentials, attached ComfyUIs: in ``checks``), then
    ``SystemStarted``, attach, budget, reconcile and resume jobs (unless ``hold_resumed``
    says the run is stopping: see :func:`open_conjure`)."""
    ctx = conjure.ctx
    state = ctx.state
    # Any earlier run: a log cut short may have lost its job and launch records, not the
    # machine that launch started (the reconcile's listing names it).
    resuming = bool(state.jobs or state.machines or state.launch_requests or state.system.runs)
    if ctx.mode == "comfyui" and ctx.config.comfyui_url:
        attach = {"comfyui": ctx.config.comfyui_url, **attach}
    clients = {}
    checks = checks if checks is not None else trio.CancelScope()
    with checks:
        if ctx.runcomfy is not None:
            # Check the credentials first: a wrong token is one clear error, not a failed
            # job. A rate limit is waited out (the account is there, and busy); so is an
            # outage on a resume (it must reach the cloud to stop what the crashed run left
            # running), but for a minute at most on a fresh start, where nothing is at stake.
            await list_servers_patiently(
                ctx.runcomfy,
                ctx.config.pool.cloud_patience,
                what="start-up",
                outage_patience=None if resuming else 60.0,
            )
        # An attached ComfyUI that does not answer is a usage error, found before the log
        # says the run started.
        for name, url in attach.items():
            client = make_comfyui_client(ctx, name, url)
            await probe_comfyui(client, name, url)
            clients[name] = client
    if checks.cancelled_caught:
        raise StartUpStopped("start-up stopped before the run began")
    writer = this_process()  # (a start on a copy of the log asks whether it still runs)
    await ctx.emit(
        ev.SystemStarted(
            run_id=conjure.run_id,
            version=conjure_actors.__version__,
            mode=ctx.mode,  # type: ignore[arg-type]
            at=ctx.now(),
            out_dir=str(ctx.out_dir.absolute()),
            server_type=ctx.config.runcomfy.server_type,
            max_machines=ctx.config.pool.max_machines,
            idle_timeout=ctx.config.pool.idle_timeout,
            writer_host=writer.host,
            writer_pid=writer.pid,
            writer_started=writer.started,
            writer_boot_id=writer.boot_id,
        )
    )
    conjure.system_started = True
    await _start_budget(conjure)
    for m in list(state.machines.values()):
        # An attached machine of an earlier run that is not attached now cannot be reached.
        if m.kind != "runcomfy" and m.status not in st.MACHINE_GONE and m.server_id not in attach:
            await ctx.emit(
                ev.MachineLost(
                    server_id=m.server_id, reason="not attached in this run", at=ctx.now()
                )
            )
    for name, client in clients.items():
        conjure.pool.attach(name, client)
        await ctx.emit(
            ev.MachineAttached(
                server_id=name,
                kind="comfyui" if name == "comfyui" else "dev",
                max_jobs=ctx.config.pool.jobs_per_machine,
                at=ctx.now(),
            )
        )
        await ctx.emit(ev.MachineHealthy(server_id=name, at=ctx.now()))
        conjure.pool.attach_events_later(name)
    if resuming:
        reply: Reply[None] = Reply()
        await conjure.machines.tell(_Reconcile(reply))
        await reply.wait()
        unfinished = [
            j.job_id for j in ctx.state.jobs.values() if j.status in st.RESUMABLE_STATUSES
        ]
        for i, job_id in enumerate(unfinished):
            job = ctx.state.jobs.get(job_id)
            if job is None or job.status not in st.RESUMABLE_STATUSES:
                continue
            # Asked before each job: a signal may come while the first ones are queued.
            # Those queued already are stopped by the run's stop like any running job.
            if hold_resumed is not None and hold_resumed():
                log.info("stopping during start-up: unfinished jobs left for --resume")
                conjure.held = frozenset(unfinished[i:])
                break
            why = not_resumable(ctx.state, job) if not_resumable is not None else None
            if why is not None:
                # It has no actor yet: the start-up ends it, as Conjure ends a job without
                # one at a shutdown (cancel), before a machine is launched for it.
                log.warning("job %s: failed: %s", job_id, why)
                await ctx.emit(
                    decide.fail_job(
                        ctx.state, job_id, error_type="NotResumable", message=why, at=ctx.now()
                    )
                )
                continue
            await conjure._queue(job_id)  # queued again, or its actor for the rest
        # The resumed actors run (an interrupted job is active again) before the run's
        # body starts: its wait_until_idle sees them.
        await conjure._wait_starts()


class _IdleSeen:
    """What ``wait_until_idle``'s journal listener saw: whether a published record may have
    made the run idle since the waiter last looked (``done``), the event that wakes a waiter
    following the records (set when one may have), and the journal's failure or close
    (``error``: the waiter raises it, no more records will come)."""

    __slots__ = ("done", "error", "wake")

    def __init__(self) -> None:
        self.done = False
        self.error: Exception | None = None
        self.wake = trio.Event()
