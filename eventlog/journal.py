"""The trio side: ``open_journal`` and ``Journal``: persist, then apply, then publish.

Many tasks call ``await journal.append(event)``. Each call joins a queue and parks; one
committer task takes the queue in order, writes it as one batch and makes it durable, then
folds the records into ``journal.state`` (if ``apply`` was given), then hands them to the
subscribers, and only then wakes the appenders with their records. So nothing can be observed
(by a subscriber, by the state, by the caller) that a replay of the log would not rebuild.

Group commit
------------
An fsync costs ~150 µs; trio runs many appenders in one scheduler pass. While one batch is
being fsynced (in a worker thread, ``trio.to_thread.run_sync``, so the event loop keeps
running), new appends pile up in the queue; the committer takes all of them (up to
``max_batch`` events) for the next fsync. Under load every fsync is shared by hundreds of
appends, and a lone appender waits for exactly one fsync. ``max_delay`` (default 0) lets the
committer also wait up to that long for a batch to fill, trading latency for fewer fsyncs at
low concurrency. Policies: ``batch`` = group commit with fsync; ``always`` = one fsync per
append call (no sharing: the strict baseline); ``none`` = group write, no fsync, no thread.

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

Failures: a failed write (e.g. ``DiskFullError``) fails exactly the appends of that batch (the
log was truncated back and stays valid) and the journal carries on. If ``apply`` raises, the
state can no longer be trusted: the journal fails, every later append raises
:class:`JournalFailedError`, and leaving ``open_journal`` raises it too.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import outcome
import trio

from .codec import Upcasters
from .errors import (
    JournalFailedError,
    LogClosedError,
    LogWriteError,
    SubscriberOverflowError,
)
from .memory import MemoryLog
from .reader import fold, read
from .record import Record
from .writer import LogWriter, SyncPolicy, event_classes, open_writer

E = TypeVar("E")
S = TypeVar("S")


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


class _Entry:
    """One append call waiting in the queue."""

    __slots__ = ("events", "in_flight", "journal", "single", "task", "ts")

    def __init__(
        self, journal: Journal[Any, Any], events: list[Any], ts: list[float], single: bool
    ) -> None:
        self.journal = journal
        self.task = trio.lowlevel.current_task()
        self.events = events
        self.ts = ts
        self.single = single  # answer with the record itself, not a list
        self.in_flight = False

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """Cancelled while parked: withdraw if still queued; once in flight, see it through."""
        if self.in_flight:
            return trio.lowlevel.Abort.FAILED
        self.journal._withdraw(self)
        return trio.lowlevel.Abort.SUCCEEDED


class _Subscriber:
    __slots__ = ("max_buffer", "missed_seq", "send")

    def __init__(self, send: trio.MemorySendChannel[Record[Any]], max_buffer: float) -> None:
        self.send = send
        self.max_buffer = max_buffer
        self.missed_seq: int | None = None


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
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._store = store
        self._classes = event_classes(event_type)
        self._apply = apply
        self._state = initial
        self._clock = clock
        self._sync = store.sync
        self._max_batch = 1 if store.sync == "always" else max_batch
        self._max_delay = max_delay
        self._threaded = isinstance(store, LogWriter) and store.sync != "none"
        self._queue: deque[_Entry] = deque()
        self._queued_events = 0
        self._idle_committer: trio.lowlevel.Task | None = None
        self._subscribers: list[_Subscriber] = []
        self._closing = False
        self._failure: BaseException | None = None
        self._appended = 0
        self._commits = 0
        self._largest = 0
        self._last_seq = store.last_seq

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
            queued=self._queued_events,
            subscribers=len(self._subscribers),
            failed=self._failure is not None,
        )

    async def append(self, event: E) -> Record[E]:
        """Append one event; returns its record once durable, applied and published."""
        if self._failure is not None or self._closing:
            self._check_usable()
        if not isinstance(event, self._classes):
            raise TypeError(f"cannot append {type(event).__name__}: not part of the event type")
        record: Record[E] = await self._wait(_Entry(self, [event], [self._clock()], True))
        return record

    async def append_many(self, events: Iterable[E]) -> list[Record[E]]:
        """Append events as one unit (contiguous seqs, one commit); returns their records."""
        events = list(events)
        self._check_usable()
        for event in events:
            if not isinstance(event, self._classes):
                raise TypeError(f"cannot append {type(event).__name__}: not part of the event type")
        if not events:
            await trio.lowlevel.checkpoint()
            return []
        now = self._clock()
        records: list[Record[E]] = await self._wait(
            _Entry(self, events, [now] * len(events), False)
        )
        return records

    @asynccontextmanager
    async def subscribe(
        self, max_buffer: float = 1024
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Record[E]]]:
        """A channel of every record made durable from now on (see "Slow subscribers")."""
        self._check_usable()
        send, receive = trio.open_memory_channel[Record[Any]](max_buffer)
        sub = _Subscriber(send, max_buffer)
        self._subscribers.append(sub)
        try:
            async with receive:
                yield receive
        finally:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            send.close()
        if sub.missed_seq is not None:
            raise SubscriberOverflowError(sub.missed_seq, max_buffer)

    # -- appending --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise JournalFailedError(
                "the journal stopped after an earlier failure; restart from the log"
            ) from self._failure
        if self._closing:
            raise LogClosedError("the journal is closed; append inside open_journal()")

    async def _wait(self, entry: _Entry) -> Any:
        # wait_task_rescheduled is the cheapest park in trio and is itself the checkpoint.
        self._queue.append(entry)
        self._queued_events += len(entry.events)
        committer = self._idle_committer
        if committer is not None:
            self._idle_committer = None
            trio.lowlevel.reschedule(committer)
        return await trio.lowlevel.wait_task_rescheduled(entry.abort)

    def _withdraw(self, entry: _Entry) -> None:
        self._queue.remove(entry)
        self._queued_events -= len(entry.events)

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
            while not self._queue:
                await self._park_committer()
                idle = True
            if idle:
                # Just woken from idle: one pass of the scheduler lets every appender that
                # is already runnable join this batch; max_delay may hold it open longer.
                await trio.lowlevel.checkpoint()
                if self._max_delay > 0:
                    with trio.move_on_after(self._max_delay):
                        while self._queued_events < self._max_batch:
                            await self._park_committer()
            # Appends that queued up during the previous commit go at once, no extra pass.
            with trio.CancelScope(shield=True):
                await self._commit_one_batch()
            idle = False

    def _take_batch(self) -> list[_Entry]:
        # Everything queued, in order, up to max_batch events (an append_many is never split).
        # Splitting the queue to overlap one half's fsync with the other half's appenders was
        # tried: the worker thread and the trio thread then convoy on the GIL, and throughput
        # fell by 30-80%. One batch at a time, all of it, is faster.
        limit = self._max_batch
        batch: list[_Entry] = []
        count = 0
        queue = self._queue
        while queue and (not batch or count + len(queue[0].events) <= limit):
            entry = queue.popleft()
            entry.in_flight = True
            batch.append(entry)
            count += len(entry.events)
        self._queued_events -= count
        return batch

    async def _commit_one_batch(self) -> None:
        """Persist, apply, publish and answer one batch. Never raises (answers carry errors)."""
        batch = self._take_batch()
        if not batch:
            return
        if self._failure is not None:
            self._answer_all(batch, self._failed_error())
            return
        try:
            records = await self._persist(batch)
        except LogWriteError as exc:
            self._answer_all(batch, exc)
            return
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # KeyboardInterrupt and the like: nobody may stay parked forever.
                self._fail(exc)
                self._answer_all(batch, self._failed_error())
                self._answer_all(list(self._queue), self._failed_error())
                self._queue.clear()
                self._queued_events = 0
                raise
            # Not the disk: most likely one event that does not encode. Commit the entries
            # one by one so that only the culprit's append fails.
            if len(batch) == 1:
                self._answer_all(batch, exc)
                return
            for entry in batch:
                try:
                    records_one = await self._persist([entry])
                except Exception as one_exc:
                    self._answer_all([entry], one_exc)
                else:
                    self._complete([entry], records_one)
            return
        self._complete(batch, records)

    async def _persist(self, batch: list[_Entry]) -> list[Record[Any]]:
        events = [event for entry in batch for event in entry.events]
        stamps = [t for entry in batch for t in entry.ts]
        # Encoding is CPU work: do it here. Only the write and fsync (which release the GIL)
        # go to the worker thread, so the appenders answered by the previous commit can
        # run meanwhile without the two threads convoying on the GIL.
        records = self._store.stage_many(events, ts=stamps)
        if self._threaded:
            await trio.to_thread.run_sync(self._store.flush)
        else:
            self._store.flush()
        return records

    def _complete(self, batch: list[_Entry], records: list[Record[Any]]) -> None:
        self._commits += 1
        self._appended += len(records)
        self._largest = max(self._largest, len(records))
        if records:
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
                    self._answer_all(batch, self._failed_error())
                    return
            self._state = state
        self._publish(records)
        reschedule = trio.lowlevel.reschedule
        i = 0
        for entry in batch:
            if entry.single:
                reschedule(entry.task, outcome.Value(records[i]))
                i += 1
            else:
                n = len(entry.events)
                reschedule(entry.task, outcome.Value(records[i : i + n]))
                i += n

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

    def _drop_subscriber(self, sub: _Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        sub.send.close()

    def _answer_all(self, batch: list[_Entry], exc: BaseException) -> None:
        for entry in batch:
            trio.lowlevel.reschedule(entry.task, outcome.Error(exc))

    def _failed_error(self) -> JournalFailedError:
        err = JournalFailedError(
            f"the journal stopped after {type(self._failure).__name__}; restart from the log"
        )
        err.__cause__ = self._failure
        return err

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        for sub in list(self._subscribers):
            self._drop_subscriber(sub)

    async def _drain(self) -> None:
        """Commit whatever is still queued (called once the committer has stopped)."""
        while self._queue:
            await self._commit_one_batch()

    def _close_subscribers(self) -> None:
        for sub in list(self._subscribers):
            self._drop_subscriber(sub)


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
) -> AsyncIterator[Journal[Any, Any]]:
    """Open a journal over a log path (opened and closed here) or an open store.

    With a path, ``sync`` defaults to ``"batch"``. With a store (a :class:`LogWriter` or a
    :class:`MemoryLog`) its own policy applies; ``sync``, if given, must match it.
    If ``apply`` is given, ``journal.state`` starts as the fold of the existing records after
    ``initial_seq`` onto ``initial`` (pass a snapshot's state and seq there).
    """
    owned = isinstance(path_or_store, str | os.PathLike)
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
        state = initial
        if apply is not None and store.last_seq > initial_seq:
            state = await _replay_existing(
                store, event_type, apply, initial, initial_seq, upcasters
            )
        journal: Journal[Any, Any] = Journal(
            store,
            event_type,
            apply=apply,
            initial=state,
            clock=clock or time.time,
            max_batch=max_batch,
            max_delay=max_delay,
        )
        # The committer is shielded from cancellation from outside: when the scope around
        # the journal is cancelled, the body's shielded clean-up (an actor system logging
        # its shutdown) must still get its appends committed, not park forever. It stops
        # when the body is done.
        committer = trio.CancelScope(shield=True)

        async def run_committer() -> None:
            with committer:
                await journal._run_committer()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_committer)
            try:
                yield journal
            finally:
                journal._closing = True
                committer.cancel()
        with trio.CancelScope(shield=True):
            await journal._drain()
        journal._close_subscribers()
    finally:
        if owned:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close)
        else:
            store.flush()
    if journal._failure is not None:
        raise journal._failed_error()


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
