"""The four actors. The MachineActor lives in :mod:`conjure_actors.actors.pool` and the
CostActor in :mod:`conjure_actors.actors.cost` (re-exported here).

Each actor is a :class:`conjure_actors.runtime.Actor`; a crash restarts it (a new instance
around the same long-lived memory, so waiting lease requests and live clients survive).
Who talks to whom (DESIGN.md):

- WorkflowActor -> MachineActor: ``LeaseMachine`` (the reply comes later through a
  :class:`Reply`), ``ReleaseMachine``, ``CancelLease``;
- MachineActor -> CostActor: ask ``ApproveLaunch`` / ``ApproveRenewal``;
- CostActor -> MachineActor: ``StopAllMachines`` (budget exceeded; a tell, never an ask, so
  the two never wait on each other);
- MonitorActor -> WorkflowActor: ``JobStallNoticed`` (after logging ``JobStalled``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio

from conjure_actors.actors.context import Context
from conjure_actors.actors.cost import ACCRUE_INTERVAL, CostActor
from conjure_actors.actors.job import JobRun
from conjure_actors.actors.messages import (
    CancelJob,
    CancelLease,
    JobStallNoticed,
    Lease,
    LeaseMachine,
    PollNow,
    ReleaseMachine,
    Reply,
)
from conjure_actors.actors.pool import MachineActor
from conjure_actors.actors.pool import Reconcile as _Reconcile
from conjure_actors.actors.view import StallDetector
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.runtime import Actor, ActorRef

log = logging.getLogger("conjure_actors.actors")

__all__ = ["ACCRUE_INTERVAL", "CostActor", "MachineActor", "_Reconcile"]


class PoolPort:
    """The MachineActor as a WorkflowActor sees it (messages, not calls)."""

    def __init__(self, ref: ActorRef) -> None:
        self.ref = ref

    async def lease(
        self,
        job_id: str,
        version: str | None,
        priority: int,
        reply: Reply[Lease],
        only_server: str | None = None,
    ) -> None:
        await self.ref.tell(LeaseMachine(job_id, version, priority, reply, only_server))

    async def release(self, server_id: str, job_id: str, *, broken: bool = False) -> None:
        await self.ref.tell(ReleaseMachine(server_id, job_id, broken))

    async def polled(self) -> None:
        """Return once the pool has listed the cloud afresh (machines found gone are lost)."""
        reply: Reply[None] = Reply()
        await self.ref.tell(PollNow(reply))
        await reply.wait()

    def cancel_lease(self, job_id: str) -> None:
        try:
            self.ref.tell_nowait(CancelLease(job_id))
        except Exception as exc:  # a stopped pool has no request to withdraw
            log.debug("cancel_lease(%s): %s", job_id, exc)


class WorkflowActor(Actor):
    """One job (see :mod:`conjure_actors.actors.job`). A temporary child of the job
    supervisor: it ends when the job reaches a terminal event."""

    def __init__(
        self, ctx: Context, job_id: str, pool: PoolPort, on_done: Callable[[str], None]
    ) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.pool = pool
        self.on_done = on_done
        self.run: JobRun | None = None
        self._scope: trio.CancelScope | None = None
        self._cancel_reason: str | None = None

    async def on_start(self) -> None:
        self.run = JobRun(self.ctx, self.job_id, self.pool)
        self._scope = trio.CancelScope()
        self.start_soon(self._main, name=f"job-{self.job_id}")

    async def _main(self) -> None:
        assert self.run is not None
        assert self._scope is not None
        with self._scope:
            await self.run.run()
        if self._cancel_reason is not None:
            await self.run.cancel(self._cancel_reason)
        self.on_done(self.job_id)
        self.ref.tell_nowait(_Finished())

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CancelJob():
                if self._cancel_reason is None:
                    self._cancel_reason = msg.reason
                    if self._scope is not None:
                        self._scope.cancel()
            case JobStallNoticed():
                if self.run is not None:
                    self.run.poll_now.set()
                    self.run.poll_now = trio.Event()
            case _Finished():
                self.stop()
            case _:
                log.warning("WorkflowActor: unknown message %s", type(msg).__name__)


class _Finished:
    """Internal: the job task ended; stop the actor."""


class MonitorSink:
    """Where the MonitorActor shows things (JSON lines, the Rich view, or nowhere)."""

    def record(self, seq: int, ts: float, event: Any, state: st.State) -> None:
        """One published record."""

    def tick(self, state: st.State) -> None:
        """Periodic refresh (a live view redraws here)."""

    def close(self) -> None:
        """The run is over."""


class MonitorActor(Actor):
    """Watches every published record: feeds a sink, detects stalled jobs."""

    def __init__(
        self,
        ctx: Context,
        sink: MonitorSink | None,
        notify_stall: Callable[[str], None],
        *,
        refresh: float = 0.25,
    ) -> None:
        self.ctx = ctx
        self.sink = sink
        self.notify_stall = notify_stall
        self.refresh = refresh
        self.detector = StallDetector(ctx.config.monitor.stall_seconds)

    async def on_start(self) -> None:
        ready = trio.Event()
        self.start_soon(self._watch, ready, name="monitor-watch")
        await ready.wait()
        self.start_soon(self._stalls, name="monitor-stalls")

    async def _watch(self, ready: trio.Event) -> None:
        async with self.ctx.journal.subscribe(max_buffer=math.inf) as records:
            ready.set()
            async for record in records:
                event = record.event
                self._observe(event)
                if self.sink is not None:
                    self.sink.record(record.seq, record.ts, event, self.ctx.state)

    def _observe(self, event: Any) -> None:
        now = trio.current_time()
        match event:
            case (
                ev.PromptSubmitting()
                | ev.PromptSubmitted()
                | ev.ExecutionStarted()
                | ev.NodeStarted()
                | ev.NodeProgress()
                | ev.NodeExecuted()
                | ev.NodeCached()
                | ev.ExecutionSucceeded()
                | ev.OutputSaved()
            ):
                self.detector.alive(event.job_id, now)
            case (
                ev.JobSucceeded()
                | ev.JobFailed()
                | ev.JobCancelled()
                | ev.JobQueued()
                | ev.JobRetrying()
            ):
                self.detector.forget(event.job_id)
            case _:
                pass

    async def _stalls(self) -> None:
        period = max(0.05, min(self.refresh, self.detector.stall_seconds / 4))
        while True:
            await trio.sleep(period)
            if self.sink is not None:
                self.sink.tick(self.ctx.state)
            for job_id, idle in self.detector.stalled(trio.current_time()):
                job = self.ctx.state.jobs.get(job_id)
                if job is None or job.status != st.RUNNING:
                    continue
                await self.ctx.emit(
                    ev.JobStalled(job_id=job_id, idle_seconds=round(idle, 3), at=self.ctx.now())
                )
                self.notify_stall(job_id)

    async def receive(self, msg: Any) -> Any:
        log.warning("MonitorActor: unknown message %s", type(msg).__name__)
