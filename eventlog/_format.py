"""The on-disk format: file header, record frame, and the scanner that tells tail from middle.

Layout (all integers little-endian; ``docs/eventlog-format.md`` is the full write-up)::

    header  (16 bytes)  magic b"\\x89EVL\\r\\n\\x1a\\n" | u32 version | u32 crc32c(magic+version)
    record  (24 + n)    u32 crc | u32 n | u64 seq | f64 ts | n bytes msgpack payload

``crc`` is CRC32C over everything after it (length, seq, ts and payload), so a flipped bit
anywhere in a record, including its length, is caught. ``seq`` counts from 1 without gaps.

Telling a torn tail from damage in the middle
---------------------------------------------
A crash during an append leaves an incomplete or checksum-bad *last* record: that is a torn
tail, and it is simply the end of the log (the writer truncates it on open). A bad record that
has intact records *after* it is something else: bit rot or a bad splice. We must not drop the
good records that follow, so when the walk meets a bad frame we search the rest of the file,
byte by byte, for any frame that is intact and whose seq could follow (``expected <= seq``,
and no more seqs than could fit). Finding one means corruption in the middle
(:class:`CorruptLogError`); finding none means a torn tail. The search only runs on the
damage path, and on a torn tail it covers at most the bytes of one partial record.
"""

from __future__ import annotations

import os
import struct
from typing import Final

import crc32c

from .errors import CorruptLogError, NotALogError, UnsupportedVersionError

MAGIC: Final = b"\x89EVL\r\n\x1a\n"
FORMAT_VERSION: Final = 1
HEADER: Final = struct.Struct("<8sII")
HEADER_SIZE: Final = HEADER.size  # 16
FRAME: Final = struct.Struct("<IIQd")
FRAME_SIZE: Final = FRAME.size  # 24
#: Largest payload accepted; a larger length field is treated as damage.
MAX_PAYLOAD: Final = 64 * 1024 * 1024
#: Read size for scans and replays: big reads, no per-record syscalls.
CHUNK: Final = 4 * 1024 * 1024

crc32c_fn: Final = crc32c.crc32c


def header_bytes(version: int = FORMAT_VERSION) -> bytes:
    """The 16-byte file header for ``version``."""
    head = MAGIC + struct.pack("<I", version)
    return head + struct.pack("<I", crc32c_fn(head))


def check_header(path: str | os.PathLike[str], data: bytes) -> bool:
    """Validate the first bytes of a log; False means "empty or torn while being created".

    ``data`` is the file's first ``HEADER_SIZE`` bytes (fewer if the file is shorter).
    """
    if len(data) < HEADER_SIZE:
        # An empty file, or a crash while the header was being written: a prefix of a valid
        # header is a log with no records yet. Anything else is some other file.
        if header_bytes().startswith(data):
            return False
        raise NotALogError(path, "the file is too short and does not start with the magic")
    magic, version, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise NotALogError(path, "wrong magic bytes; it was not written by eventlog")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(path, version, FORMAT_VERSION)
    if version < 1 or crc != crc32c_fn(data[:12]):
        raise NotALogError(path, "the file header is damaged")
    return True


def frame_ok(data: bytes | memoryview, pos: int, n: int, expected_seq: int) -> bool:
    """Whether an intact frame that could carry ``expected_seq`` or later starts at ``pos``."""
    if pos + FRAME_SIZE > n:
        return False
    crc, length, seq, _ts = FRAME.unpack_from(data, pos)
    end = pos + FRAME_SIZE + length
    if length < 1 or end > n or seq < expected_seq:
        return False
    # No more records can follow than bytes allow (each frame is at least 25 bytes).
    if seq - expected_seq > (n - pos) // (FRAME_SIZE + 1):
        return False
    return bool(crc == crc32c_fn(memoryview(data)[pos + 4 : end]))


def find_next_frame(data: bytes | memoryview, start: int, expected_seq: int) -> int:
    """Offset of the first intact frame at or after ``start`` in ``data``, or -1."""
    n = len(data)
    for pos in range(start, n - FRAME_SIZE):
        if frame_ok(data, pos, n, expected_seq):
            return pos
    return -1


def describe_bad_frame(data: bytes | memoryview, pos: int, n: int, expected_seq: int) -> str:
    """A short reason why the frame at ``pos`` is not the record we expected."""
    if pos + FRAME_SIZE > n:
        return "incomplete record header"
    crc, length, seq, _ts = FRAME.unpack_from(data, pos)
    if length < 1 or length > MAX_PAYLOAD:
        return f"implausible length {length}"
    end = pos + FRAME_SIZE + length
    if end > n:
        return "incomplete record"
    if crc != crc32c_fn(memoryview(data)[pos + 4 : end]):
        return "checksum mismatch"
    if seq != expected_seq:
        return f"seq {seq} where {expected_seq} was expected"
    return "bad record"


def check_damage(
    path: str | os.PathLike[str], fd: int, offset: int, size: int, expected_seq: int
) -> None:
    """Called at the first bad frame (``offset``): raise if intact records follow it.

    Returns normally when the rest of the file holds no intact record: a torn tail. The rest
    of the file is searched in windows, so a huge log costs bounded memory; the search stops
    at the first intact frame.
    """
    head = os.pread(fd, FRAME_SIZE, offset)
    reason = "incomplete record header"
    if len(head) == FRAME_SIZE:
        length = FRAME.unpack_from(head)[1]
        if 1 <= length <= MAX_PAYLOAD and offset + FRAME_SIZE + length <= size:
            frame = os.pread(fd, FRAME_SIZE + length, offset)
            reason = describe_bad_frame(frame, 0, len(frame), expected_seq)
        else:
            reason = describe_bad_frame(head, 0, size - offset, expected_seq)
    pos = offset + 1
    while pos + FRAME_SIZE < size:
        window = os.pread(fd, min(CHUNK + FRAME_SIZE, size - pos), pos)
        for i in range(min(CHUNK, len(window) - FRAME_SIZE)):
            crc, length, seq, _ts = FRAME.unpack_from(window, i)
            at = pos + i
            if length < 1 or length > MAX_PAYLOAD or seq < expected_seq:
                continue
            end = at + FRAME_SIZE + length
            if end > size or seq - expected_seq > (size - at) // (FRAME_SIZE + 1):
                continue
            if i + FRAME_SIZE + length <= len(window):
                body: bytes | memoryview = memoryview(window)[i + 4 : i + FRAME_SIZE + length]
            else:
                body = os.pread(fd, FRAME_SIZE - 4 + length, at + 4)
            if crc32c_fn(body) == crc:
                raise CorruptLogError(path, offset, expected_seq, reason)
        pos += CHUNK
