"""``MemoryLog``: the writer contract of a log file, kept in memory (for tests and harnesses).

It encodes every event with the same msgspec encoder and decodes it back on ``records()``, so
an event that would not survive the file does not survive here either. Durability is modelled
with the same write-out points as :class:`eventlog.LogWriter`: under ``always`` every append is
durable at once; under ``batch`` after ``max_batch`` pending records or a ``flush()``; under
``none`` after 64 KiB of pending bytes or a ``flush()``. :meth:`MemoryLog.crash` drops every
record that was not durable yet, as a crash of the process would, and :meth:`reopen` gives a
fresh writer over what survived (as reopening the file would).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from ._format import MAX_PAYLOAD
from .codec import EventCodec, Upcasters
from .errors import LogClosedError, RecordTooLargeError
from .record import Record
from .writer import BUFFER_LIMIT, SyncPolicy, check_sync, event_classes

E = TypeVar("E")


class _Storage:
    """The "disk" several MemoryLog writers (one at a time) share across reopen/crash."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float, bytes]] = []
        self.durable = 0  # frames[:durable] survive a crash


class MemoryLog(Generic[E]):
    """An in-memory log with the :class:`eventlog.LogWriter` contract, plus ``crash()``."""

    path: str | None = None

    def __init__(
        self,
        event_type: Any,
        *,
        sync: SyncPolicy = "batch",
        clock: Callable[[], float] | None = None,
        max_batch: int = 1024,
        _storage: _Storage | None = None,
    ) -> None:
        check_sync(sync)
        self.event_type = event_type
        self.sync: SyncPolicy = sync
        self.max_batch = max_batch
        self.dropped_bytes = 0
        self.notice: str | None = None
        self._clock = clock or time.time
        self._codec = EventCodec(event_type)
        self._classes = event_classes(event_type)
        self._class_set = frozenset(self._classes)
        self._storage = _storage or _Storage()
        self._pending_bytes = 0
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The seq of the last appended record (0 when empty)."""
        return len(self._storage.frames)

    @property
    def durable_seq(self) -> int:
        """The seq of the last record that would survive :meth:`crash`."""
        return self._storage.durable

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def append(self, event: E) -> Record[E]:
        """Append one event (see :meth:`eventlog.LogWriter.append`)."""
        return self.append_many([event])[0]

    def append_many(
        self, events: Iterable[E], *, ts: Sequence[float] | None = None
    ) -> list[Record[E]]:
        """Append events as one unit: all encoded, or none."""
        records = self.stage_many(events, ts=ts)
        pending = len(self._storage.frames) - self._storage.durable
        if (
            self.sync == "always"
            or (self.sync == "batch" and pending >= self.max_batch)
            or (self.sync == "none" and self._pending_bytes >= BUFFER_LIMIT)
        ):
            self.flush()
        return records

    def stage_many(
        self, events: Iterable[E], *, ts: Sequence[float] | None = None
    ) -> list[Record[E]]:
        """Add events without making them durable; :meth:`flush` does that."""
        if self._closed:
            raise LogClosedError("memory log writer is closed")
        events = list(events)
        if ts is not None and len(ts) != len(events):
            raise ValueError(f"got {len(events)} events but {len(ts)} timestamps")
        encode = self._codec.encoder.encode
        stamps = itertools.repeat(self._clock() if events else 0.0) if ts is None else ts
        frames = self._storage.frames
        seq = len(frames)
        class_set = self._class_set
        new: list[tuple[int, float, bytes]] = []
        records: list[Record[E]] = []
        size = 0
        for event, t in zip(events, stamps, strict=False):  # lengths checked above
            if type(event) not in class_set and not isinstance(event, self._classes):
                raise TypeError(f"cannot append {type(event).__name__}: not part of the event type")
            payload = encode(event)
            if len(payload) > MAX_PAYLOAD:
                raise RecordTooLargeError(len(payload), MAX_PAYLOAD)
            seq += 1
            new.append((seq, t, payload))
            records.append(Record(seq, t, event))
            size += 24 + len(payload)
        frames.extend(new)
        self._pending_bytes += size
        return records

    def discard_staged(self, records: Sequence[Record[E]]) -> bool:
        """Take back ``records``, the last :meth:`stage_many` call's, while they are not
        durable yet (see :meth:`eventlog.LogWriter.discard_staged`)."""
        if not records:
            return True
        frames = self._storage.frames
        first = records[0].seq - 1
        if self._closed or len(frames) != records[-1].seq or self._storage.durable > first:
            return False
        del frames[first:]
        self._pending_bytes = 0
        return True

    def flush(self) -> None:
        """Make every appended record durable."""
        if self._closed:
            return
        self._storage.durable = len(self._storage.frames)
        self._pending_bytes = 0

    def close(self) -> None:
        """Flush and close. Idempotent."""
        self.flush()
        self._closed = True

    def crash(self) -> int:
        """Drop every record that is not durable yet (a simulated crash); return how many."""
        storage = self._storage
        lost = len(storage.frames) - storage.durable
        del storage.frames[storage.durable :]
        self._pending_bytes = 0
        self._closed = True
        return lost

    def reopen(self) -> MemoryLog[E]:
        """A new writer over the records that survived (the old one must be closed/crashed)."""
        if not self._closed:
            raise LogClosedError("close() or crash() the memory log before reopening it")
        return MemoryLog(
            self.event_type,
            sync=self.sync,
            clock=self._clock,
            max_batch=self.max_batch,
            _storage=self._storage,
        )

    def records(
        self,
        *,
        start_seq: int = 1,
        stop_seq: int | None = None,
        stop_ts: float | None = None,
        upcasters: Upcasters | None = None,
    ) -> Iterator[Record[E]]:
        """Every appended record (durable or not) in the range, decoded back from msgpack."""
        codec = self._codec if upcasters is None else EventCodec(self.event_type, upcasters)
        frames = self._storage.frames
        stop = len(frames) if stop_seq is None else min(stop_seq, len(frames))
        for seq, ts, payload in frames[max(start_seq, 1) - 1 : stop]:
            if stop_ts is not None and ts > stop_ts:
                return
            yield Record(seq, ts, codec.decode(payload, seq))

    def __enter__(self) -> MemoryLog[E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemoryLog sync={self.sync} last_seq={self.last_seq} durable={self.durable_seq}>"
