"""The MonitorActor: the live view and stall detection.

A journal listener (``Journal.listen``: called inside each commit, in whichever task
commits, with no wake-up of its own) shows each record on the sink (JSON lines, the Rich
view: display, not state, and shown as soon as published, to the very last record) and
notes which jobs showed a sign of life (or ended); that listener touches only the display
(the sink) and that note. A child task takes the note and tells the actor, then the tick
itself: the actor's state changes only in the actor. The actor keeps the
:class:`~conjure_actors.actors.view.StallDetector` and, for a running job silent too long,
emits its one event, ``JobStalled``, then tells the job's WorkflowActor (``notify_stall``),
which follows the prompt by polling.

The child wakes only when something is due (issue 16): with a sink that redraws (its own
``tick``: the Rich view, the JSON lines' flush) every ``refresh``; with none (``serve``, the
tests' runs) only at the earliest moment a job could have stalled, so an idle run does not
wake at all.

A sink that fails (the terminal went away: SIGHUP, a closed pipe) is dropped with one log
line; the view is not worth stopping the run for.
"""

from __future__ import annotations

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
_SEEN_TYPES = frozenset(_SEEN)  # events are final classes: a set lookup, not 15 isinstance


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
    """Jobs showed signs of life, or stopped needing to, since the last tick (from the
    watching child): each job's latest such event with the (trio) time it was seen."""

    events: tuple[tuple[Any, float], ...]


@attrs.frozen
class _Tick:
    pass


