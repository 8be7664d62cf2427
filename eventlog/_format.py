"""The on-disk format: file header, record frame, and the rules that tell torn from corrupt.

Layout (all integers little-endian; ``docs/eventlog-format.md`` is the full write-up)::

    header  (16 bytes)  magic b"\\x89EVL\\r\\n\\x1a\\n" | u32 version | u32 crc32c(magic+version)
    record  (24 + n)    u32 crc | u32 n | u64 seq | f64 ts | n bytes msgpack payload

``crc`` is CRC32C over everything after it (length, seq, ts and payload), so a flipped bit
anywhere in a record, including its length, is caught. ``seq`` counts from 1 without gaps.
A record whose payload is :data:`LOST_RECORD` holds the place of one ``salvage`` lost: the
readers skip it, so the events of a salvaged log keep their seqs, with gaps where it lost.

The header is checked as a whole before its version is believed: a header whose CRC does
not hold is damage (:class:`CorruptLogError` at offset 0), never "a newer version".

Telling a torn tail from corruption
-----------------------------------
An append is one ``pwrite`` at the end of the file, so a crash leaves a *prefix* of what was
being written: whole records, then at most one record cut short. When the walk meets a
record that is not the intact record it expected, at offset ``o``:

* fewer than 24 bytes left, or nothing but zero bytes left (an extent the crash left
  unwritten): a **torn tail**;
* a complete frame (its declared length fits in the file) with a bad CRC or the wrong seq,
  or a complete frame header with an impossible length: **corruption**, a crash never
  leaves a complete frame that is wrong;
* a declared length that runs past the end of the file (unterminated): a **torn tail**,
  unless (a) the bytes up to the end of the file are an intact record once the length field
  is set to what is there (a damaged length field in the last record), or (b) an intact
  record whose seq could follow starts somewhere after ``o`` (a damaged length field in the
  middle); both are corruption. The search for (b) reads in windows and stops at the first
  intact frame; on a genuine torn tail it covers the bytes of one partial record.
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
_LENGTH_SEQ_TS: Final = struct.Struct("<IQd")
#: Largest payload accepted: ``append`` refuses a larger event (``RecordTooLargeError``), and a
#: larger length field in a complete frame header is damage.
MAX_PAYLOAD: Final = 64 * 1024 * 1024
#: Read size for scans and replays: big reads, no per-record syscalls (a larger record is read
#: whole in one read of its own size).
CHUNK: Final = 4 * 1024 * 1024
#: A magic this many bits away from ours is our magic, damaged (no other format comes close).
_MAGIC_BIT_TOLERANCE: Final = 2
#: The payload of a lost record's place holder: ``salvage`` writes one for each seq it could
#: not copy, so that the copy keeps the source's seqs (the frames stay gapless; quoted seqs
#: still point at the same events). 0xc1 is the one byte msgpack never uses: no Struct or
#: union event encodes to it, and the writer refuses one that does (an event type that
#: passes bytes through, ``msgspec.Raw``). ``read`` and ``follow`` skip it (no record has
#: that seq).
LOST_RECORD: Final = b"\xc1"
LOST_BYTE: Final = LOST_RECORD[0]

crc32c_fn: Final = crc32c.crc32c


def header_bytes(version: int = FORMAT_VERSION) -> bytes:
    """The 16-byte file header for ``version``."""
    head = MAGIC + struct.pack("<I", version)
    return head + struct.pack("<I", crc32c_fn(head))


def _bit_distance(a: bytes, b: bytes) -> int:
    return sum((x ^ y).bit_count() for x, y in zip(a, b, strict=False))


def header_damage(path: str | os.PathLike[str], reason: str) -> CorruptLogError:
    """The error for a damaged file header (offset 0, before any record)."""
    return CorruptLogError(path, 0, 0, f"the file header is damaged: {reason}")


def check_header(path: str | os.PathLike[str], data: bytes) -> bool:
    """Validate the first bytes of a log; False means "empty or torn while being created".

    ``data`` is the file's first ``HEADER_SIZE`` bytes (fewer if the file is shorter). The
    header's CRC is checked before its version is believed, so a flipped bit in the version
    is damage (``CorruptLogError``), and ``UnsupportedVersionError`` means an intact header
    from a newer eventlog.
    """
    expected = header_bytes()
    if len(data) < HEADER_SIZE:
        # An empty file, or a crash while the header was being written: a prefix of a valid
        # header is a log with no records yet. Anything else is some other file.
        if expected.startswith(data):
            return False
        if len(data) >= len(MAGIC) and _bit_distance(data, expected) <= _MAGIC_BIT_TOLERANCE:
            raise header_damage(path, "it is cut short and differs from a header")
        raise NotALogError(path, "the file is too short and does not start with the magic")
    magic, version, crc = HEADER.unpack_from(data)
    intact = crc == crc32c_fn(data[:12])
    if magic != MAGIC:
        if _bit_distance(magic, MAGIC) <= _MAGIC_BIT_TOLERANCE or crc == crc32c_fn(
            MAGIC + data[8:12]
        ):
            raise header_damage(path, "flipped bits in the magic")
        raise NotALogError(path, "wrong magic bytes; it was not written by eventlog")
    if not intact:
        raise header_damage(path, "checksum mismatch")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(path, version, FORMAT_VERSION)
    if version < 1:
        raise NotALogError(path, f"unknown format version {version}")
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


def _only_zeros_from(fd: int, offset: int, size: int) -> bool:
    pos = offset
    while pos < size:
        window = os.pread(fd, min(CHUNK, size - pos), pos)
        if not window or window.count(0) != len(window):
            return False
        pos += len(window)
    return True


def _intact_frame_after(fd: int, offset: int, size: int, expected_seq: int) -> bool:
    """Whether an intact frame whose seq could follow starts after ``offset``."""
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
                return True
        pos += CHUNK
    return False


def damage_at(
    path: str | os.PathLike[str], fd: int, offset: int, size: int, expected_seq: int
) -> CorruptLogError | None:
    """Classify the first bad frame (at ``offset``): the corruption error, or None if torn.

    ``size`` is the file size the caller read up to. The rules are in the module docstring.
    """
    if size - offset < FRAME_SIZE or _only_zeros_from(fd, offset, size):
        return None
    head = os.pread(fd, FRAME_SIZE, offset)
    crc, length, seq, ts = FRAME.unpack(head)
    if length < 1 or length > MAX_PAYLOAD:
        return CorruptLogError(path, offset, expected_seq, f"implausible length {length}")
    if offset + FRAME_SIZE + length <= size:
        frame = os.pread(fd, FRAME_SIZE + length, offset)
        reason = describe_bad_frame(frame, 0, len(frame), expected_seq)
        return CorruptLogError(path, offset, expected_seq, reason)
    # Unterminated: torn, unless the length field is what was damaged.
    rest = size - offset - FRAME_SIZE
    if rest >= 1 and seq == expected_seq:
        body = _LENGTH_SEQ_TS.pack(rest, seq, ts) + os.pread(fd, rest, offset + FRAME_SIZE)
        if crc32c_fn(body) == crc:
            reason = f"length field damaged: it says {length} bytes, the record has {rest}"
            return CorruptLogError(path, offset, expected_seq, reason)
    if _intact_frame_after(fd, offset, size, expected_seq):
        reason = f"length {length} runs past the end of the file, with intact records after"
        return CorruptLogError(path, offset, expected_seq, reason)
    return None


def check_damage(
    path: str | os.PathLike[str], fd: int, offset: int, size: int, expected_seq: int
) -> None:
    """Called at the first bad frame (``offset``): raise ``CorruptLogError`` unless torn."""
    error = damage_at(path, fd, offset, size, expected_seq)
    if error is not None:
        raise error
