"""The trio side: ``open_journal`` and ``Journal``: persist, then apply, then publish.

Many tasks call ``await journal.append(event)``. Each call puts its event into the open
batch and parks (no channel round trip, no object per append but its abort callback: the
whole batch is woken with one shared answer); one committer task takes the oldest batch
whole, writes it and makes it durable, then folds the records into ``journal.state`` (if
``apply`` was given), then hands them to the subscribers, and only then wakes the appenders
with their records. So nothing can be observed (by a subscriber, by the state, by the
caller) that a replay of the log would not rebuild.

Group commit
------------
An fsync costs ~150 µs; trio runs many appenders in one scheduler pass. While one batch is
being fsynced (in the journal's own worker thread, so the event loop keeps running; through
``trio.to_thread.run_sync`` under trio's MockClock, see ``Journal._persist``), new appends
pile up in the queue; the committer takes all of them (up to
``max_batch`` events) for the next fsync. Under load every fsync is shared by hundreds of
appends, and a lone appender waits for exactly one fsync. ``max_delay`` (default 0) lets the
committer also wait up to that long for a batch to fill, trading latency for fewer fsyncs at
low concurrency. Policies: ``batch`` = group commit with fsync; ``always`` = one fsync per
append call (no sharing: the strict baseline); ``none`` = group write, no fsync, no thread.
With ``none`` (and no ``max_delay``) an append that finds nothing queued commits inline, in
the appending task, and returns without a task switch (one in ``INLINE_STREAK`` yields, and
every one while a bounded subscriber is subscribed).

A journal that commits in its thread (``sync`` other than ``none``), or writes snapshots
(in a worker thread too), shortens the
interpreter's switch interval, process-wide and never lengthening it
(:func:`prompt_gil_handoff`): beside a busy event loop, the thread would otherwise wait for
the GIL until the loop falls idle. A program that wants another interval sets it after
opening the journal.

Cancellation: an append cancelled while still queued is withdrawn (never written). Once its
batch is being written it cannot be withdrawn, so the cancel waits for that one commit (a
bounded wait) and the call returns its record; the cancel fires at the next checkpoint. The
commit step itself is shielded: a durable batch is always applied, published and answered.

Slow subscribers
----------------
``subscribe(max_buffer=1024)`` gives a bounded channel. Appenders never wait for subscribers:
a subscriber whose buffer is full is cut off (its channel ends) and leaving its
``async with`` raises :class:`SubscriberOverflowError` with the first seq it missed, so it can
re-read the log from there. Bounded by default because one stuck consumer must neither stall
the runtime nor grow memory without limit; pass ``max_buffer=math.inf`` for an in-process UI
that must see everything and is trusted to keep up.

Listeners
---------
``with journal.listen(fn) as listener:`` calls ``fn(records)`` with every batch of records
made durable from then on, in the committing task, right after they are applied (before any
subscriber gets them, before the appenders resume): no task of its own, so no wake-up and
no task switch per commit. For cheap bookkeeping that must see everything (a live view,
counters): ``fn`` must neither block nor raise. One that raises is dropped (logged) and the
commit goes on; ``listener.active`` turns False once it is dropped or the journal closes.
``listen(fn, on_end=g)`` also calls ``g(error)`` once when the journal fails (its apply
raised: ``JournalFailedError``) or closes (``LogClosedError``): the records stop there, as a
subscription's channel ends (a waiter that follows the records through a listener learns
that no more will come).

Snapshots
---------
``snapshot_every=N`` writes ``journal.state`` to ``LOG.snapshots/`` each time the log crosses
a multiple of N records (encoded in the trio thread after the commit, written by a snapshot
task in a worker thread), so that ``replay`` and a reopened journal start from there. A
journal that opens on a log whose newest usable snapshot is N records or more behind its end
(none was written yet, or they are all of an older state type, which a changed state type
leaves unseen) writes one at once: else a log that grows by less than N records per run
would be folded from the start at every open.

Failures: a failed write (e.g. ``DiskFullError``) fails exactly the appends of that batch (the
log was truncated back and stays valid) and the journal carries on. If ``apply`` raises, the
state can no longer be trusted: the journal fails, every later append raises
:class:`JournalFailedError`, and leaving ``open_journal`` raises it too.

Holding through a full disk
---------------------------
``open_journal(hold_full_disk=S)`` (opt-in; ``serve`` uses it): a program that lives for days
should ride out a disk that fills for a while (a log rotation, a big upload elsewhere) rather
than fail appends it could have made a minute later. A batch whose write finds the disk full
(``DiskFullError``: ENOSPC or EDQUOT; the writer truncated the file back, so nothing of it is
in the file) is then *held*: it stays at the head of the queue and is written again after
0.5 s, 1 s, 2 s ... 5 s (trio's clock: a test's autojump clock moves it); every later append
queues behind it (an inline commit too), so order and seqs are as if the disk had never been
full. ``journal.held`` says since when (the journal's clock), None otherwise; snapshots are
skipped while held (they would only fill the disk further). If the disk is still full after
``S`` seconds, the held batch fails with its ``DiskFullError`` as it would have at once
without the hold, and until a write succeeds again a full disk fails appends at once (the
hold is spent: a program stopping on that error is not held again). Any other write error
fails at once, as ever. :meth:`Journal.stop_holding` ends a hold now and holds no more (a
program that is shutting down: whatever must happen without the log, like stopping paid
machines, must not wait for the disk); closing the journal does it too.
:meth:`Journal.start_holding` turns the hold on later (a program that holds only once it is
up: a full disk during its start-up then fails at once).

An appender cancelled while its batch is held is withdrawn: its events are taken out of the
batch before the next attempt (one cancelled while an attempt is in flight waits for that
attempt only: written, it returns its record; refused, it is withdrawn then). So the file and
``journal.state`` always agree on what was appended, whatever was cancelled.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, Generic, NoReturn, Protocol, TypeVar, cast

import msgspec
import outcome
import trio

from .codec import Upcasters
from .errors import (
    DiskFullError,
    JournalFailedError,
    LogClosedError,
    LogShorterError,
    LogWriteError,
    SnapshotError,
    SubscriberOverflowError,
)
from .memory import MemoryLog
from .reader import fold, read
from .record import Record
from .snapshot import (
    list_snapshots,
    prune_snapshots,
    replay,
    snapshot_file,
    snapshots_dir,
    write_snapshot_payload,
)
from .writer import LogWriter, SyncPolicy, event_classes, open_writer

E = TypeVar("E")
S = TypeVar("S")

_current_task: Final = trio.lowlevel.current_task
_reschedule: Final = trio.lowlevel.reschedule
_park: Final = trio.lowlevel.wait_task_rescheduled
_partial: Final = functools.partial
#: Snapshots encoded but not yet written, at most (see Journal._take_snapshot).
_MAX_PENDING_SNAPSHOTS: Final = 4
HOLD_FIRST_RETRY: Final = 0.5
"""Seconds a batch held by a full disk waits before its first new attempt (then doubling)."""
HOLD_MAX_RETRY: Final = 5.0
"""The longest wait between two attempts of a held batch."""
INLINE_STREAK: Final = 64
"""Inline commits (``sync="none"``, nothing queued) made back to back before one of them
is also a schedule point (see ``Journal._append_many_inline``)."""

log = logging.getLogger("eventlog.journal")


class EventStore(Protocol):
    """What the journal needs from a backend: :class:`LogWriter` and :class:`MemoryLog`."""

    @property
    def last_seq(self) -> int: ...

    @property
    def sync(self) -> SyncPolicy: ...

    def append_many(
        self, events: Iterable[Any], *, ts: Sequence[float] | None = None
    ) -> list[Record[Any]]: ...

    def stage_many(
        self, events: Iterable[Any], *, ts: Sequence[float] | None = None
    ) -> list[Record[Any]]: ...

    def flush(self) -> None: ...

    def discard_staged(self, records: Sequence[Record[Any]], /) -> bool: ...

    def close(self) -> None: ...


class JournalStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the journal's counters (see :meth:`Journal.statistics`)."""

    last_seq: int
    sync: str
    appended: int  # records made durable by this journal
    commits: int  # batches written (one fsync each unless sync="none")
    largest_batch: int
    queued: int  # events waiting for a commit
    subscribers: int
    failed: bool
    snapshots: int = 0  # snapshots written (open_journal(snapshot_every=N))
    snapshot_error: str | None = None  # why the last snapshot could not be written, if so
    held_since: float | None = None  # when a full disk began holding appends (journal.held)
    holds: int = 0  # times a full disk held appends (open_journal(hold_full_disk=S))