class MonitorActor(Actor):
    """Sees every published record (a journal listener): feeds a sink, detects stalled jobs."""

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
        # Filled by the journal listener (_on_records), taken at each tick by _watch.
        self._seen: dict[str, tuple[Any, float]] = {}
        self._broken: Exception | None = None
        # Without a redrawing sink: when _watch wakes next (the earliest stall check due,
        # lowered by the listener and the actor), and its sleep's cancel scope.
        self._due = math.inf
        self._wake: trio.CancelScope | None = None
        # The actor's: each watched job's last sign of life (the detector's, not yet
        # reported), whence the next stall check.
        self._alive_at: dict[str, float] = {}

    async def on_start(self) -> None:
        ready = trio.Event()
        self.start_soon(self._watch, ready, name="monitor-watch")
        await ready.wait()

    async def _watch(self, ready: trio.Event) -> None:
        """Child: every record is shown as it is committed (a journal listener, called by
        the committing task: no wake-up of this task per commit, issue 16); at each wake-up,
        tell the actor each job's latest sign of life (or end) since the last one, then the
        tick (the view redraws, silent jobs are looked for). Stall detection looks only at
        ticks, so one message per tick tells it all a message per record would (with the
        times seen). A sink that redraws is ticked once per period; with none, the child
        sleeps until the earliest stall check is due (``_due``). Ends when the journal
        closes."""
        self._seen = {}
        self._broken = None
        self._due = math.inf
        with self.ctx.journal.listen(self._on_records) as listener:
            ready.set()
            if self._redraws():
                period = max(0.05, min(self.refresh, self.detector.stall_seconds / 4))
                while True:
                    await trio.sleep(period)
                    if not await self._tick(listener):
                        return
            while True:
                with trio.CancelScope(deadline=self._due) as self._wake:
                    await trio.sleep_forever()
                self._wake = None
                self._due = math.inf  # the actor sets the next one on this tick
                if not await self._tick(listener):
                    return

    def _redraws(self) -> bool:
        """The sink has a periodic refresh of its own (not MonitorSink's no-op ``tick``)."""
        return self.sink is not None and type(self.sink).tick is not MonitorSink.tick

    async def _tick(self, listener: Any) -> bool:
        """Tell the actor what was seen, then tick; False once the journal closed."""
        if self._broken is not None:
            raise self._broken  # the sink raised in the listener: crash here
        if not listener.active:
            return False  # the journal closed
        seen, self._seen = self._seen, {}
        if seen:
            await self._tell(_Seen(tuple(seen.values())))
        await self._tell(_Tick())
        return True

    def _wake_by(self, when: float) -> None:
        """The watching child wakes at ``when`` at the latest (a stall check is due)."""
        if when < self._due:
            self._due = when
            if self._wake is not None:
                self._wake.deadline = when

    def _on_records(self, records: list[Any]) -> None:
        """The journal listener: show each record, note the latest sign of life per job.
        Never raises (the journal's contract): an unexpected error is kept for _watch to
        raise, which crashes the actor as a crash in the watching child did before."""
        if self._broken is not None:
            return
        try:
            self._show_records(records)
            seen = self._seen
            alive = False
            now = 0.0
            for record in records:
                event = record.event
                if type(event) in _SEEN_TYPES:
                    if not alive:  # the clock is read once, and only for a sign of life
                        now = trio.current_time()
                        alive = True
                    seen.pop(event.job_id, None)  # keep the order of the latest
                    seen[event.job_id] = (event, now)
            # A job seen alive now may stall from now + stall_seconds: the watcher must wake
            # by then, unless it already wakes earlier (the usual case while jobs run: the
            # exact instant is computed only when it may be the earliest, issue 16).
            stall = self.detector.stall_seconds
            if alive and not self._due - now < stall:
                self._wake_by(_stall_due(now, stall))
        except Exception as exc:
            self._broken = exc
            self._wake_by(-math.inf)  # crash now, in the watching child

    async def _tell(self, msg: Any) -> None:
        try:
            await self.ref.tell(msg)
        except ActorStoppedError:
            log.debug("monitor: %s after the actor stopped", type(msg).__name__)

    async def receive(self, msg: Any) -> Any:
        match msg:
            case _Seen(events=events):
                for event, at in events:
                    if isinstance(event, _ALIVE):
                        self.detector.alive(event.job_id, at)
                        self._alive_at[event.job_id] = at
                    else:
                        self.detector.forget(event.job_id)
                        self._alive_at.pop(event.job_id, None)
            case _Tick():
                self._show(lambda sink: sink.tick(self.ctx.state))
                stalled = self.detector.stalled(trio.current_time())
                for job_id, _ in stalled:
                    del self._alive_at[job_id]  # reported: no check until a sign of life
                if self._alive_at:
                    stall = self.detector.stall_seconds
                    self._wake_by(min(_stall_due(at, stall) for at in self._alive_at.values()))
                for job_id, idle in stalled:
                    job = self.ctx.state.jobs.get(job_id)
                    if job is None or job.status != st.RUNNING:
                        continue
                    if _waiting_its_turn(self.ctx.state, job):  # checked again later
                        now = trio.current_time()
                        self.detector.alive(job_id, now)
                        self._alive_at[job_id] = now
                        self._wake_by(_stall_due(now, self.detector.stall_seconds))
                        continue
                    await self.ctx.emit(
                        ev.JobStalled(job_id=job_id, idle_seconds=round(idle, 3), at=self.ctx.now())
                    )
                    self.notify_stall(job_id)
            case _:
                log.warning("MonitorActor: unknown message %s", type(msg).__name__)

    def _show_records(self, batch: list[Any]) -> None:
        """Each record of ``batch`` on the sink, in order (one call per record, no closure:
        this runs for every event of the run)."""
        sink = self.sink
        if sink is None:
            return
        state = self.ctx.state
        try:
            for record in batch:
                sink.record(record.seq, record.ts, record.event, state)
        except (OSError, ValueError) as exc:  # the terminal or pipe is gone (SIGHUP, EPIPE)
            log.warning("monitor: the live view stopped: %s", exc)
            self.sink = None

    def _show(self, call: Callable[[MonitorSink], None]) -> None:
        if self.sink is None:
            return
        try:
            call(self.sink)
        except (OSError, ValueError) as exc:  # the terminal or pipe is gone (SIGHUP, EPIPE)
            log.warning("monitor: the live view stopped: %s", exc)
            self.sink = None


def _waiting_its_turn(state: st.State, job: st.Job) -> bool:
    """``job``'s prompt waits in its machine's queue (submitted, not started) behind a
    prompt of another job of ours that runs there: silent, not stalled (it was said
    "stalled: no progress for 60s" while the prompt ahead ran). Read only when a job goes
    silent too long: the scan of the jobs is rare."""
    if job.execution != "submitted" or job.server_id is None:
        return False
    return any(
        other.server_id == job.server_id
        and other.execution == "started"
        and other.status == st.RUNNING
        and other is not job
        for other in state.jobs.values()
    )


def _stall_due(last: float, stall_seconds: float) -> float:
    """The first time ``t`` at which a job last seen alive at ``last`` counts as stalled
    (``t - last >= stall_seconds``, as the detector computes it: ``last + stall_seconds``
    may round an ulp either side of it; woken an ulp early, the watcher would find nothing
    due and sleep until the same instant again)."""
    due = last + stall_seconds
    while due - last < stall_seconds:
        due = math.nextafter(due, math.inf)
    while (earlier := math.nextafter(due, -math.inf)) - last >= stall_seconds:
        due = earlier
    return due
