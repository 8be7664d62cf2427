"""``salvage``: copy every intact record out of a damaged log into a new one.

The source is never modified. The walk is the same resynchronising search the reader uses
to tell a torn tail from corruption (see :mod:`eventlog._format`): at a bad frame it looks,
byte by byte, for the next intact frame whose seq could follow, and skips the bytes between.
Records whose frame is intact but whose payload no longer decodes as ``event_type`` are also
skipped and reported. The copy gets contiguous seqs from 1 (a log must have no gaps), keeps
each record's original ``ts``, and the report maps what was lost. A damaged file header is
skipped too (the records after it are still read).

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
    check_header,
    crc32c_fn,
    find_next_frame,
    frame_ok,
    header_bytes,
)
from .codec import EventCodec, Upcasters
from .errors import CorruptLogError, EventDecodeError, EventLogError
from .reader import _open_for_read
from .writer import fsync_dir, open_writer


class SalvageReport(msgspec.Struct, frozen=True):
    """What :func:`salvage` copied and what it had to leave behind.

    ``skipped`` lists the damaged byte ranges ``(offset, length)`` of the source;
    ``lost_seqs`` the source seqs that could not be copied (as far as the gaps tell);
    ``undecodable_seqs`` intact records whose payload did not decode.
    """

    source: str
    destination: str
    copied: int
    last_source_seq: int
    skipped: list[tuple[int, int]]
    lost_seqs: list[int]
    undecodable_seqs: list[int]


def salvage(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    event_type: Any,
    *,
    upcasters: Upcasters | None = None,
) -> SalvageReport:
    """Copy the intact records of ``src`` into a new log ``dst`` (which must not exist).

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
    events: list[Any] = []
    stamps: list[float] = []
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
        lost.extend(range(expected, seq))
        end = pos + FRAME_SIZE + length
        payload = memoryview(data)[pos + FRAME_SIZE : end]
        try:
            event = codec.decode(payload, seq) if codec is not None else bytes(payload)
        except EventDecodeError:
            undecodable.append(seq)
        else:
            events.append(event)
            stamps.append(ts)
        last_seq = seq
        expected = seq + 1
        pos = end
    if codec is None:
        _write_raw(dst, events, stamps)
    else:
        with open_writer(dst, event_type, sync="batch") as writer:
            writer.append_many(events, ts=stamps)
    return SalvageReport(
        os.fspath(src), os.fspath(dst), len(events), last_seq, skipped, lost, undecodable
    )


def _write_raw(dst: str | os.PathLike[str], payloads: list[bytes], stamps: list[float]) -> None:
    """Write a new log of ``payloads`` (already encoded) with seqs from 1; fsync it."""
    out = bytearray(header_bytes())
    for seq, (payload, ts) in enumerate(zip(payloads, stamps, strict=True), start=1):
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
