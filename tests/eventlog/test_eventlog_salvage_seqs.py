"""``salvage`` keeps the source's seqs: it renumbered the records it kept from 1, so
``replay --at SEQ`` on the copy pointed at another event than on the damaged log, and a seq
quoted in earlier output no longer matched. Each lost seq now has a place holder that the
readers skip; damage detection in an ordinary log is unchanged."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted, Progressed, Started, event_lists
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog._format import FRAME, FRAME_SIZE, LOST_RECORD, crc32c_fn

SAMPLE: list[Ev] = [
    Started("a", 1.0),
    Progressed("a", 3),
    Noted("hi", b"\x00"),
    Progressed("b", 1),
    Noted("five"),
    Progressed("c", 6),
]


def _write(path: Path, evs: list[Any]) -> list[int]:
    """Write ``evs``; return the offset where each record starts."""
    starts = []
    with eventlog.open_writer(path, Ev, sync="none") as writer:
        for event in evs:
            writer.flush()
            starts.append(os.path.getsize(path))
            writer.append(event)
    return starts


def _damage(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(raw)


def _seqs_and_events(path: Path) -> list[tuple[int, Any]]:
    return [(r.seq, r.event) for r in eventlog.read(path, Ev)]


def _damaged_sample(tmp_path: Path, *records: int) -> Path:
    """SAMPLE with a flipped payload byte in each of ``records`` (seqs)."""
    src = tmp_path / "src.log"
    starts = _write(src, SAMPLE)
    for seq in records:
        _damage(src, starts[seq - 1] + FRAME_SIZE)
    return src


def test_the_salvaged_records_keep_their_seqs(tmp_path: Path) -> None:
    """Records 2 and 4 damaged: the copy's events are at seqs 1, 3, 5, 6, as in the source."""
    src = _damaged_sample(tmp_path, 2, 4)
    originals = {seq: (seq, SAMPLE[seq - 1]) for seq in range(1, 7)}
    report = eventlog.salvage(src, tmp_path / "dst.log", Ev)
    assert _seqs_and_events(tmp_path / "dst.log") == [originals[s] for s in (1, 3, 5, 6)]
    assert (report.copied, report.lost_seqs, report.last_source_seq) == (4, [2, 4], 6)


def test_a_seq_of_a_salvaged_log_points_at_the_event_it_had(tmp_path: Path) -> None:
    """Reading up to a seq (``replay --at SEQ``), or from one, gives the events at or before
    (after) that seq in the source; a lost seq is simply not there."""
    src = _damaged_sample(tmp_path, 2)
    dst = tmp_path / "dst.log"
    eventlog.salvage(src, dst, Ev)
    assert [r.seq for r in eventlog.read(dst, Ev, stop_seq=3)] == [1, 3]
    assert [r.seq for r in eventlog.read(dst, Ev, start_seq=2, stop_seq=2)] == []
    assert [r.event for r in eventlog.read(dst, Ev, start_seq=5)] == SAMPLE[4:]


def test_a_salvaged_log_is_a_sound_log_that_takes_appends(tmp_path: Path) -> None:
    """The copy scans clean (its frames have no gap) and a writer appends after its last seq."""
    src = _damaged_sample(tmp_path, 3)
    dst = tmp_path / "dst.log"
    eventlog.salvage(src, dst, Ev)
    assert eventlog.inspect(dst).state == "ok"
    with eventlog.open_writer(dst, Ev, sync="none") as writer:
        assert writer.last_seq == 6
        writer.append(Noted("after"))
    assert [s for s, _ in _seqs_and_events(dst)] == [1, 2, 4, 5, 6, 7]


def test_follow_skips_the_place_of_a_lost_record(tmp_path: Path) -> None:
    """``follow`` (``replay --follow``) yields the same records as ``read``."""
    src = _damaged_sample(tmp_path, 1, 5)
    dst = tmp_path / "dst.log"
    eventlog.salvage(src, dst, Ev)
    got: list[int] = []

    async def main() -> None:
        with trio.move_on_after(1.0):
            async for record in eventlog.follow(dst, Ev, poll_interval=0.25):
                got.append(record.seq)  # noqa: PERF401 - kept when the scope is cancelled

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == [2, 3, 4, 6]


def test_salvage_of_a_salvaged_log_keeps_its_place_holders(tmp_path: Path) -> None:
    """A second salvage (the copy damaged in its turn) still names the first one's losses."""
    src = _damaged_sample(tmp_path, 2)
    eventlog.salvage(src, tmp_path / "one.log", Ev)
    again = eventlog.salvage(tmp_path / "one.log", tmp_path / "two.log", None)
    assert (again.copied, again.lost_seqs) == (5, [2])
    assert _seqs_and_events(tmp_path / "two.log") == _seqs_and_events(tmp_path / "one.log")


