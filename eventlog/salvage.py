"""``salvage``: copy every intact record out of a damaged log into a new one.

The source is never modified. The walk is the same resynchronising search the reader uses
to tell a torn tail from corruption (see :mod:`eventlog._format`): at a bad frame it looks,
byte by byte, for the next intact frame whose seq could follow, and skips the bytes between.
Records whose frame is intact but whose payload no longer decodes as ``event_type`` are also
skipped and reported.

The copy keeps every record's seq and ``ts``: ``replay --at SEQ`` and a seq quoted in
earlier output point at the same event in the copy as in the source. A log has no gaps
(the reader takes a missing seq for damage), so each seq that could not be copied gets a
place holder (a record whose payload is ``LOST_RECORD``, stamped with the ``ts`` of the
next record copied), which every reader skips. The report names those seqs; records after
the last intact one, in damaged bytes at the end, cannot be counted (``damaged_tail``). A
damaged file header is skipped too (the records after it are still read).

With ``event_type=None`` payloads are copied as they are, without decoding: that is what
``python -m eventlog salvage SRC DST`` does, since it knows no event types.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from ._format import (
    FRAME,
    FRAME_SIZE,
    HEADER_SIZE,
    LOST_RECORD,
    check_header,
    crc32c_fn,
    find_next_frame,
    frame_ok,
    header_bytes,
)
from .codec import EventCodec, Upcasters
from .errors import CorruptLogError, EventDecodeError, EventLogError
from .reader import _open_for_read
from .writer import fsync_dir


class SalvageReport(msgspec.Struct, frozen=True):
    """What :func:`salvage` copied and what it had to leave behind.

    ``skipped`` lists the damaged byte ranges ``(offset, length)`` of the source;
    ``lost_seqs`` the source seqs that could not be copied (as far as the gaps tell: a
    record lost earlier, whose place holder the source holds, included);
    ``undecodable_seqs`` intact records whose payload did not decode (also lost);
    ``damaged_tail``: the source's last bytes, after record ``last_source_seq``, were
    damaged, so records after it may be lost too (how many, no frame tells).
    The copy keeps the source's seqs: the seqs lost are place holders in it.
    """

    source: str
    destination: str
    copied: int
    last_source_seq: int
    skipped: list[tuple[int, int]]
    lost_seqs: list[int]
    undecodable_seqs: list[int]
    damaged_tail: bool = False


def salvage(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    event_type: Any,
    *,
    upcasters: Upcasters | None = None,
) -> SalvageReport:
    """Copy the intact records of ``src`` into a new log ``dst`` (which must not exist),
    each with its seq and ``ts``; each seq lost gets a place holder the readers skip.

    ``event_type=None`` copies the payloads without decoding them.
    """
    if os.path.lexists(dst):
        raise EventLogError(f"salvage destination {os.fspath(dst)!r} exists; pick a new path")
    fd = _open_for_read(src)
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    skipped: list[tuple[int, int]] = []
    try:
        check_header(src, data[:HEADER_SIZE])
    except CorruptLogError:
        skipped.append((0, min(HEADER_SIZE, len(data))))
    codec = EventCodec(event_type, upcasters) if event_type is not None else None
    lost: list[int] = []
    undecodable: list[int] = []
    frames: list[tuple[int, float, bytes]] = []  # (seq, ts, payload) of the copy
    copied = 0
    n = len(data)
    pos = HEADER_SIZE if n >= HEADER_SIZE else n
    expected = 1
    last_seq = 0
    while pos < n:
        if not frame_ok(data, pos, n, expected):
            nxt = find_next_frame(data, pos + 1, expected)
            end = n if nxt < 0 else nxt
            skipped.append((pos, end - pos))
            pos = end
            continue
        _crc, length, seq, ts = FRAME.unpack_from(data, pos)
        for gone in range(expected, seq):
            lost.append(gone)
            frames.append((gone, ts, LOST_RECORD))
        end = pos + FRAME_SIZE + length
        payload = bytes(memoryview(data)[pos + FRAME_SIZE : end])
        if payload == LOST_RECORD:  # lost by an earlier salvage: still lost
            lost.append(seq)
        elif codec is not None:
            try:
                payload = codec.encoder.encode(codec.decode(payload, seq))
            except EventDecodeError:
                undecodable.append(seq)
                payload = LOST_RECORD
            else:
                copied += 1
        else:
            copied += 1
        frames.append((seq, ts, payload))
        last_seq = seq
        expected = seq + 1
        pos = end
    damaged_tail = bool(skipped) and sum(skipped[-1]) == n and skipped[-1][0] >= HEADER_SIZE
    _write_frames(dst, frames)
    return SalvageReport(
        os.fspath(src),
        os.fspath(dst),
        copied,
        last_seq,
        skipped,
        lost,
        undecodable,
        damaged_tail,
    )


def _write_frames(dst: str | os.PathLike[str], frames: list[tuple[int, float, bytes]]) -> None:
    """Write a new log of ``frames`` (``(seq, ts, encoded payload)``, seqs from 1 without
    gaps); fsync it and its directory."""
    out = bytearray(header_bytes())
    for seq, ts, payload in frames:
        start = len(out)
        out += FRAME.pack(0, len(payload), seq, ts)
        out += payload
        out[start : start + 4] = crc32c_fn(memoryview(out)[start + 4 :]).to_bytes(4, "little")
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        written = 0
        while written < len(out):
            written += os.write(fd, memoryview(out)[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(dst)
