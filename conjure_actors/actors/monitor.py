"""The MonitorActor: the live view and stall detection.

It owns its state like every actor: a child task follows the journal, shows each record on
the sink (JSON lines, the Rich view: display, not state, and shown as soon as published, to
the very last record) and forwards the records that tell whether a job is alive to the actor
as messages; a timer child sends a tick. The actor keeps the
:class:`~conjure_actors.actors.view.StallDetector` and, for a running job silent too long,
emits its one event, ``JobStalled``, then tells the job's WorkflowActor (``notify_stall``),
which follows the prompt by polling.

A sink that fails (the terminal went away: SIGHUP, a closed pipe) is dropped with one log
line; the view is not worth stopping the run for.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from conjure_actors.actors.context import Context
from conjure_actors.actors.view import StallDetector
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.runtime import Actor
from conjure_actors.runtime.errors import ActorStoppedError

log = logging.getLogger("conjure_actors.actors.monitor")

_ALIVE = (
    ev.PromptSubmitting,
    ev.PromptSubmitted,
    ev.ExecutionStarted,
    ev.NodeStarted,
    ev.NodeProgress,
    ev.NodeExecuted,
    ev.NodeCached,
    ev.ExecutionSucceeded,
    ev.OutputSaved,
)
_DONE = (
    ev.JobSucceeded,
    ev.JobFailed,
    ev.JobCancelled,
    ev.JobInterrupted,
    ev.JobQueued,
    ev.JobRetrying,
)
_SEEN = _ALIVE + _DONE


def _record_on(record: Any, state: st.State, sink: MonitorSink) -> None:
    sink.record(record.seq, record.ts, record.event, state)


class MonitorSink:
    """Where the MonitorActor shows things (JSON lines, the Rich view, or nowhere)."""

    def record(self, seq: int, ts: float, event: Any, state: st.State) -> None:
        """One published record."""

    def tick(self, state: st.State) -> None:
        """Periodic refresh (a live view redraws here)."""

    def close(self) -> None:
        """The run is over."""


@attrs.frozen
class _Seen:
    """Jobs showed signs of life, or stopped needing to (from the watching child), in the
    order they were published."""

    events: tuple[Any, ...]


@attrs.frozen
class _Tick:
    pass


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
        self.start_soon(self._ticks, name="monitor-ticks")

    async def _watch(self, ready: trio.Event) -> None:
        """Child: show every published record; forward a job's signs of life and ends."""
        async with self.ctx.journal.subscribe(max_buffer=math.inf) as records:
            ready.set()
            async for first in records:
                # One wake-up (and one message) for everything already published: a
                # receive() per record would be a trio checkpoint, a task switch, per event.
                batch = [first]
                with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                    while True:
                        batch.append(records.receive_nowait())
                seen = []
                for record in batch:
                    self._show(functools.partial(_record_on, record, self.ctx.state))
                    if isinstance(record.event, _SEEN):
                        seen.append(record.event)
                if seen:
                    await self._tell(_Seen(tuple(seen)))

    async def _ticks(self) -> None:
        """Child: a tick per period (the view redraws, silent jobs are looked for)."""
        period = max(0.05, min(self.refresh, self.detector.stall_seconds / 4))
        while True:
            await trio.sleep(period)
            await self._tell(_Tick())

    async def _tell(self, msg: Any) -> None:
        try:
            await self.ref.tell(msg)
        except ActorStoppedError:
            log.debug("monitor: %s after the actor stopped", type(msg).__name__)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case _Seen(events=events):
                now = trio.current_time()
                for event in events:
                    if isinstance(event, _ALIVE):
                        self.detector.alive(event.job_id, now)
                    else:
                        self.detector.forget(event.job_id)
            case _Tick():
                self._show(lambda sink: sink.tick(self.ctx.state))
                for job_id, idle in self.detector.stalled(trio.current_time()):
                    job = self.ctx.state.jobs.get(job_id)
                    if job is None or job.status != st.RUNNING:
                        continue
                    await self.ctx.emit(
                        ev.JobStalled(job_id=job_id, idle_seconds=round(idle, 3), at=self.ctx.now())
                    )
                    self.notify_stall(job_id)
            case _:
                log.warning("MonitorActor: unknown message %s", type(msg).__name__)

    def _show(self, call: Callable[[MonitorSink], None]) -> None:
        if self.sink is None:
            return
        try:
            call(self.sink)
        except (OSError, ValueError) as exc:  # the terminal or pipe is gone (SIGHUP, EPIPE)
            log.warning("monitor: the live view stopped: %s", exc)
            self.sink = None
