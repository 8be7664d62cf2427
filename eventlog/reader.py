"""Reading a log: ``read`` (records), ``scan`` (validate without decoding) and ``fold``.

``read`` is the replay hot path, so its loop is written out by hand: the file is read in
4 MiB chunks (a larger record in one read of its own size), frames are sliced out of a
``memoryview`` (no copies), checked with one CRC32C call and decoded by one typed msgspec
``Decoder``. Only anomalies leave the loop, to :func:`eventlog._format.check_damage`, which
decides "torn tail, stop cleanly" versus "damaged record, raise ``CorruptLogError``".
:func:`inspect` answers "what is in this file?" without raising.

A file that is still being written is read up to the size it had when ``read`` opened it,
and to its last complete record within that size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import msgspec

from ._format import (
    CHUNK,
    FRAME,
    FRAME_SIZE,
    HEADER_SIZE,
    LOST_BYTE,
    MAX_PAYLOAD,
    check_damage,
    check_header,
    crc32c_fn,
)
from .codec import EventCodec, Upcasters
from .errors import (
    CorruptLogError,
    LogNotFoundError,
    LogUnreadableError,
    NotALogError,
    UnsupportedVersionError,
)
from .index import INDEX_EVERY, seek_seq
from .record import Record

S = TypeVar("S")
E = TypeVar("E")


class LogInfo(msgspec.Struct, frozen=True):
    """What :func:`scan` found: ``good_bytes`` end the last intact record, ``torn_bytes`` follow.

    A torn tail starts at offset ``good_bytes`` and is ``torn_bytes`` long (0: clean end).
    """

    path: str
    last_seq: int
    last_ts: float | None
    good_bytes: int
    torn_bytes: int
    file_size: int
    has_header: bool


LogState = Literal[
    "missing", "empty", "header-only", "ok", "torn", "corrupt", "not-a-log", "newer-version"
]


class LogStatus(msgspec.Struct, frozen=True):
    """What :func:`inspect` found at a path; ``message`` says it in one line.

    ``state`` is one of:

    ``missing``        no such file
    ``empty``          0 bytes, or a header cut short by a crash while the log was created
    ``header-only``    an intact header and no record
    ``ok``             intact records ``1..last_seq``
    ``torn``           intact records ``1..last_seq``, then a torn tail (a crash mid-append)
                       starting at ``offset``; a writer truncates it on open
    ``corrupt``        a damaged record at ``offset`` that should carry ``seq`` (0: the file
                       header); writers refuse it, ``salvage`` copies what is intact
    ``not-a-log``      a directory, a file eventlog did not write, or a file this process
                       may not open (``LogUnreadableError``: no read permission)
    ``newer-version``  an intact header from a newer eventlog
    """

    path: str
    state: LogState
    message: str
    last_seq: int = 0
    offset: int | None = None
    seq: int | None = None

    @property
    def has_records(self) -> bool:
        """Whether the log holds at least one intact record."""
        return self.last_seq > 0


def inspect(path: str | os.PathLike[str]) -> LogStatus:
    """Tell what ``path`` holds, without decoding or changing anything (see :class:`LogStatus`).

    A file that cannot be opened (no read permission) is ``not-a-log``, its message saying
    so; other errors of the file system (an I/O error while reading) propagate.
    """
    name = os.fspath(path)
    try:
        info = scan(path)
    except LogNotFoundError as exc:
        return LogStatus(name, "missing", str(exc))
    except NotALogError as exc:
        return LogStatus(name, "not-a-log", str(exc))
    except UnsupportedVersionError as exc:
        return LogStatus(name, "newer-version", str(exc))
    except CorruptLogError as exc:
        return LogStatus(name, "corrupt", str(exc), offset=exc.offset, seq=exc.seq)
    if not info.has_header:
        what = "0 bytes" if not info.file_size else "a header cut short by a crash"
        return LogStatus(name, "empty", f"event log {name!r} is empty ({what})")
    if info.torn_bytes:
        return LogStatus(
            name,
            "torn",
            f"event log {name!r} ends in a torn tail of {info.torn_bytes} bytes at offset "
            f"{info.good_bytes} after seq {info.last_seq} (an append cut short by a crash); "
            "opening it for writing truncates the tail",
            last_seq=info.last_seq,
            offset=info.good_bytes,
        )
    if not info.last_seq:
        return LogStatus(name, "header-only", f"event log {name!r} has a header and no record")
    return LogStatus(
        name, "ok", f"event log {name!r} holds records 1..{info.last_seq}", info.last_seq
    )


def _open_for_read(path: str | os.PathLike[str]) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise LogNotFoundError(path) from None
    except IsADirectoryError:
        raise NotALogError(path, "it is a directory; pass the log file's path") from None
    except OSError as exc:  # no read permission, a symlink loop...: typed, one line
        raise LogUnreadableError(path, exc) from exc
    if os.path.isdir(path):
        os.close(fd)
        raise NotALogError(path, "it is a directory; pass the log file's path")
    return fd


def walk_frames(
    path: str | os.PathLike[str], fd: int, size: int, start: int = HEADER_SIZE, seq: int = 1
) -> Iterator[tuple[int, int, float, memoryview]]:
    """Yield ``(offset, seq, ts, payload)`` of every intact record from ``start``.

    Stops cleanly at a torn tail; raises ``CorruptLogError`` on a damaged record. The
    payload memoryview is only valid until the next item.
    """
    unpack = FRAME.unpack_from
    pos_abs = start  # file offset of data[0]
    data = b""
    p = 0
    want = CHUNK  # bytes to read next: a chunk, or the rest of a record larger than one
    while True:
        chunk = os.pread(fd, min(want, size - pos_abs - len(data)), pos_abs + len(data))
        data = data[p:] + chunk
        pos_abs += p
        p = 0
        n = len(data)
        at_eof = pos_abs + n >= size or not chunk
        mv = memoryview(data)
        want = CHUNK
        while p + FRAME_SIZE <= n:
            crc, length, rseq, ts = unpack(data, p)
            end = p + FRAME_SIZE + length
            if end > n and not at_eof and 0 < length <= MAX_PAYLOAD:
                want = max(CHUNK, end - n)
                break
            if end > n or rseq != seq or length < 1 or crc != crc32c_fn(mv[p + 4 : end]):
                check_damage(path, fd, pos_abs + p, size, seq)
                return
            yield pos_abs + p, rseq, ts, mv[p + FRAME_SIZE : end]
            seq += 1
            p = end
        if at_eof:
            if p < n:
                check_damage(path, fd, pos_abs + p, size, seq)
            return


def scan(path: str | os.PathLike[str], *, tail_only: bool = False) -> LogInfo:
    """Validate every record's frame and CRC (no decoding) and report where the log ends.

    Raises ``CorruptLogError`` for a damaged record or header; a torn tail is reported in
    ``torn_bytes``, not raised. ``tail_only=True`` checks only the records from the last
    verified entry of ``LOG.index`` on (the whole log if there is none): where the log ends
    and whether its tail is torn, in time independent of the log's size.
    """
    fd = _open_for_read(path)
    try:
        return scan_fd(path, fd, tail_only=tail_only)
    finally:
        os.close(fd)


def scan_fd(
    path: str | os.PathLike[str],
    fd: int,
    index: list[tuple[int, int, float]] | None = None,
    *,
    tail_only: bool = False,
) -> LogInfo:
    """:func:`scan` on an open file descriptor.

    With ``index`` (a list), the ``(seq, offset, ts)`` of every ``INDEX_EVERY``-th record is
    appended to it: the writer rebuilds ``LOG.index`` from the scan it does anyway.
    """
    size = os.fstat(fd).st_size
    has_header = check_header(path, os.pread(fd, HEADER_SIZE, 0))
    if not has_header:
        return LogInfo(os.fspath(path), 0, None, 0, size, size, False)
    last_seq = 0
    last_ts: float | None = None
    start, first = seek_seq(path, fd, size, 1 << 62) if tail_only else (HEADER_SIZE, 1)
    good = start
    mask = INDEX_EVERY - 1
    for offset, seq, ts, payload in walk_frames(path, fd, size, start, first):
        last_seq, last_ts = seq, ts
        good = offset + FRAME_SIZE + len(payload)
        if index is not None and not seq & mask:
            index.append((seq, offset, ts))
    return LogInfo(os.fspath(path), last_seq, last_ts, good, size - good, size, True)


def read(
    path: str | os.PathLike[str],
    event_type: Any,
    *,
    start_seq: int = 1,
    stop_seq: int | None = None,
    stop_ts: float | None = None,
    upcasters: Upcasters | None = None,
) -> Iterator[Record[Any]]:
    """Yield the records with ``start_seq <= seq <= stop_seq`` and ``ts <= stop_ts``.

    In a log ``salvage`` wrote, the seqs it lost are skipped (their place holders are no
    records): the seqs yielded then have gaps, each event keeping the seq it had.

    Stops cleanly at the last complete record (a torn tail, or a file still being written);
    raises ``CorruptLogError`` for a damaged record (the last one included) and
    ``UnknownEventError`` for an event tag nobody knows. Use :func:`scan` or :func:`inspect`
    to learn whether the tail was torn.

    With ``start_seq`` past the first index entry, the walk starts at the nearest verified
    entry of ``LOG.index`` at or before it (see :mod:`eventlog.index`), so the time depends
    on the records read, not on the records before them, which are then not checked.
    """
    codec = EventCodec(event_type, upcasters)
    fd = _open_for_read(path)
    try:
        yield from _read_fd(path, fd, codec, start_seq, stop_seq, stop_ts)
    finally:
        os.close(fd)


def _read_fd(
    path: str | os.PathLike[str],
    fd: int,
    codec: EventCodec,
    start_seq: int,
    stop_seq: int | None,
    stop_ts: float | None,
) -> Iterator[Record[Any]]:
    # The same walk as walk_frames, inlined: replay speed is the point of this function.
    size = os.fstat(fd).st_size
    if not check_header(path, os.pread(fd, HEADER_SIZE, 0)):
        return
    last = stop_seq if stop_seq is not None else 1 << 62
    max_ts = stop_ts if stop_ts is not None else float("inf")
    unpack = FRAME.unpack_from
    decode = codec.decoder.decode
    crc_of = crc32c_fn
    # Start at the verified index entry nearest before start_seq (the first record if none).
    pos_abs, seq = seek_seq(path, fd, size, start_seq) if start_seq > 1 else (HEADER_SIZE, 1)
    data = b""
    p = 0
    want = CHUNK  # bytes to read next: a chunk, or the rest of a record larger than one
    while True:
        chunk = os.pread(fd, min(want, size - pos_abs - len(data)), pos_abs + len(data))
        data = data[p:] + chunk
        pos_abs += p
        p = 0
        n = len(data)
        at_eof = pos_abs + n >= size or not chunk
        mv = memoryview(data)
        want = CHUNK
        while p + FRAME_SIZE <= n:
            if seq > last:  # done: what lies past stop_seq (damage too) is not this read's
                return
            crc, length, rseq, ts = unpack(data, p)
            end = p + FRAME_SIZE + length
            if end > n and not at_eof and 0 < length <= MAX_PAYLOAD:
                want = max(CHUNK, end - n)
                break
            if end > n or rseq != seq or length < 1 or crc != crc_of(mv[p + 4 : end]):
                check_damage(path, fd, pos_abs + p, size, seq)
                return
            if seq >= start_seq:
                if seq > last or ts > max_ts:
                    return
                try:
                    event = decode(mv[p + FRAME_SIZE : end])
                except msgspec.DecodeError:
                    if length == 1 and data[p + FRAME_SIZE] == LOST_BYTE:
                        seq += 1  # the place of a record salvage lost: no record there
                        p = end
                        continue
                    event = codec.decode_slow(mv[p + FRAME_SIZE : end], seq)
                yield Record(seq, ts, event)
            seq += 1
            p = end
        if at_eof:
            if p < n and seq <= last:
                check_damage(path, fd, pos_abs + p, size, seq)
            return


def fold(records: Iterable[Record[E]], apply: Callable[[S, E], S], initial: S) -> S:
    """``apply(state, event)`` over the records' events, left to right, from ``initial``."""
    state = initial
    for record in records:
        state = apply(state, record.event)
    return state
