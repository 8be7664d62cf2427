"""``follow``: an async iterator (trio) that tails a log file as it grows.

Every ``poll_interval`` seconds it reads what was appended since the last look (at most
4 MiB per step, so a long backlog does not block the event loop), and yields each complete
record. An incomplete or checksum-bad frame at the end is a write in progress: it is read
again on the next poll. If intact records appear after a bad frame, that frame is damage in
the middle and ``CorruptLogError`` is raised. A path that does not exist yet is waited for.
Polling (not inotify) keeps it portable and works under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import trio

from ._format import (
    CHUNK,
    FRAME,
    FRAME_SIZE,
    HEADER_SIZE,
    check_header,
    crc32c_fn,
    describe_bad_frame,
    find_next_frame,
)
from .codec import EventCodec, Upcasters
from .errors import CorruptLogError, EventLogError, LogNotFoundError
from .reader import _open_for_read
from .record import Record


async def follow(
    path: str | os.PathLike[str],
    event_type: Any,
    *,
    start_seq: int = 1,
    poll_interval: float = 0.1,
    upcasters: Upcasters | None = None,
) -> AsyncIterator[Record[Any]]:
    """Yield every record with ``seq >= start_seq``, now and as they are appended, forever."""
    codec = EventCodec(event_type, upcasters)
    fd: int | None = None
    try:
        while fd is None:
            try:
                fd = _open_for_read(path)
            except LogNotFoundError:
                await trio.sleep(poll_interval)
        offset = HEADER_SIZE
        expected = 1
        header_ok = False
        while True:
            size = os.fstat(fd).st_size
            if not header_ok:
                header_ok = check_header(path, os.pread(fd, HEADER_SIZE, 0))
            elif size < offset:
                raise EventLogError(
                    f"event log {os.fspath(path)!r} shrank below what was already read; "
                    "it was replaced or rewritten, follow it again from the start"
                )
            progressed = False
            if header_ok and size > offset:
                data = os.pread(fd, min(size - offset, CHUNK), offset)
                n = len(data)
                mv = memoryview(data)
                p = 0
                while p + FRAME_SIZE <= n:
                    crc, length, seq, ts = FRAME.unpack_from(data, p)
                    end = p + FRAME_SIZE + length
                    if (
                        end > n
                        or seq != expected
                        or length < 1
                        or crc != crc32c_fn(mv[p + 4 : end])
                    ):
                        if end <= n or offset + n >= size:
                            _check_middle(path, data, p, expected, offset)
                        break
                    if seq >= start_seq:
                        yield Record(seq, ts, codec.decode(mv[p + FRAME_SIZE : end], seq))
                    expected += 1
                    p = end
                offset += p
                progressed = p > 0 and offset < size
            if progressed:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(poll_interval)
    finally:
        if fd is not None:
            os.close(fd)


def _check_middle(
    path: str | os.PathLike[str], data: bytes, p: int, expected: int, base: int
) -> None:
    """A bad frame at ``p``: raise if intact records follow it, else it is still being written."""
    if find_next_frame(data, p + 1, expected) >= 0:
        reason = describe_bad_frame(data, p, len(data), expected)
        raise CorruptLogError(path, base + p, expected, reason)
