"""The sparse seq -> offset index: a sidecar file ``LOG.index`` that lets a read start mid-log.

Without it, reading from record ``s`` means walking (and CRC-checking) every record before
``s``. The writer notes the byte offset of every ``INDEX_EVERY``-th record (seq 4096, 8192...)
and appends it to ``LOG.index`` each time it writes records out; opening a log for writing
rebuilds the index from the scan it does anyway, so an old log without one gets it, and a
stale one (a truncated torn tail, a rolled-back write) is rewritten.

Layout (little-endian)::

    header  (16 bytes)  magic b"\\x89EVX\\r\\n\\x1a\\n" | u32 version | u32 every
    entry   (24 bytes)  u64 seq | u64 offset | f64 ts       (seq ascending)

The index is a hint, never trusted blindly: it is not fsynced, and before a reader starts at
an entry it checks that an intact frame (CRC) with exactly that seq and ts starts at that
offset. An entry that fails the check is skipped for the next lower one; no usable entry
means a read from the start, as without an index.
"""

from __future__ import annotations

import bisect
import os
import struct
from typing import Final

from ._format import FRAME, FRAME_SIZE, HEADER_SIZE, MAX_PAYLOAD, crc32c_fn

INDEX_MAGIC: Final = b"\x89EVX\r\n\x1a\n"
INDEX_VERSION: Final = 1
#: One index entry per this many records (a power of two: the writer tests ``seq & mask``).
INDEX_EVERY: Final = 4096
INDEX_HEAD: Final = struct.Struct("<8sII")
INDEX_ENTRY: Final = struct.Struct("<QQd")
#: Entries tried (newest first) before falling back to a read from the start.
_MAX_TRIES: Final = 4


def index_path(log_path: str | os.PathLike[str]) -> str:
    """Where the index of the log at ``log_path`` lives: ``LOG.index`` beside it."""
    return os.fspath(log_path) + ".index"


def index_header(every: int = INDEX_EVERY) -> bytes:
    """The 16-byte header of an index file."""
    return INDEX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, every)


def encode_entries(entries: list[tuple[int, int, float]]) -> bytes:
    """Entries ``(seq, offset, ts)`` as index bytes (no header)."""
    pack = INDEX_ENTRY.pack
    return b"".join(pack(seq, offset, ts) for seq, offset, ts in entries)


def read_index(log_path: str | os.PathLike[str]) -> list[tuple[int, int, float]]:
    """The entries of ``LOG.index`` (``[]`` if it is missing, foreign or of another version).

    A trailing partial entry (a crash mid-write) is ignored; entries out of seq order end
    the list there (nothing after them is believed).
    """
    try:
        with open(index_path(log_path), "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return []
    if len(data) < INDEX_HEAD.size:
        return []
    magic, version, _every = INDEX_HEAD.unpack_from(data)
    if magic != INDEX_MAGIC or version != INDEX_VERSION:
        return []
    entries: list[tuple[int, int, float]] = []
    last = 0
    body = memoryview(data)[INDEX_HEAD.size :]
    usable = len(body) - len(body) % INDEX_ENTRY.size
    for seq, offset, ts in INDEX_ENTRY.iter_unpack(body[:usable]):
        if seq <= last or offset < HEADER_SIZE:
            break
        entries.append((seq, offset, ts))
        last = seq
    return entries


def frame_at(fd: int, offset: int, size: int, seq: int, ts: float) -> bool:
    """Whether an intact frame carrying exactly ``seq`` and ``ts`` starts at ``offset``."""
    if offset < HEADER_SIZE or offset + FRAME_SIZE > size:
        return False
    head = os.pread(fd, FRAME_SIZE, offset)
    if len(head) < FRAME_SIZE:
        return False
    crc, length, rseq, rts = FRAME.unpack(head)
    if rseq != seq or rts != ts or not 1 <= length <= MAX_PAYLOAD:
        return False
    if offset + FRAME_SIZE + length > size:
        return False
    payload = os.pread(fd, length, offset + FRAME_SIZE)
    return len(payload) == length and bool(crc == crc32c_fn(head[4:] + payload))


def seek_seq(
    log_path: str | os.PathLike[str], fd: int, size: int, start_seq: int
) -> tuple[int, int]:
    """``(offset, seq)`` of a verified record at or before ``start_seq`` to start a walk from.

    ``(HEADER_SIZE, 1)`` (the first record) when there is no index or no entry checks out.
    """
    if start_seq <= INDEX_EVERY:
        return HEADER_SIZE, 1
    entries = read_index(log_path)
    i = bisect.bisect_right(entries, start_seq, key=lambda e: e[0])
    for seq, offset, ts in reversed(entries[max(0, i - _MAX_TRIES) : i]):
        if frame_at(fd, offset, size, seq, ts):
            return offset, seq
    return HEADER_SIZE, 1