def test_an_undecodable_record_keeps_its_place_too(tmp_path: Path) -> None:
    """An intact frame whose event no type decodes is reported, and its seq stays lost."""

    class Other(Noted, tag="t.other"):
        """An event type the salvage is not told of."""

    path = tmp_path / "src.log"
    with eventlog.open_writer(path, Ev | Other, sync="none") as writer:
        writer.append_many([Noted("one"), Other("?"), Noted("three")])
    report = eventlog.salvage(path, tmp_path / "dst.log", Ev)
    assert (report.copied, report.undecodable_seqs) == (2, [2])
    assert _seqs_and_events(tmp_path / "dst.log") == [(1, Noted("one")), (3, Noted("three"))]


def test_a_gap_in_an_ordinary_log_is_still_damage(tmp_path: Path) -> None:
    """A complete frame with an intact CRC but a seq that skips one is corruption, as before:
    only the place holder (a frame of its own, seq in order) stands for a lost record."""
    path = tmp_path / "log"
    starts = _write(path, SAMPLE[:3])
    raw = bytearray(path.read_bytes())
    at = starts[1]
    _crc, length, _seq, ts = FRAME.unpack_from(raw, at)
    body = struct.pack("<IQd", length, 3, ts) + raw[at + FRAME_SIZE : at + FRAME_SIZE + length]
    raw[at : at + FRAME_SIZE + length] = struct.pack("<I", crc32c_fn(body)) + body
    path.write_bytes(raw)
    with pytest.raises(eventlog.CorruptLogError, match="seq 3 where 2 was expected"):
        list(eventlog.read(path, Ev))
    assert eventlog.inspect(path).state == "corrupt"


def test_the_place_holder_is_no_event_msgspec_encodes() -> None:
    """0xc1 is never the first byte of msgpack: no event's payload is the place holder."""
    assert LOST_RECORD == b"\xc1"
    with pytest.raises(msgspec.DecodeError):
        msgspec.msgpack.decode(LOST_RECORD)


@pytest.mark.slow
@given(evs=event_lists.filter(lambda evs: len(evs) >= 2), data=st.data())
def test_every_salvaged_record_is_the_sources_at_its_seq(evs: list[Ev], data: Any) -> None:
    """Whatever records are damaged, each record of the copy is the source's record of the
    same seq (event and ts), and every seq up to the last intact one is copied or lost."""
    damaged = data.draw(st.sets(st.integers(1, len(evs)), max_size=len(evs) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        starts = _write(src, evs)
        before = {r.seq: (r.ts, r.event) for r in eventlog.read(src, Ev)}
        for seq in damaged:
            _damage(src, starts[seq - 1] + 4)  # the length field: the hardest case
        report = eventlog.salvage(src, dst, Ev)
        copied = {r.seq: (r.ts, r.event) for r in eventlog.read(dst, Ev)}
    assert all(before[seq] == got for seq, got in copied.items())
    assert set(copied).isdisjoint(report.lost_seqs)
    assert set(copied) | set(report.lost_seqs) == set(range(1, report.last_source_seq + 1))
    assert set(copied) == set(before) - damaged or report.last_source_seq < len(evs)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventlog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_salvage_command_names_the_lost_seqs_and_a_damaged_end(tmp_path: Path) -> None:
    """Its line says the records keep their seqs, which were lost, and that records after
    the last intact one may be lost too when the damage runs to the end of the file."""
    src = _damaged_sample(tmp_path, 2, 3)
    with src.open("ab") as f:
        f.write(b"\xff" * 40)  # damaged bytes at the end, after seq 6
    done = _cli("salvage", str(src), str(tmp_path / "dst.log"))
    assert done.returncode == 0, done.stderr
    assert "salvaged 4 records" in done.stdout
    assert "each with its seq" in done.stdout
    assert "lost seqs: 2-3 (and any after seq 6, in the damaged bytes at the end)" in done.stdout


@pytest.mark.parametrize("many", [False, True], ids=["append", "append_many"])
def test_an_event_that_encodes_to_the_lost_marker_is_refused(tmp_path: Path, many: bool) -> None:
    """An event type that passes bytes through (``msgspec.Raw``) could append the lost
    record's marker (0xc1), which every reader then skips as lost: refused, nothing written,
    the log still takes the next event under the next seq."""
    path = tmp_path / "raw.log"
    with eventlog.open_writer(path, msgspec.Raw, sync="none") as writer:
        writer.append(msgspec.Raw(b"\x01"))
        marker = msgspec.Raw(b"\xc1")
        with pytest.raises(ValueError, match="marks a record lost by salvage"):
            writer.append_many([msgspec.Raw(b"\x02"), marker]) if many else writer.append(marker)
        writer.append(msgspec.Raw(b"\x03"))
    assert [(r.seq, bytes(r.event)) for r in eventlog.read(path, msgspec.Raw)] == [
        (1, b"\x01"),
        (2, b"\x03"),
    ]
    assert eventlog.scan(path).last_seq == 2
