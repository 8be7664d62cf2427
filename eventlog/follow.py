"""``follow``: an async iterator (trio) that tails a log file as it grows.

Every ``poll_interval`` seconds it reads what was appended since the last look (4 MiB per
step, or one whole record if it is larger, so a long backlog does not block the event loop),
and yields each complete record. An unterminated frame at the end (its declared length runs
past the end of the file) is a write in progress: it is read again on the next poll. A
complete frame that is wrong (bad CRC, wrong seq) is damage: if it is still wrong on the next
poll, ``CorruptLogError`` is raised. A record that does not decode (an event tag a newer
program wrote: ``UnknownEventError``) raises its error once every record before it was
yielded. A path that does not exist yet is waited for; one that cannot be opened (no read
permission) raises ``LogUnreadableError``.

Polling (not inotify) keeps it portable and works under ``trio.testing.MockClock``. The file
is opened only for the moment of each poll, so a follower that is simply dropped (a ``break``
out of ``async for``) holds no descriptor and needs no finalizer: it is a plain object with
``__anext__``, not an async generator.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from ._format import (
    CHUNK,
    FRAME,
    FRAME_SIZE,
    HEADER_SIZE,
    LOST_BYTE,
    MAX_PAYLOAD,
    check_header,
    crc32c_fn,
    damage_at,
)
from .codec import EventCodec, Upcasters
from .errors import EventLogError, LogNotFoundError
from .reader import _open_for_read
from .record import Record


class LogFollower:
    """The async iterator :func:`follow` returns."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        event_type: Any,
        *,
        start_seq: int,
        poll_interval: float,
        upcasters: Upcasters | None,
    ) -> None:
        self.path = os.fspath(path)
        self.start_seq = start_seq
        self.poll_interval = poll_interval
        self._codec = EventCodec(event_type, upcasters)
        self._offset = HEADER_SIZE  # file offset of the next frame to read
        self._expected = 1  # seq of that frame
        self._header_ok = False
        self._suspect = -1  # offset of a complete but bad frame seen once (raised if seen again)
        self._ready: deque[Record[Any]] = deque()
        # A record that did not decode (a newer program's event tag, a failing upcaster):
        # raised once the records before it have been yielded, and again on every call.
        self._failed: Exception | None = None

    def __aiter__(self) -> LogFollower:
        return self

    async def __anext__(self) -> Record[Any]:
        # Imported here, not at the top: ``import eventlog`` (a replay, a scan) needs no trio.
        import trio

        while not self._ready:
            if self._failed is not None:
                raise self._failed
            more = self._poll()
            if self._ready:
                break
            if self._failed is not None:
                raise self._failed
            if more:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(self.poll_interval)
        else:
            await trio.lowlevel.checkpoint()
        return self._ready.popleft()

    def _poll(self) -> bool:
        """Read what is new; True if it advanced and unread bytes remain (poll again at once)."""
        try:
            fd = _open_for_read(self.path)
        except LogNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            if not self._header_ok:
                self._header_ok = check_header(self.path, os.pread(fd, HEADER_SIZE, 0))
                if not self._header_ok:
                    return False
            if size < self._offset:
                raise EventLogError(
                    f"event log {self.path!r} shrank below what was already read; "
                    "it was replaced or rewritten, follow it again from the start"
                )
            available = size - self._offset
            if available == 0:
                return False
            # A chunk, or the whole of the next record if it is larger than a chunk.
            want = CHUNK
            if available >= FRAME_SIZE:
                length = FRAME.unpack(os.pread(fd, FRAME_SIZE, self._offset))[1]
                if 0 < length <= MAX_PAYLOAD:
                    want = max(CHUNK, FRAME_SIZE + length)
            data = os.pread(fd, min(available, want), self._offset)
            before = self._offset
            self._parse(data, fd, size)
        finally:
            os.close(fd)
        return self._offset != before and self._offset < size

    def _parse(self, data: bytes, fd: int, size: int) -> None:
        n = len(data)
        mv = memoryview(data)
        decode = self._codec.decode
        p = 0
        expected = self._expected
        while p + FRAME_SIZE <= n:
            crc, length, seq, ts = FRAME.unpack_from(data, p)
            end = p + FRAME_SIZE + length
            if end > n and 0 < length <= MAX_PAYLOAD and self._offset + end <= size:
                break  # complete in the file, not in this chunk: the next poll reads it
            if end > n or seq != expected or length < 1 or crc != crc32c_fn(mv[p + 4 : end]):
                # A torn or unfinished record is waited for; damage is raised. A complete
                # frame that is wrong is damage, but it is read once more on the next poll
                # before it is reported, in case it was caught mid-write.
                offset = self._offset + p
                error = damage_at(self.path, fd, offset, size, expected)
                if error is not None:
                    if self._suspect == offset:
                        raise error
                    self._suspect = offset
                break
            # (Not the place holder of a record salvage lost: it is no record.)
            lost = length == 1 and data[p + FRAME_SIZE] == LOST_BYTE
            if seq >= self.start_seq and not lost:
                try:  # (no cost in 3.11+ while nothing is raised)
                    event = decode(mv[p + FRAME_SIZE : end], seq)
                except Exception as exc:
                    # The records before it in this chunk are yielded first, then this.
                    self._failed = exc
                    break
                self._ready.append(Record(seq, ts, event))
            expected += 1
            p = end
        self._expected = expected
        self._offset += p


def follow(
    path: str | os.PathLike[str],
    event_type: Any,
    *,
    start_seq: int = 1,
    poll_interval: float = 0.1,
    upcasters: Upcasters | None = None,
) -> LogFollower:
    """Yield every record with ``seq >= start_seq``, now and as they are appended, forever.

    Use as ``async for record in eventlog.follow(path, Event): ...``; cancel or ``break`` to
    stop.
    """
    return LogFollower(
        path, event_type, start_seq=start_seq, poll_interval=poll_interval, upcasters=upcasters
    )
