"""``open_writer``: the synchronous, single-writer side of a log file.

Opening scans the whole file (CRCs only, no decoding). A torn tail, the partial record a crash
left behind, is truncated back to the last intact record, reported in ``dropped_bytes`` and
in ``notice`` (one line for the user); a damaged record, the last one included, raises
``CorruptLogError`` and the file is left untouched (``eventlog._format`` has the rules that
tell the two apart). Events over 64 MiB are refused with ``RecordTooLargeError``. The file is
held under an exclusive, non-blocking ``flock`` for the writer's lifetime, so a second writer
(in this process or another) fails at once with ``LogLockedError``.

Appends are encoded into an in-process buffer (one ``Encoder.encode_into`` and one
``struct.pack_into`` per record) and handed to the OS according to the sync policy:

``always``  write and fsync before ``append`` returns.
``batch``   write and fsync once ``max_batch`` records are pending, or on the first append
            after ``max_delay`` seconds, and on ``flush()``/``close()``. (In a trio program use
            ``open_journal``, whose group commit gives every appender durability on return.)
``none``    write once 64 KiB are buffered, and on ``flush()``/``close()``; never fsync.

If a write or fsync fails (a full disk, an I/O error) the file is truncated back to the last
durable record, the pending records are forgotten (``last_seq`` goes back with them) and
``LogWriteError``/``DiskFullError`` is raised: the log stays valid. (Should that truncation
fail too, the next write truncates first: a retry never leaves part of a torn write behind.)
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import struct
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

from ._format import FRAME, FRAME_SIZE, LOST_BYTE, LOST_RECORD, MAX_PAYLOAD, header_bytes
from ._format import crc32c_fn as _crc
from .codec import EventCodec
from .errors import (
    DiskFullError,
    EventLogError,
    LogClosedError,
    LogLockedError,
    LogWriteError,
    NotALogError,
    RecordTooLargeError,
)
from .index import INDEX_EVERY, encode_entries, index_header, index_path
from .reader import scan_fd
from .record import Record

E = TypeVar("E")
SyncPolicy = Literal["always", "batch", "none"]
SYNC_POLICIES: Final = ("always", "batch", "none")
#: Under ``none``, buffered bytes are handed to the OS once the buffer reaches this size.
BUFFER_LIMIT: Final = 64 * 1024
_CRC: Final = struct.Struct("<I")
_pack_frame: Final = FRAME.pack_into
_pack_crc: Final = _CRC.pack_into
_MAX_FRAME: Final = FRAME_SIZE + MAX_PAYLOAD
#: The frame of a lost record's place holder (its payload ``LOST_RECORD``): no event may
#: encode to it (one that passes bytes through, ``msgspec.Raw``, could), or readers would
#: skip it as lost.
_LOST_FRAME: Final = FRAME_SIZE + len(LOST_RECORD)


def _lost_record_error() -> ValueError:
    return ValueError(
        f"cannot append an event that encodes to {LOST_RECORD!r}: that payload marks a record"
        " lost by salvage, and readers skip it"
    )


_DISK_FULL: Final = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_INDEX_MASK: Final = INDEX_EVERY - 1

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def event_classes(event_type: Any) -> tuple[type, ...]:
    """The classes a value of ``event_type`` (a Struct type or a Union of them) may have."""
    origin = typing.get_origin(event_type)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(c for arg in typing.get_args(event_type) for c in event_classes(arg))
    if origin is typing.Annotated:
        return event_classes(typing.get_args(event_type)[0])
    if isinstance(event_type, type):
        return (event_type,)
    raise TypeError(
        f"event_type must be a msgspec Struct type or a Union of them, not {event_type!r}"
    )


def check_sync(sync: str) -> None:
    """Reject an unknown sync policy with a clear message."""
    if sync not in SYNC_POLICIES:
        raise ValueError(f"sync must be one of {', '.join(SYNC_POLICIES)}, not {sync!r}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory holding ``path`` so that a new or renamed entry survives a crash."""
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class LogWriter(Generic[E]):
    """The single writer of one log file (see the module docstring for the policies)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        event_type: Any,
        *,
        sync: SyncPolicy = "batch",
        clock: Callable[[], float] | None = None,
        max_batch: int = 1024,
        max_delay: float = 0.05,
    ) -> None:
        check_sync(sync)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.path: Final = os.fspath(path)
        self.event_type: Final = event_type
        self.sync: Final[SyncPolicy] = sync
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._clock = clock or time.time
        self._classes = event_classes(event_type)
        self._class_set = frozenset(self._classes)
        self._lazy = sync == "none"  # no fsync, write-out only when the buffer is full
        self._codec = EventCodec(event_type)
        self._encode_into = self._codec.encoder.encode_into
        self._buf = bytearray()
        self._pending = 0  # records in _buf
        self._unsynced = False  # bytes written since the last fsync
        self._first_pending_at = 0.0
        self._fd = self._open()
        #: (seq, offset, ts) of every INDEX_EVERY-th record: in LOG.index, and still to write.
        self._index: list[tuple[int, int, float]] = []
        self._index_pending: list[tuple[int, int, float]] = []
        self._staged_at = 0  # where in _buf the last stage_many call's records begin
        self._index_fd: int | None = None
        self._index_size = 0
        try:
            info = scan_fd(self.path, self._fd, self._index)
            self.dropped_bytes: int = info.torn_bytes
            #: One line for the user when opening repaired the file (a torn tail), else None.
            self.notice: str | None = None
            if not info.has_header:
                if info.file_size:
                    self.notice = (
                        f"event log {self.path!r}: rewrote a header left incomplete by a crash "
                        f"({info.file_size} bytes); the log is empty"
                    )
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, header_bytes(), 0)
                os.fsync(self._fd)
                fsync_dir(self.path)
                self._size = len(header_bytes())
            else:
                if info.torn_bytes:
                    os.ftruncate(self._fd, info.good_bytes)
                    os.fsync(self._fd)
                    self.notice = (
                        f"event log {self.path!r}: truncated a torn tail of {info.torn_bytes} "
                        f"bytes at offset {info.good_bytes} (an append cut short by a crash); "
                        f"the log ends at seq {info.last_seq}"
                    )
                self._size = info.good_bytes
            self._last_seq = info.last_seq
        except BaseException:
            os.close(self._fd)
            raise
        self._durable_seq = self._last_seq  # last seq in the file (written)
        self._durable_size = self._size
        # A roll-back whose truncation failed: the file may hold a torn record past _size,
        # cut off before the next write (which may be shorter: see _write_out).
        self._torn = False
        self._closed = False
        self._open_index()

    def _open_index(self) -> None:
        """Make ``LOG.index`` hold exactly the entries the opening scan found (see ``index``)."""
        want = index_header() + encode_entries(self._index)
        try:
            fd = os.open(
                index_path(self.path), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600
            )
        except OSError:
            # The index only speeds reads up (and readers verify it): a log whose index
            # cannot be created is still a good log; it is read from the start.
            return
        try:
            if os.pread(fd, len(want) + 1, 0) != want:
                os.ftruncate(fd, 0)
                os.pwrite(fd, want, 0)
        except OSError:
            os.close(fd)
            return
        self._index_fd = fd
        self._index_size = len(want)

    def _write_index(self) -> None:
        """Append the entries of the records just written out to ``LOG.index``."""
        pending = self._index_pending
        fd = self._index_fd
        if fd is not None:
            data = encode_entries(pending)
            try:
                os.pwrite(fd, data, self._index_size)
            except OSError:
                # A hint that cannot be written is dropped, the log goes on (see _open_index);
                # the next open rebuilds it.
                self._index_fd = None
                os.close(fd)
            else:
                self._index_size += len(data)
        self._index.extend(pending)
        pending.clear()

    def _roll_back_index(self) -> None:
        """Forget the index entries of records that are no longer in the log."""
        self._index_pending.clear()
        keep = [e for e in self._index if e[0] <= self._durable_seq]
        if len(keep) == len(self._index):
            return
        self._index = keep
        self._index_size = len(index_header()) + len(keep) * 24
        if self._index_fd is not None:
            try:
                os.ftruncate(self._index_fd, self._index_size)
            except OSError:
                os.close(self._index_fd)
                self._index_fd = None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if os.path.isdir(self.path):
            raise NotALogError(self.path, "it is a directory; pass the log file's path")
        try:
            fd = os.open(self.path, flags, 0o600)
        except IsADirectoryError:
            raise NotALogError(self.path, "it is a directory; pass the log file's path") from None
        except FileNotFoundError:
            where = os.path.dirname(os.path.abspath(self.path))
            why = (
                "its directory takes no new file"
                if os.path.isdir(where)
                else "its directory does not exist"
            )
            raise EventLogError(f"cannot create event log {self.path!r}: {why}") from None
        except OSError as exc:  # permission denied, a read-only file system, ...
            raise EventLogError(
                f"cannot open event log {self.path!r}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogLockedError(self.path) from None
        return fd

    # -- properties -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last appended record (0 for an empty log)."""
        return self._last_seq

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    # -- appending --------------------------------------------------------------------------

    def append(self, event: E) -> Record[E]:
        """Append one event; durable on return only under ``sync="always"``.

        An event that encodes to more than ``MAX_PAYLOAD`` (64 MiB) raises
        ``RecordTooLargeError`` and appends nothing.
        """
        if self._closed:
            raise LogClosedError(f"event log writer for {self.path!r} is closed")
        # The hot path of buffered appends: every attribute load here is measurable.
        if type(event) not in self._class_set and not isinstance(event, self._classes):
            raise TypeError(f"cannot append {type(event).__name__}: not part of the event type")
        buf = self._buf
        start = len(buf)
        try:
            self._encode_into(event, buf, start + FRAME_SIZE)
        except BaseException:
            del buf[start:]
            raise
        end = len(buf)
        if end - start > _MAX_FRAME:
            del buf[start:]
            raise RecordTooLargeError(end - start - FRAME_SIZE, MAX_PAYLOAD)
        if end - start == _LOST_FRAME and buf[start + FRAME_SIZE] == LOST_BYTE:
            del buf[start:]
            raise _lost_record_error()
        self._last_seq = seq = self._last_seq + 1
        ts = self._clock()
        _pack_frame(buf, start, 0, end - start - FRAME_SIZE, seq, ts)
        _pack_crc(buf, start, _crc(buf[start + 4 : end]))
        if not seq & _INDEX_MASK:
            self._index_pending.append((seq, self._size + start, ts))
        if self._lazy:
            if end >= BUFFER_LIMIT:
                self._write_out()
        else:
            self._after_append(1)
        return Record(seq, ts, event)

    def append_many(
        self, events: Iterable[E], *, ts: Sequence[float] | None = None
    ) -> list[Record[E]]:
        """Append events as one unit: all encoded, or none; one write (and fsync) for all.

        ``ts`` optionally gives each record's timestamp (the journal passes append times).
        """
        records = self.stage_many(events, ts=ts)
        if records:
            self._after_append(0)
        return records

    def stage_many(
        self, events: Iterable[E], *, ts: Sequence[float] | None = None
    ) -> list[Record[E]]:
        """Encode events into the buffer without any write-out; :meth:`flush` commits them.

        The journal stages in the trio thread (CPU work) and flushes in a worker thread (I/O
        only), so the two threads never fight over the GIL.
        """
        if self._closed:
            raise LogClosedError(f"event log writer for {self.path!r} is closed")
        events = list(events)
        if ts is not None and len(ts) != len(events):
            raise ValueError(f"got {len(events)} events but {len(ts)} timestamps")
        buf = self._buf
        mark = len(buf)
        seq = self._last_seq
        stamps = itertools.repeat(self._clock() if events else 0.0) if ts is None else ts
        records: list[Record[E]] = []
        # The journal's commit path: per event only what the record needs (everything
        # looked up once, no index arithmetic); a bare encode + frame + CRC loop is the
        # yardstick (bench/eventlog.py).
        add = records.append
        encode_into = self._encode_into
        class_set = self._class_set
        pack_frame, pack_crc, crc = _pack_frame, _pack_crc, _crc
        try:
            for event, t in zip(events, stamps, strict=False):  # lengths checked above
                if type(event) not in class_set and not isinstance(event, self._classes):
                    raise TypeError(
                        f"cannot append {type(event).__name__}: not part of the event type"
                    )
                start = len(buf)
                encode_into(event, buf, start + FRAME_SIZE)
                end = len(buf)
                if end - start > _MAX_FRAME:
                    raise RecordTooLargeError(end - start - FRAME_SIZE, MAX_PAYLOAD)
                if end - start == _LOST_FRAME and buf[start + FRAME_SIZE] == LOST_BYTE:
                    raise _lost_record_error()
                seq += 1
                pack_frame(buf, start, 0, end - start - FRAME_SIZE, seq, t)
                pack_crc(buf, start, crc(buf[start + 4 : end]))
                add(Record(seq, t, event))
                if not seq & _INDEX_MASK:
                    self._index_pending.append((seq, self._size + start, t))
        except BaseException:
            del buf[mark:]
            self._index_pending[:] = [e for e in self._index_pending if e[0] <= self._last_seq]
            raise
        self._last_seq = seq
        self._staged_at = mark
        if records:
            if self._pending == 0:
                self._first_pending_at = time.monotonic()
            self._pending += len(records)
        return records

    def discard_staged(self, records: Sequence[Record[E]]) -> bool:
        """Take back ``records``, the last :meth:`stage_many` call's, while they are still
        only in the buffer (their commit failed before its write-out: they must never reach
        the file). False, and nothing changed, when they are no longer there to take back."""
        if not records:
            return True
        if self._closed or self._last_seq != records[-1].seq or len(self._buf) <= self._staged_at:
            return False
        del self._buf[self._staged_at :]
        self._last_seq = records[0].seq - 1
        self._pending = max(0, self._pending - len(records))
        self._index_pending[:] = [e for e in self._index_pending if e[0] <= self._last_seq]
        return True

    def _after_append(self, count: int) -> None:
        if self._pending == 0 and count:
            self._first_pending_at = time.monotonic()
        self._pending += count
        sync = self.sync
        if sync == "none":
            if len(self._buf) >= BUFFER_LIMIT:
                self._write_out()
        elif sync == "always" or (
            self._pending >= self.max_batch
            or time.monotonic() - self._first_pending_at >= self.max_delay
        ):
            self._write_out()
            self._fsync()

    # -- flushing ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write buffered records to the OS, and fsync them unless ``sync="none"``."""
        if self._closed:
            return
        self._write_out()
        if self.sync != "none":
            self._fsync()

    def _write_out(self) -> None:
        buf = self._buf
        if not buf:
            return
        # Detach the bytes first: no memoryview of the bytearray may outlive this call (a
        # traceback holding one would forbid resizing the buffer ever after).
        data = bytes(buf)
        buf.clear()
        self._pending = 0
        written = 0
        try:
            if self._torn:
                # A write a full disk cut short was not truncated away then: now, or this
                # write (shorter than the torn one, say) would leave part of it in the file.
                os.ftruncate(self._fd, self._size)
                self._torn = False
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], self._size + written)
        except OSError as exc:
            self._roll_back(exc)
        self._size += len(data)
        if self._index_pending:
            self._write_index()
        if self.sync == "none":
            # Nothing is ever fsynced under "none": written is as durable as it gets.
            self._durable_size = self._size
            self._durable_seq = self._last_seq
        else:
            self._unsynced = True

    def _fsync(self) -> None:
        if not self._unsynced:
            return
        try:
            _fdatasync(self._fd)
        except OSError as exc:
            self._roll_back(exc)
        self._unsynced = False
        self._durable_size = self._size
        self._durable_seq = self._last_seq

    def _roll_back(self, exc: OSError) -> typing.NoReturn:
        """Forget everything not yet durable, truncate the file back, raise a clear error."""
        lost = self._last_seq - self._durable_seq
        self._buf.clear()
        self._pending = 0
        self._unsynced = False
        self._last_seq = self._durable_seq
        self._size = self._durable_size
        self._roll_back_index()
        try:
            os.ftruncate(self._fd, self._durable_size)
        except OSError as trunc_exc:
            self._torn = True
            exc.add_note(f"truncating back to {self._durable_size} bytes also failed: {trunc_exc}")
        cls = DiskFullError if exc.errno in _DISK_FULL else LogWriteError
        err = cls(self.path, os.strerror(exc.errno) if exc.errno else str(exc))
        err.add_note(f"{lost} record(s) after seq {self._durable_seq} were not written")
        raise err from exc

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush (per the policy), release the lock and close the file. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            os.close(self._fd)  # closing the descriptor releases the flock
            if self._index_fd is not None:
                os.close(self._index_fd)
                self._index_fd = None

    def __enter__(self) -> LogWriter[E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LogWriter {self.path!r} sync={self.sync} last_seq={self._last_seq}>"


def being_written(path: str | os.PathLike[str]) -> bool:
    """Whether a live writer holds ``path`` open (a :class:`LogWriter` holds an exclusive
    ``flock`` for its lifetime). Probed with a shared lock, released at once: False for a
    file no writer holds, or one that cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken here
    return False


#: Where Linux lists the file locks held on the system (``man 5 proc``: /proc/locks).
PROC_LOCKS: Final = "/proc/locks"


def writer_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid of the process whose writer holds ``path``'s lock, where the OS says it
    (Linux lists every ``flock`` in :data:`PROC_LOCKS`, by the file's device and inode);
    None when no writer holds it, or the OS does not say who (another system; a process of
    another pid namespace). Asks :func:`being_written` first: a pid is never named for a
    file whose lock is free."""
    if not being_written(path):
        return None
    try:
        st = os.stat(path)
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as f:
            listed = f.read()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2556144 0 EOF" (major:minor in hex, inode in
    # decimal); a process waiting for a lock is listed under it as "1: -> FLOCK ...".
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in listed.splitlines():
        fields = line.split()
        if fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and fields[5:6] == [file_id]:
            pid = int(fields[4]) if fields[4].isdigit() else 0
            return pid or None  # (0 or -1: a process this one cannot name)
    return None


def open_writer(
    path: str | os.PathLike[str],
    event_type: Any,
    *,
    sync: SyncPolicy = "batch",
    clock: Callable[[], float] | None = None,
    max_batch: int = 1024,
    max_delay: float = 0.05,
) -> LogWriter[Any]:
    """Open (creating with mode 0600 if needed) the log at ``path`` for appending.

    Use as a context manager. ``clock`` gives each record's ``ts`` (default ``time.time``).
    """
    return LogWriter(
        path, event_type, sync=sync, clock=clock, max_batch=max_batch, max_delay=max_delay
    )