class _Batch:
    """The events of one future commit, in append order, and the appenders parked on it.

    Entry ``k`` is one append call: ``tasks[k]`` parked on it, its events from ``starts[k]``
    up to the next entry's start (one for ``append``, several for ``append_many``). A cancel
    while the batch is open withdraws the entry: ``tasks[k]`` becomes None and its events
    are left out when the committer takes the batch. Positions never move while it is open,
    so each appender knows its own from the moment it joins.
    """

    __slots__ = (
        "aborts",
        "cancels",
        "count",
        "events",
        "starts",
        "taken",
        "tasks",
        "ts",
        "withdrawn",
    )

    def __init__(self) -> None:
        # Entry k's abort callback (a cancel while parked), made once per slot and kept
        # while the batch is reused (see Journal._recycle): no allocation per append.
        self.aborts: list[Callable[[Any], trio.lowlevel.Abort]] = []
        self.tasks: list[trio.lowlevel.Task | None] = []
        self.starts: list[int] = []
        self.events: list[Any] = []
        self.ts: list[float] = []
        self.count = 0  # events of the entries still in the batch
        self.withdrawn = 0  # entries withdrawn by a cancel while the batch was open
        self.taken = False  # the committer has it: no entry may leave any more
        # Entries cancelled while the batch was being written (k, trio's raise_cancel): a
        # held batch withdraws them once that attempt failed (see Journal._hold).
        self.cancels: list[tuple[int, Any]] = []

    def reset(self) -> None:
        """Empty again, for reuse once every appender of the batch has been answered."""
        self.tasks.clear()
        self.starts.clear()
        self.events.clear()
        self.ts.clear()
        self.count = 0
        self.withdrawn = 0
        self.taken = False
        self.cancels.clear()

    def span(self, k: int) -> tuple[int, int]:
        """Where entry ``k``'s events are: (start, end) in ``events``."""
        starts = self.starts
        end = starts[k + 1] if k + 1 < len(starts) else len(self.events)
        return starts[k], end


class _Answer(outcome.Outcome[Any]):
    """What every appender of a batch is woken with: the batch's records, by position.

    ``outcome.Value`` may be unwrapped only once, so it would cost one allocation per
    append; this one is unwrapped by each appender of the batch (inside trio's
    ``wait_task_rescheduled``), which then takes its own record or slice.
    """

    __slots__ = ("value",)

    def __init__(self, value: list[Any]) -> None:
        self.value = value

    def unwrap(self) -> list[Any]:
        return self.value

    def send(self, gen: Generator[Any, list[Any], object]) -> Any:
        return gen.send(self.value)

    async def asend(self, agen: AsyncGenerator[Any, list[Any]]) -> Any:
        return await agen.asend(self.value)


class _ImmediateLimiter:
    """trio's default thread limiter, borrowed without yielding when a token is free.

    ``CapacityLimiter.acquire_on_behalf_of`` ends with a checkpoint even when it does not
    wait, so ``to_thread.run_sync`` starts the commit's thread one scheduler pass late:
    behind every task that is runnable then (for a lone appender one pass more; under load
    behind the appenders the previous commit just woke). Borrowing from the default
    limiter itself keeps what the tests rely on: its statistics tell a harness that a
    commit is in flight. The commit is shielded, so the skipped checkpoint cancels nothing.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:
            self._limiter.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            await self._limiter.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self._limiter.release_on_behalf_of(borrower)


GIL_SWITCH_SECONDS: Final = 0.0002
"""The interpreter's switch interval while a journal commits in a worker thread (see
:func:`prompt_gil_handoff`)."""


def prompt_gil_handoff() -> None:
    """Shorten the interpreter's switch interval to :data:`GIL_SWITCH_SECONDS` (never
    lengthen it): a commit thread must get the GIL back promptly beside a busy event loop.

    The thread releases the GIL for its write and fsync and needs it back to answer. A
    thread waiting for the GIL asks its holder to drop it only after waiting a whole switch
    interval (default 5 ms) *without a wake-up*; but the trio thread releases the GIL at
    every scheduler pass (its ``epoll`` call), which wakes the waiter and restarts its
    wait, and takes it back before the waiter runs. So while the loop has work and passes
    more often than once per interval, the thread waits until the loop falls idle (the
    "convoy effect", bpo-7946). Measured on a 2-core box (``bench/busy_loop.py``), a loop
    kept busy by tasks that compute about a millisecond between checkpoints: an ``append``
    with ``sync="batch"`` took a p90 of 0.9 s and at worst 6.4 s, or 58 s (0.4 ms on an
    idle loop); with a 0.2 ms interval, a median of 16 ms and a p90 of 20-21 ms (the
    loop's own passes). A shorter interval costs nothing while no thread waits for the GIL;
    when one does, the loop gives it up for the microseconds the thread runs Python."""
    if sys.getswitchinterval() > GIL_SWITCH_SECONDS:
        sys.setswitchinterval(GIL_SWITCH_SECONDS)


class _CommitThread:
    """The journal's own worker thread for the write + fsync of each commit.

    One ``trio.to_thread.run_sync`` per commit costs a thread-cache hand-off, a limiter, a
    context copy and two task steps on the way back; a long-lived thread fed by a queue is
    woken by one ``SimpleQueue.put`` and wakes the committer with one ``run_sync_soon``
    (issue 16: a lone appender's append_many -> return went from a p50 of ~320 to ~280 us,
    20 appenders from ~570 to ~500 us, on a disk whose own write + fdatasync takes ~140).
    The committer parks until it is done and cannot abandon it (the commit is shielded, as
    with ``to_thread.run_sync``): a slow fsync never holds the event loop.
    """

    __slots__ = ("_jobs", "_token")

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[trio.lowlevel.Task, Callable[[], None]] | None]
        self._jobs = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        threading.Thread(target=self._work, name="eventlog journal commit", daemon=True).start()

    def _work(self) -> None:
        jobs, token = self._jobs, self._token
        while (job := jobs.get()) is not None:
            task, fn = job
            result = outcome.capture(fn)
            try:
                token.run_sync_soon(_reschedule, task, result)
            except trio.RunFinishedError:
                return  # the run ended without waiting for it: nobody is left to answer

    async def run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the thread; return (or raise) what it did, once it is done."""
        self._jobs.put((_current_task(), fn))
        await _park(_keep_waiting)

    def stop(self) -> None:
        """Let the thread end once it is idle (it is never joined: no wait on the loop)."""
        self._jobs.put(None)


def _keep_waiting(_: Any) -> trio.lowlevel.Abort:
    # A commit in flight is never abandoned (see _CommitThread).
    return trio.lowlevel.Abort.FAILED


def _mock_clock() -> bool:
    """Whether this run's clock is trio's MockClock (a test's, whose time may leap)."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)


class _Subscriber:
    __slots__ = ("max_buffer", "missed_seq", "send")

    def __init__(self, send: trio.MemorySendChannel[Record[Any]], max_buffer: float) -> None:
        self.send = send
        self.max_buffer = max_buffer
        self.missed_seq: int | None = None


class Listener:
    """A synchronous subscriber (see :meth:`Journal.listen`); ``active`` is False once the
    journal dropped it (it raised: ``error``) or closed."""

    __slots__ = ("_raised", "active", "error", "fn", "on_end")

    def __init__(
        self,
        fn: Callable[[list[Record[Any]]], None],
        on_end: Callable[[Exception], None] | None = None,
    ) -> None:
        self.fn = fn
        self.on_end = on_end
        self.active = True
        self.error: Exception | None = None
        self._raised = trio.Event()

    def _end(self, error: Exception) -> None:
        """No more records will come (the journal failed or closed): tell ``on_end`` once."""
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(error)

    async def wait_raised(self) -> NoReturn:
        """Wait until ``fn`` raises (the journal then drops it) and raise its error here: a
        task that keeps a listener surfaces its failure instead of running on without it
        (the journal itself only logs it: the records were durable and applied)."""
        await self._raised.wait()
        assert self.error is not None
        raise self.error


class Journal(Generic[E, S]):
    """The journal over one store; create it with :func:`open_journal`."""

    def __init__(
        self,
        store: EventStore,
        event_type: Any,
        *,
        apply: Callable[[S, E], S] | None,
        initial: S,
        clock: Callable[[], float],
        max_batch: int,
        max_delay: float,
        snapshot_every: int = 0,
        snapshot_dir: str = "",
        state_type: Any = None,
        keep_snapshots: int = 0,
        hold_full_disk: float | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._store = store
        self._classes = event_classes(event_type)
        self._class_set = frozenset(self._classes)
        self._accepting = self._class_set  # empty once the journal refuses appends
        self._apply = apply
        self._state = initial
        self._clock = clock
        self._sync = store.sync
        self._max_batch = 1 if store.sync == "always" else max_batch
        self._max_delay = max_delay
        self._threaded = isinstance(store, LogWriter) and store.sync != "none"
        if self._threaded or snapshot_every:  # commits, or snapshots, in a worker thread
            prompt_gil_handoff()
        self._commit_thread: _CommitThread | None = None  # started by the first commit
        self._inline = store.sync == "none" and not max_delay
        # Open batches, oldest first: appenders join the last one while it has room, the
        # committer takes the first one whole.
        self._batches: deque[_Batch] = deque()
        # Emptied batches kept for reuse (with their abort callbacks): see _recycle.
        self._spare_batches: list[_Batch] = []
        self._inline_streak = 0  # inline commits since the last one that yielded
        self._idle_committer: trio.lowlevel.Task | None = None
        self._subscribers: list[_Subscriber] = []
        # How many of them are bounded (an inline commit then yields: _append_many_inline),
        # kept as a count so that the inline path needs no scan per commit.
        self._bounded_subscribers = 0
        self._listeners: list[Listener] = []
        self._closing = False
        self._failure: BaseException | None = None
        self._appended = 0
        self._commits = 0
        self._largest = 0
        self._last_seq = store.last_seq
        # Snapshots (see open_journal): the state is encoded here, in the trio thread, right
        # after the batch that crosses a multiple of snapshot_every (the state cannot change
        # under the encoder), and written by the snapshot task in a worker thread.
        self._snap_every = snapshot_every
        self._snap_dir = snapshot_dir
        self._snap_type = state_type
        self._snap_keep = keep_snapshots  # 0: keep them all
        self._snap_seq = store.last_seq
        self._snap_pending: deque[tuple[int, float, bytes]] = deque()
        self._snap_wakeup = trio.Event()
        self._snapshots = 0
        self._snapshot_error: str | None = None
        # Holding through a full disk (see the module docstring): seconds a held batch may
        # wait (None: no hold), the batch held now, since when (the journal's clock), the
        # event that wakes the hold early (stop_holding, closing) and the last seq when a
        # hold was spent (no new hold until a write succeeded after it).
        self._hold_patience = hold_full_disk
        self._held_batch: _Batch | None = None
        self._held_since: float | None = None
        self._hold_wakeup: trio.Event | None = None
        self._hold_spent_at: int | None = None
        self._holds = 0

    # -- public -----------------------------------------------------------------------------

    @property
    def state(self) -> S:
        """The fold of every durable record so far (``initial`` if no ``apply`` was given)."""
        return self._state

    @property
    def last_seq(self) -> int:
        """The seq of the last durable (and applied, and published) record."""
        return self._last_seq

    @property
    def held(self) -> float | None:
        """Since when (the journal's clock) a full disk holds the appends, or None (see
        "Holding through a full disk"): while it does, nothing new becomes durable."""
        return self._held_since

    def start_holding(self, patience: float) -> None:
        """Hold from now on: a batch the disk refuses for being full is written again for
        up to ``patience`` seconds before its appends fail (as ``open_journal``'s
        ``hold_full_disk``; for a program that holds only once it is up)."""
        if not patience >= 0:
            raise ValueError(f"patience must be a number of seconds >= 0, not {patience}")
        if not self._closing:
            self._hold_patience = patience

    def stop_holding(self) -> None:
        """Hold no more: from now on a full disk fails its appends at once (as without
        ``hold_full_disk``), and a hold in progress ends now, its appends failing with the
        ``DiskFullError`` that held them. For a program that is shutting down."""
        self._hold_patience = None
        if self._hold_wakeup is not None:
            self._hold_wakeup.set()

    @property
    def path(self) -> str | None:
        """The log file's path, or None for a log of another kind (in memory)."""
        path: str | None = getattr(self._store, "path", None)
        return path

    @property
    def notice(self) -> str | None:
        """One line to show the user if opening the log repaired it (a torn tail), else None."""
        notice: str | None = getattr(self._store, "notice", None)
        return notice

    def statistics(self) -> JournalStatistics:
        """Counters: appended records, commits (fsyncs), largest batch, queue, subscribers."""
        return JournalStatistics(
            last_seq=self.last_seq,
            sync=self._sync,
            appended=self._appended,
            commits=self._commits,
            largest_batch=self._largest,
            queued=self._queued_events(),
            subscribers=len(self._subscribers),
            failed=self._failure is not None,
            snapshots=self._snapshots,
            snapshot_error=self._snapshot_error,
            held_since=self._held_since,
            holds=self._holds,
        )

    async def append(self, event: E) -> Record[E]:
        """Append one event; returns its record once durable, applied and published."""
        # One check for the common case: _accepting is the event classes while the journal
        # takes appends, and empty once it failed or is closing (see _refuse).
        if type(event) not in self._accepting:
            self._check_append(event)
        batches = self._batches
        if batches:
            batch = batches[-1]
            if batch.count >= self._max_batch:
                batch = self._open_batch()
        elif self._inline:
            # Nothing queued and nothing to group (no fsync to share, no batching delay):
            # commit inline instead of a round trip through the committer.
            return (await self._append_many_inline((event,)))[0]
        else:
            batch = self._open_batch()
        # The hot path: join the open batch in place, park once. Nothing is allocated for
        # the append: its abort callback is the batch slot's own, made once (batches are
        # reused: _recycle), and the batch's answer is shared (see _Answer).
        events = batch.events
        start = len(events)
        tasks = batch.tasks
        k = len(tasks)
        aborts = batch.aborts
        abort = aborts[k] if k < len(aborts) else self._new_abort(batch)
        tasks.append(_current_task())
        batch.starts.append(start)
        events.append(event)
        batch.ts.append(self._clock())
        batch.count += 1
        committer = self._idle_committer
        if committer is not None:
            self._idle_committer = None
            _reschedule(committer)
        # wait_task_rescheduled is the cheapest park in trio and is itself the checkpoint.
        records: list[Record[E]] = await _park(abort)
        return records[start]

    async def append_shielded(self, event: E) -> Record[E]:
        """``append``, not cut by a cancel of the caller: as ``append`` inside
        ``trio.CancelScope(shield=True)`` (for a record that must not be lost to a cancel,
        such as the runtime's lifecycle events). An inline commit (nothing queued, nothing to
        group) needs no scope for it: it has no schedule point a cancel could cut but the
        check before it, which it leaves out (a scope costs ~300 Python bytecodes, issue 16).
        """
        if not self._batches and self._inline and type(event) in self._accepting:
            return (await self._append_many_inline((event,), shielded=True))[0]
        with trio.CancelScope(shield=True):
            record = await self.append(event)
        return record

    def _check_append(self, event: Any) -> None:
        """The slow path of append's check: raise unless the journal takes ``event``."""
        self._check_usable()
        if not isinstance(event, self._classes):
            raise TypeError(f"cannot append {type(event).__name__}: not part of the event type")

    async def _append_many_inline(
        self, events: Sequence[E], shielded: bool = False
    ) -> list[Record[E]]:
        # A cancel before the commit withdraws the events, as a queued append's would; once
        # committed the append succeeds (the checkpoint after it cannot raise Cancelled).
        # ``shielded`` (append_shielded): no cancel withdraws them.
        # The commit is done when it returns: nothing to wait for, so the caller goes on in
        # the same step instead of one scheduler pass later (a task switch per append saved:
        # issue 16). For fairness, every INLINE_STREAK-th inline commit in a row also yields
        # (as the actors' loops do every BATCH messages): a task that appends in a loop
        # cannot hold the event loop for long.
        if not shielded:
            await trio.lowlevel.checkpoint_if_cancelled()
        now = self._clock()
        records = self._store.stage_many(events, ts=[now] * len(events))
        try:
            self._store.flush()
        except DiskFullError:
            if not self._may_hold():
                raise
            # Nothing of it is in the file (the store rolled back): it becomes the head of
            # the queue, which the committer holds until the disk takes it.
            if not shielded:
                return await self._append_queued(events)
            with trio.CancelScope(shield=True):
                queued = await self._append_queued(events)
            return queued
        if not self._complete(records):
            raise self._failed_error()
        self._inline_streak += 1
        # A bounded subscriber takes about one record per scheduler pass: an appender going on
        # without a pass would cut it off (SubscriberOverflowError) though it keeps up, so
        # while one is subscribed every inline commit yields, as before the streak.
        if self._inline_streak >= INLINE_STREAK or self._bounded_subscribers:
            self._inline_streak = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return records

    async def append_many(self, events: Iterable[E]) -> list[Record[E]]:
        """Append events as one unit (contiguous seqs, one commit); returns their records."""
        events = list(events)
        self._check_usable()
        accepting = self._accepting
        for event in events:
            if type(event) not in accepting:
                self._check_append(event)
        if not events:
            await trio.lowlevel.checkpoint()
            return []
        batches = self._batches
        if not batches and self._inline:
            # As append's: nothing queued, nothing to group, so no trip through the
            # committer (a task switch and a wake-up less per append_many).
            return await self._append_many_inline(events)
        return await self._append_queued(events)

    async def _append_queued(self, events: Sequence[E]) -> list[Record[E]]:
        """``events`` as one entry of the open batch (a new one if none is open), parked
        until it is committed (``append_many``'s queued path, and an inline commit the disk
        refused, held from then on)."""
        batches = self._batches
        batch = batches[-1] if batches else None
        if batch is None or (batch.count and batch.count + len(events) > self._max_batch):
            batch = self._open_batch()
        start = len(batch.events)
        k = len(batch.tasks)
        abort = batch.aborts[k] if k < len(batch.aborts) else self._new_abort(batch)
        batch.tasks.append(_current_task())
        batch.starts.append(start)
        batch.events.extend(events)
        batch.ts.extend([self._clock()] * len(events))
        batch.count += len(events)
        committer = self._idle_committer
        if committer is not None:
            self._idle_committer = None
            _reschedule(committer)
        records: list[Record[E]] = await _park(abort)
        return records[start : start + len(events)]

    @asynccontextmanager
    async def subscribe(
        self, max_buffer: float = 1024
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Record[E]]]:
        """A channel of every record made durable from now on (see "Slow subscribers")."""
        self._check_usable()
        send, receive = trio.open_memory_channel[Record[Any]](max_buffer)
        sub = _Subscriber(send, max_buffer)
        self._subscribers.append(sub)
        self._bounded_subscribers += max_buffer != math.inf
        try:
            async with receive:
                yield receive
        finally:
            self._forget_subscriber(sub)
            send.close()
        if sub.missed_seq is not None:
            raise SubscriberOverflowError(sub.missed_seq, max_buffer)

    @contextmanager
    def listen(
        self,
        fn: Callable[[list[Record[E]]], None],
        on_end: Callable[[Exception], None] | None = None,
    ) -> Iterator[Listener]:
        """Call ``fn(records)`` with every batch of records made durable from now on, in the
        committing task right after they are applied (see "Listeners"): it must neither
        block nor raise, nor keep or change the list. ``on_end(error)``, if given, is called
        once if the journal fails or closes while listened to (it must not block or raise
        either)."""
        self._check_usable()
        listener = Listener(fn, on_end)
        self._listeners.append(listener)
        try:
            yield listener
        finally:
            listener.active = False
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- appending --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise JournalFailedError(
                "the journal stopped after an earlier failure; restart from the log"
            ) from self._failure
        if self._closing:
            raise LogClosedError("the journal is closed; append inside open_journal()")

    def _open_batch(self) -> _Batch:
        spare = self._spare_batches
        batch = spare.pop() if spare else _Batch()
        self._batches.append(batch)
        return batch

    def _new_abort(self, batch: _Batch) -> Callable[[Any], trio.lowlevel.Abort]:
        """The abort callback of ``batch``'s next slot, made for it and kept (see _Batch)."""
        abort = _partial(self._withdraw, batch, len(batch.aborts))
        batch.aborts.append(abort)
        return abort

    def _recycle(self, batch: _Batch) -> None:
        # Only once every task of the batch has been rescheduled: trio then never calls
        # their abort callbacks again, so the slots (and callbacks) may serve new appends.
        if len(self._spare_batches) < 2:
            batch.reset()
            self._spare_batches.append(batch)

    def _queued_events(self) -> int:
        """Events waiting for a commit (the open batches' and the held batch's entries not
        withdrawn)."""
        held = self._held_batch
        return sum(batch.count for batch in self._batches) + (held.count if held else 0)

    def _refuse(self) -> None:
        """No more appends: the journal failed or is closing (see append's check)."""
        self._accepting = frozenset()

    def _withdraw(self, batch: _Batch, k: int, _: Any = None) -> trio.lowlevel.Abort:
        """Entry ``k`` of ``batch`` is cancelled while parked: withdrawn if still queued."""
        if batch.taken:
            # Being written: it cannot be withdrawn; it waits for that one commit (a held
            # batch withdraws it if that attempt fails: see _hold).
            batch.cancels.append((k, _))
            return trio.lowlevel.Abort.FAILED
        start, end = batch.span(k)
        batch.tasks[k] = None
        batch.withdrawn += 1
        batch.count -= end - start
        if not batch.count and batch in self._batches:
            self._batches.remove(batch)
        return trio.lowlevel.Abort.SUCCEEDED

    async def _park_committer(self) -> None:
        self._idle_committer = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle_committer = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    # -- committing -------------------------------------------------------------------------

    async def _run_committer(self) -> None:
        idle = True
        while True:
            while not self._batches:
                await self._park_committer()
                idle = True
            if idle:
                # Just woken from idle: one pass of the scheduler lets every appender that
                # is already runnable join this batch; max_delay may hold it open longer.
                await trio.lowlevel.checkpoint()
                if self._max_delay > 0:
                    with trio.move_on_after(self._max_delay):
                        while self._queued_events() < self._max_batch:
                            await self._park_committer()
            # Appends that queued up during the previous commit go at once, no extra pass.
            with trio.CancelScope(shield=True):
                await self._commit_one_batch()
            idle = False

    def _take_batch(self) -> _Batch | None:
        # The oldest open batch, whole: up to max_batch events (an append_many is never
        # split). Splitting the queue to overlap one half's fsync with the other half's
        # appenders was tried: the worker thread and the trio thread then convoy on the GIL,
        # and throughput fell by 30-80%. One batch at a time, all of it, is faster.
        # Measured again (issue 16, 256 appenders, max_batch=128): with to_thread the
        # thread's start waited behind the 128 woken appenders (limiter checkpoint, 384 us);
        # started at once, the write + fsync of 128 records took 469 us against 254 for 256
        # alone (the worker needs the GIL between its syscalls; 537-556 against 337-623
        # with the journal's own thread, on a noisy disk) and two fsyncs per 256 records
        # cost more than the overlap gains: bench/eventlog.py prints that row.
        if not self._batches:
            return None
        batch = self._batches.popleft()
        batch.taken = True
        return batch if batch.count else None

    async def _commit_one_batch(self) -> None:
        """Persist, apply, publish and answer one batch. Never raises (answers carry errors)."""
        batch = self._take_batch()
        if batch is None:
            return
        tasks = batch.tasks
        if self._failure is not None:
            self._answer_all(tasks, self._failed_error())
            return
        keep: list[int] | None = None
        events, stamps = batch.events, batch.ts
        if batch.withdrawn:
            # Leave the withdrawn entries' events out; the others keep their positions.
            keep = [i for k, t in enumerate(tasks) if t is not None for i in range(*batch.span(k))]
            events = [events[i] for i in keep]
            stamps = [stamps[i] for i in keep]
        try:
            records = await self._persist(events, stamps)
        except LogWriteError as exc:
            if not (isinstance(exc, DiskFullError) and self._may_hold()):
                self._answer_all(tasks, exc)
                return
            held = await self._hold(batch, exc)
            if held is None:
                return  # answered otherwise (its patience ran out), or every entry left
            keep, records = held
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._fail_everyone(exc, tasks)
                raise
            # Not the disk: most likely one event that does not encode. Commit the entries
            # one by one so that only the culprit's append fails.
            await self._commit_one_by_one(batch, exc)
            return
        if keep is not None:
            by_position: list[Any] = [None] * len(batch.events)
            for i, record in zip(keep, records, strict=True):
                by_position[i] = record
            records_at = by_position
        else:
            records_at = records
        if not self._complete(records):
            self._answer_all(tasks, self._failed_error())
            return
        answer = _Answer(records_at)
        reschedule = _reschedule
        if keep is None:
            # Nothing withdrawn: every entry's task is there.
            for parked in cast("list[trio.lowlevel.Task]", tasks):
                reschedule(parked, answer)
        else:
            for task in tasks:
                if task is not None:
                    reschedule(task, answer)
        self._recycle(batch)

    # -- holding through a full disk ------------------------------------------------------------

    def _may_hold(self) -> bool:
        """Whether a batch the disk refused is held (see "Holding through a full disk"):
        opted in, not stopped, not closing, and no hold spent since the last write."""
        return (
            self._hold_patience is not None
            and not self._closing
            and (self._hold_spent_at is None or self._last_seq > self._hold_spent_at)
        )

    async def _hold(
        self, batch: _Batch, exc: DiskFullError
    ) -> tuple[list[int] | None, list[Record[Any]]] | None:
        """Write ``batch`` again, with a growing pause, until the disk takes it: then its
        ``(keep, records)`` (the positions written, None for all, as in _commit_one_batch).
        None once it was answered otherwise: its patience ran out or the hold was stopped
        (its appenders get ``exc``, the last refusal), or every appender left.

        The batch is not in the queue meanwhile, and the inline path is closed, so every
        later append waits behind it. Between two attempts its entries may be withdrawn
        (``taken`` is False then); one cancelled while an attempt was in flight is withdrawn
        once that attempt failed (``batch.cancels``)."""
        patience = self._hold_patience
        assert patience is not None
        self._held_batch = batch
        self._held_since = self._clock()
        self._holds += 1
        inline, self._inline = self._inline, False
        wakeup = self._hold_wakeup = trio.Event()
        started = trio.current_time()
        deadline = started + patience
        delay = HOLD_FIRST_RETRY
        log.warning(
            "event log %r: the disk is full; holding %d append(s), written again for up to"
            " %g s (free space on that disk)",
            exc.path,
            batch.count,
            patience,
        )
        try:
            while True:
                self._withdraw_cancelled(batch)
                if not batch.count:
                    return None  # every appender left: nothing to write
                if self._hold_patience is None or self._closing or trio.current_time() >= deadline:
                    self._hold_spent_at = self._last_seq
                    self._answer_all(batch.tasks, exc)
                    return None
                batch.taken = False  # withdrawable while it waits
                with trio.move_on_at(min(deadline, trio.current_time() + delay)):
                    await wakeup.wait()
                batch.taken = True
                delay = min(2 * delay, HOLD_MAX_RETRY)
                if not batch.count or self._hold_patience is None or self._closing:
                    continue  # said above
                keep: list[int] | None = None
                events, stamps = batch.events, batch.ts
                if batch.withdrawn:
                    keep = [
                        i
                        for k, t in enumerate(batch.tasks)
                        if t is not None
                        for i in range(*batch.span(k))
                    ]
                    events = [events[i] for i in keep]
                    stamps = [stamps[i] for i in keep]
                try:
                    records = await self._persist(events, stamps)
                except DiskFullError as again:
                    exc = again
                    continue
                except Exception as other:  # another write error, not the disk's fullness
                    self._answer_all(batch.tasks, other)
                    return None
                except BaseException as fatal:
                    self._fail_everyone(fatal, batch.tasks)
                    raise
                log.warning(
                    "event log %r: written again after %.1f s on a full disk; appends go on",
                    exc.path,
                    trio.current_time() - started,
                )
                return keep, records
        finally:
            self._held_batch = None
            self._held_since = None
            self._hold_wakeup = None
            self._inline = inline

    def _fail_everyone(self, exc: BaseException, tasks: list[trio.lowlevel.Task | None]) -> None:
        """KeyboardInterrupt and the like during a commit: the journal fails, and nobody may
        stay parked forever (``tasks``, the batch's, and every queued batch's)."""
        self._fail(exc)
        self._answer_all(tasks, self._failed_error())
        for queued in self._batches:
            queued.taken = True
            self._answer_all(queued.tasks, self._failed_error())
        self._batches.clear()

    def _withdraw_cancelled(self, batch: _Batch) -> None:
        """Withdraw the entries of a held batch cancelled while an attempt was in flight
        (that attempt failed: nothing of them is in the file) and deliver their cancel."""
        for k, raise_cancel in batch.cancels:
            task = batch.tasks[k]
            if task is None:
                continue
            start, end = batch.span(k)
            batch.tasks[k] = None
            batch.withdrawn += 1
            batch.count -= end - start
            _reschedule(task, outcome.capture(raise_cancel))
        batch.cancels.clear()

    async def _commit_one_by_one(self, batch: _Batch, exc: Exception) -> None:
        """A batch failed with ``exc``, not the disk's fault: commit its entries one by one,
        so that only the entries that fail again fail (each with its own error)."""
        live = [k for k, task in enumerate(batch.tasks) if task is not None]
        if len(live) == 1:
            self._answer_all(batch.tasks, exc)
            return
        records_at: list[Any] = [None] * len(batch.events)
        answer = _Answer(records_at)
        for k in live:
            task = batch.tasks[k]
            assert task is not None
            if self._failure is not None:
                _reschedule(task, outcome.Error(self._failed_error()))
                continue
            start, end = batch.span(k)
            try:
                records = await self._persist(batch.events[start:end], batch.ts[start:end])
            except Exception as one_exc:
                _reschedule(task, outcome.Error(one_exc))
                continue
            records_at[start:end] = records
            if self._complete(records):
                _reschedule(task, answer)
            else:
                _reschedule(task, outcome.Error(self._failed_error()))

    async def _persist(self, events: list[Any], stamps: list[float]) -> list[Record[Any]]:
        # Encoding is CPU work: do it here. Only the write and fsync (which release the GIL)
        # go to the worker thread, so the appenders answered by the previous commit can
        # run meanwhile without the two threads convoying on the GIL.
        # The write and fsync run in the journal's own thread (_CommitThread), except under
        # trio's MockClock: a test's mock time counts a task waiting on any thread as idle
        # and may leap ahead, so there the commit goes through trio.to_thread.run_sync,
        # which the tests' fixtures run inline and whose default limiter a harness watches
        # to know a commit is in flight.
        thread = self._commit_thread
        if self._threaded and thread is None and not _mock_clock():
            # Started before anything is staged: a thread that cannot start fails the
            # batch with nothing left in the store's buffer (found by review).
            thread = self._commit_thread = _CommitThread()
        records = self._store.stage_many(events, ts=stamps)
        try:
            if thread is not None:
                await thread.run(self._store.flush)
            elif self._threaded:
                limiter = _ImmediateLimiter(trio.to_thread.current_default_thread_limiter())
                # trio takes any CapacityLimiter-like object (acquire/release on behalf of).
                await trio.to_thread.run_sync(
                    self._store.flush, limiter=cast("trio.CapacityLimiter", limiter)
                )
            else:
                self._store.flush()
        except LogWriteError:
            raise  # the store rolled itself back to its last durable record
        except BaseException as exc:
            # Failed between staging and the disk, not by the disk: the staged records must
            # not reach the file with a later flush (or the close), or the log would hold
            # events the state never applied. If they may have reached the OS already, the
            # log and the state can no longer be told to agree: the journal stops.
            if not self._store.discard_staged(records):
                self._fail(exc)
            raise
        return records

    def _complete(self, records: list[Record[Any]]) -> bool:
        """Count, apply and publish durable records; False if ``apply`` failed the journal."""
        self._commits += 1
        n = len(records)
        self._appended += n
        if n > self._largest:
            self._largest = n
        if n:
            self._last_seq = records[-1].seq
        if self._apply is not None:
            apply = self._apply
            state = self._state
            for record in records:
                try:
                    state = apply(state, record.event)
                except Exception as exc:
                    exc.add_note(f"while applying record seq {record.seq} in the journal")
                    self._fail(exc)
                    return False
            self._state = state
        if self._listeners:
            self._notify(records)
        if self._subscribers:
            self._publish(records)
        every = self._snap_every
        if every and self._last_seq // every > self._snap_seq // every and records:
            self._take_snapshot(records[-1].ts)
        return True

    # -- snapshots --------------------------------------------------------------------------

    def _take_snapshot(self, last_ts: float) -> None:
        seq = self._last_seq
        self._snap_seq = seq
        if self._closing:
            return
        try:
            payload = msgspec.msgpack.encode(self._state)
        except (msgspec.EncodeError, TypeError, OverflowError) as exc:
            # A state that cannot be encoded never will be: stop trying, say why.
            self._snap_every = 0
            self._snapshot_error = f"snapshots stopped: the state cannot be encoded: {exc}"
            return
        # Written in order; if the disk falls this far behind, the oldest waiting is dropped
        # (the newest matter most: they make replays of the latest records fast).
        if len(self._snap_pending) >= _MAX_PENDING_SNAPSHOTS:
            self._snap_pending.popleft()
        self._snap_pending.append((seq, last_ts, payload))
        self._snap_wakeup.set()

    async def _run_snapshotter(self) -> None:
        # Runs until the journal closes and every snapshot taken before that is written.
        pending = self._snap_pending
        while True:
            while not pending:
                if self._closing:
                    return
                await self._snap_wakeup.wait()
                self._snap_wakeup = trio.Event()
            seq, last_ts, payload = pending.popleft()
            if self._held_since is not None:
                # The log's disk is full: a snapshot would only fill it further.
                self._snapshot_error = f"snapshot at seq {seq} skipped: the disk is full"
                continue
            try:
                await trio.to_thread.run_sync(self._write_snapshot, seq, last_ts, payload)
            except (OSError, SnapshotError) as exc:
                # A snapshot only makes replays faster: the journal goes on without it.
                self._snapshot_error = f"snapshot at seq {seq} not written: {exc}"
            else:
                self._snapshots += 1

    def _write_snapshot(self, seq: int, last_ts: float, payload: bytes) -> None:
        os.makedirs(self._snap_dir, mode=0o700, exist_ok=True)
        path = snapshot_file(self._snap_dir, seq, self._snap_type)
        # The first snapshot is decoded back as state_type (a state type that does not
        # round-trip is caught once, loudly); later ones have the same shape.
        write_snapshot_payload(
            path, payload, seq, self._snap_type, last_ts=last_ts, validate=not self._snapshots
        )
        if self._snap_keep:
            prune_snapshots(self._snap_dir, self._snap_type, self._snap_keep)

    def _publish(self, records: list[Record[Any]]) -> None:
        if not self._subscribers:
            return
        for sub in list(self._subscribers):
            for record in records:
                try:
                    sub.send.send_nowait(record)
                except trio.WouldBlock:
                    sub.missed_seq = record.seq
                    self._drop_subscriber(sub)
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._drop_subscriber(sub)
                    break

    def _notify(self, records: list[Record[Any]]) -> None:
        for listener in list(self._listeners):
            try:
                listener.fn(records)
            except Exception as exc:
                # Not the log's failure: the records are durable and applied. The listener
                # broke its contract; drop it, say so, and finish the commit.
                log.warning("a journal listener raised %s; it is dropped", type(exc).__name__)
                log.debug("journal listener failure", exc_info=True)
                listener.active = False
                listener.error = exc
                listener._raised.set()
                if listener in self._listeners:
                    self._listeners.remove(listener)

    def _drop_subscriber(self, sub: _Subscriber) -> None:
        self._forget_subscriber(sub)
        sub.send.close()

    def _forget_subscriber(self, sub: _Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            self._bounded_subscribers -= sub.max_buffer != math.inf

    def _answer_all(self, tasks: list[trio.lowlevel.Task | None], exc: BaseException) -> None:
        for task in tasks:
            if task is not None:
                _reschedule(task, outcome.Error(exc))

    def _failed_error(self) -> JournalFailedError:
        err = JournalFailedError(
            f"the journal stopped after {type(self._failure).__name__}; restart from the log"
        )
        err.__cause__ = self._failure
        return err

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._refuse()
        for sub in list(self._subscribers):
            self._drop_subscriber(sub)
        # The listeners stay (the journal publishes nothing more); those that asked learn
        # that no more records will come.
        for listener in list(self._listeners):
            listener._end(self._failed_error())

    async def _drain(self) -> None:
        """Commit whatever is still queued (called once the committer has stopped)."""
        while self._batches:
            await self._commit_one_batch()

    def _close_subscribers(self) -> None:
        for sub in list(self._subscribers):
            self._drop_subscriber(sub)
        for listener in self._listeners:
            listener.active = False
            listener._end(LogClosedError("the journal is closed"))
        self._listeners.clear()


@asynccontextmanager
async def open_journal(
    path_or_store: str | os.PathLike[str] | LogWriter[Any] | MemoryLog[Any],
    event_type: Any,
    *,
    sync: SyncPolicy | None = None,
    apply: Callable[[Any, Any], Any] | None = None,
    initial: Any = None,
    initial_seq: int = 0,
    clock: Callable[[], float] | None = None,
    max_batch: int = 1024,
    max_delay: float = 0.0,
    upcasters: Upcasters | None = None,
    snapshot_every: int | None = None,
    snapshot_dir: str | os.PathLike[str] | None = None,
    state_type: Any = None,
    keep_snapshots: int | None = None,
    hold_full_disk: float | None = None,
) -> AsyncIterator[Journal[Any, Any]]:
    """Open a journal over a log path (opened and closed here) or an open store.

    With a path, ``sync`` defaults to ``"batch"``. With a store (a :class:`LogWriter` or a
    :class:`MemoryLog`) its own policy applies; ``sync``, if given, must match it.
    If ``apply`` is given, ``journal.state`` starts as the fold of the existing records after
    ``initial_seq`` onto ``initial`` (pass a snapshot's state and seq there).

    ``snapshot_every=N`` (a file log with ``apply``) writes ``journal.state`` as a snapshot
    each time the log crosses a multiple of N records, into ``snapshot_dir`` (default
    ``LOG.snapshots``), one file per snapshot, and starts ``journal.state`` from the newest
    one that checks out (unless ``initial_seq`` is given). ``state_type`` (default
    ``type(initial)``) is what the snapshots decode as. A snapshot that cannot be written
    is reported in ``statistics().snapshot_error``; the journal goes on. When the state it
    starts from was folded over N records or more past the newest snapshot (its own replay,
    or ``initial_seq`` that far past the newest snapshot's name), it writes one at once.
    ``keep_snapshots=K`` deletes all but the newest K snapshots after each one written
    (default: keep them all). An ``initial_seq`` past the log's end raises
    :class:`LogShorterError` (the log changed since that state was read) and writes nothing.

    ``hold_full_disk=S``: a batch the disk refuses for being full is held and written again
    for up to ``S`` seconds before its appends fail (see "Holding through a full disk";
    :data:`HOLD_FIRST_RETRY`, :data:`HOLD_MAX_RETRY`). None (the default): they fail at once.
    """
    if hold_full_disk is not None and not hold_full_disk >= 0:
        raise ValueError(f"hold_full_disk must be a number of seconds >= 0, not {hold_full_disk}")
    if snapshot_every is not None and snapshot_every < 1:
        raise ValueError(f"snapshot_every must be at least 1, not {snapshot_every}")
    if snapshot_every and apply is None:
        raise ValueError("snapshot_every needs apply: a snapshot is of journal.state")
    if snapshot_every and not isinstance(path_or_store, str | os.PathLike | LogWriter):
        raise ValueError("snapshot_every needs a log file (a path or a LogWriter)")
    if keep_snapshots is not None and keep_snapshots < 1:
        raise ValueError(f"keep_snapshots must be at least 1, not {keep_snapshots}")
    if state_type is None:
        state_type = type(initial)
    owned = isinstance(path_or_store, str | os.PathLike)
    journals: list[Journal[Any, Any]] = []  # the one opened below, once it is
    store: LogWriter[Any] | MemoryLog[Any]
    if isinstance(path_or_store, str | os.PathLike):
        store = await trio.to_thread.run_sync(
            lambda: open_writer(path_or_store, event_type, sync=sync or "batch", clock=clock)
        )
    else:
        store = path_or_store
        if sync is not None and sync != store.sync:
            raise ValueError(f"sync={sync!r} but the store was opened with sync={store.sync!r}")
    try:
        if initial_seq > store.last_seq:  # not this log's state: no snapshot may say it is
            raise LogShorterError(getattr(store, "path", "<memory>"), initial_seq, store.last_seq)
        snap_dir = ""
        if snapshot_every and isinstance(store, LogWriter):
            snap_dir = os.fspath(snapshot_dir or snapshots_dir(store.path))
        state = initial
        folded_from: int | None = None  # the seq the state was folded on from (a snapshot's)
        if (
            apply is not None
            and snap_dir
            and isinstance(store, LogWriter)
            and initial_seq == 0
            and store.last_seq > 0
        ):
            store.flush()
            log_path = store.path
            found = await trio.to_thread.run_sync(
                lambda: replay(
                    log_path,
                    event_type,
                    apply,
                    initial,
                    snapshot_dir=snap_dir,
                    state_type=state_type,
                    upcasters=upcasters,
                )
            )
            state = found.state
            folded_from = found.used_snapshot_seq or 0
        elif apply is not None and store.last_seq > initial_seq:
            state = await _replay_existing(
                store, event_type, apply, initial, initial_seq, upcasters
            )
        if snap_dir and folded_from is None and initial_seq:
            # A state the caller folded (a snapshot's, or its own read of the log): from the
            # newest snapshot at or before it, as far as their names tell.
            older = [seq for seq in list_snapshots(snap_dir, state_type) if seq <= initial_seq]
            folded_from = older[-1] if older else 0
        stale_ts: float | None = None  # the ts of the last record, if a snapshot is due now
        if (
            snapshot_every
            and folded_from is not None
            and isinstance(store, LogWriter)
            and store.last_seq - folded_from >= snapshot_every
        ):
            stale_ts = await _last_ts(store, event_type, upcasters)
        journal: Journal[Any, Any] = Journal(
            store,
            event_type,
            apply=apply,
            initial=state,
            clock=clock or time.time,
            max_batch=max_batch,
            max_delay=max_delay,
            snapshot_every=snapshot_every or 0,
            snapshot_dir=snap_dir,
            state_type=state_type,
            keep_snapshots=keep_snapshots or 0,
            hold_full_disk=hold_full_disk,
        )
        if stale_ts is not None:
            journal._take_snapshot(stale_ts)  # written by the snapshot task, started below
        # The committer is shielded from cancellation from outside: when the scope around
        # the journal is cancelled, the body's shielded clean-up (an actor system logging
        # its shutdown) must still get its appends committed, not park forever. It stops
        # when the body is done.
        journals.append(journal)  # its commit thread is stopped on the way out, however
        committer = trio.CancelScope(shield=True)

        async def run_committer() -> None:
            with committer:
                await journal._run_committer()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_committer)
            if snap_dir:
                nursery.start_soon(journal._run_snapshotter)
            try:
                yield journal
            finally:
                journal._closing = True
                journal._refuse()
                journal.stop_holding()  # a held batch fails now: the process is going away
                committer.cancel()
                # The snapshot task writes what it was given, then returns.
                journal._snap_wakeup.set()
        with trio.CancelScope(shield=True):
            await journal._drain()
        journal._close_subscribers()
    finally:
        for opened in journals:
            if opened._commit_thread is not None:
                opened._commit_thread.stop()
        if owned:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close)
        else:
            store.flush()
    if journal._failure is not None:
        raise journal._failed_error()


async def _last_ts(
    store: LogWriter[Any], event_type: Any, upcasters: Upcasters | None
) -> float | None:
    """The ts of the log's last record (through the index), None if it holds no event (a
    lost record's place holder, in a salvaged log)."""
    store.flush()
    path, seq = store.path, store.last_seq

    def last() -> float | None:
        records = read(path, event_type, start_seq=seq, stop_seq=seq, upcasters=upcasters)
        record = next(records, None)
        return record.ts if record is not None else None

    return await trio.to_thread.run_sync(last)


async def _replay_existing(
    store: LogWriter[Any] | MemoryLog[Any],
    event_type: Any,
    apply: Callable[[Any, Any], Any],
    initial: Any,
    initial_seq: int,
    upcasters: Upcasters | None,
) -> Any:
    if isinstance(store, MemoryLog):
        return fold(store.records(start_seq=initial_seq + 1, upcasters=upcasters), apply, initial)
    store.flush()
    path = store.path
    return await trio.to_thread.run_sync(
        lambda: fold(
            read(path, event_type, start_seq=initial_seq + 1, upcasters=upcasters), apply, initial
        )
    )
