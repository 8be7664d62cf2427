"""Torn tails versus corruption, the header's integrity, record sizes, inspect() and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted, Progressed, Started, event_lists, refuse_to_open
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog._format import CHUNK, FRAME_SIZE, HEADER_SIZE, MAX_PAYLOAD, header_bytes

SAMPLE: list[Ev] = [Started("a", 1.0), Progressed("a", 3), Noted("hi", b"\x00"), Progressed("b", 1)]


def write_log(path: Path, evs: list[Ev]) -> list[int]:
    """Write ``evs`` and return the offset where each record starts."""
    starts = []
    with eventlog.open_writer(path, Ev, sync="none") as w:
        for e in evs:
            w.flush()
            starts.append(os.path.getsize(path))
            w.append(e)
    return starts


def flip(path: Path, bit: int) -> bytes:
    """Flip one bit of the file in place; return the damaged bytes."""
    raw = bytearray(path.read_bytes())
    raw[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(raw)
    return bytes(raw)


def big_event(payload_size: int) -> Noted:
    """A Noted event whose msgpack payload is exactly ``payload_size`` bytes."""
    overhead = len(eventlog.codec.EventCodec(Ev).encoder.encode(Noted("", b"x" * 70000))) - 70000
    return Noted("", b"x" * (payload_size - overhead))


# -- the damage property ----------------------------------------------------------------------


def follow_for_a_while(path: Path) -> list[Any]:
    """The events ``follow`` yields within 1.5 (virtual) seconds; its error propagates."""
    got: list[Any] = []

    async def main() -> None:
        with trio.move_on_after(1.5):
            async for record in eventlog.follow(path, Ev, poll_interval=0.25):
                got.append(record.event)  # noqa: PERF401 - kept when the scope is cancelled

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return got


@pytest.mark.slow
@given(evs=event_lists.filter(bool), data=st.data())
def test_any_flip_or_cut_gives_an_exact_prefix_or_corruption_at_or_before_it(
    tmp_path_factory: pytest.TempPathFactory, evs: list[Ev], data: st.DataObject
) -> None:
    """Flip any bit or cut at any byte of a valid log: a cut reads as an exact prefix of the
    records, a flip raises CorruptLogError at or before it; never an upgrade error. The same
    for read, scan and follow."""
    path = tmp_path_factory.mktemp("damage") / "log"
    starts = write_log(path, evs)
    good = path.read_bytes()
    ends = [*starts[1:], len(good)]
    if data.draw(st.booleans(), label="cut"):
        cut = data.draw(st.integers(0, len(good)), label="cut at")
        path.write_bytes(good[:cut])
        complete = sum(1 for end in ends if end <= cut)
        assert [r.event for r in eventlog.read(path, Ev)] == evs[:complete]
        assert eventlog.scan(path).last_seq == complete
        assert follow_for_a_while(path) == evs[:complete]
        return
    bit = data.draw(st.integers(0, len(good) * 8 - 1), label="bit")
    damaged = flip(path, bit)
    record = max((i for i, s in enumerate(starts) if s <= bit // 8), default=-1)
    readers = (
        lambda: list(eventlog.read(path, Ev)),
        lambda: eventlog.scan(path),
        lambda: follow_for_a_while(path),
    )
    for reader in readers:
        with pytest.raises(eventlog.CorruptLogError) as info:
            reader()
        assert info.value.offset <= bit // 8
        expected = (starts[record], record + 1) if record >= 0 else (0, 0)
        assert (info.value.offset, info.value.seq) == expected
    assert eventlog.inspect(path).state == "corrupt"
    with pytest.raises(eventlog.CorruptLogError, match="salvage"):
        eventlog.open_writer(path, Ev)
    assert path.read_bytes() == damaged


# -- the header -------------------------------------------------------------------------------


@pytest.mark.parametrize("bit", range(HEADER_SIZE * 8))
def test_a_flipped_header_bit_is_corruption_at_offset_0_not_a_newer_version(
    tmp_path: Path, bit: int
) -> None:
    """Every single-bit flip in the 16-byte header, the version field included, is damage."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    flip(path, bit)
    with pytest.raises(eventlog.CorruptLogError, match="header is damaged") as info:
        list(eventlog.read(path, Ev))
    assert (info.value.offset, info.value.seq) == (0, 0)


def test_an_intact_header_of_a_newer_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    """Only a header whose CRC holds is believed when it names a version we do not know."""
    path = tmp_path / "log"
    path.write_bytes(header_bytes(version=2))
    assert eventlog.inspect(path).state == "newer-version"
    with pytest.raises(eventlog.UnsupportedVersionError, match="written by a newer program"):
        list(eventlog.read(path, Ev))


# -- torn tails -------------------------------------------------------------------------------


def test_a_torn_tail_is_truncated_with_a_one_line_notice(tmp_path: Path) -> None:
    """A record cut short by a crash is dropped on open, and writer.notice says where."""
    path = tmp_path / "log"
    starts = write_log(path, SAMPLE)
    size = path.stat().st_size
    os.truncate(path, size - 3)
    assert eventlog.inspect(path).state == "torn"
    with eventlog.open_writer(path, Ev) as w:
        assert w.last_seq == len(SAMPLE) - 1
        assert w.dropped_bytes == size - 3 - starts[-1]
        assert w.notice is not None
        assert "\n" not in w.notice
        assert f"torn tail of {w.dropped_bytes} bytes at offset {starts[-1]}" in w.notice
    with eventlog.open_writer(path, Ev) as w:
        assert w.notice is None


async def test_a_journal_passes_on_the_torn_tail_notice(tmp_path: Path) -> None:
    """open_journal on a log with a torn tail truncates it and exposes the writer's notice."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    with path.open("ab") as f:
        f.write(b"\x01\x02\x03")
    with trio.fail_after(10):
        async with eventlog.open_journal(path, Ev) as journal:
            assert journal.notice is not None
            assert "torn tail of 3 bytes" in journal.notice
            await journal.append(Noted("after"))
        async with eventlog.open_journal(path, Ev) as journal:
            assert journal.notice is None
    assert [r.event for r in eventlog.read(path, Ev)] == [*SAMPLE, Noted("after")]


def test_a_zero_filled_tail_is_torn_not_corrupt(tmp_path: Path) -> None:
    """Zero bytes after the last record (an extent a power cut left unwritten) are a torn tail."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    with path.open("ab") as f:
        f.write(bytes(100))
    assert [r.event for r in eventlog.read(path, Ev)] == SAMPLE
    assert eventlog.scan(path).torn_bytes == 100


def test_a_damaged_length_in_the_last_record_is_corruption(tmp_path: Path) -> None:
    """A length field that now runs past the end of the file is told from a torn write."""
    path = tmp_path / "log"
    starts = write_log(path, SAMPLE)
    flip(path, (starts[-1] + 4) * 8 + 12)  # bit 12 of the last record's length: +4096
    with pytest.raises(eventlog.CorruptLogError, match="length field damaged") as info:
        eventlog.scan(path)
    assert (info.value.offset, info.value.seq) == (starts[-1], len(SAMPLE))


# -- record sizes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_append_refuses_an_event_over_the_limit_and_appends_nothing(tmp_path: Path) -> None:
    """An event over MAX_PAYLOAD raises RecordTooLargeError from every writer; nothing lands."""
    path = tmp_path / "log"
    too_big = big_event(MAX_PAYLOAD + 1)
    with eventlog.open_writer(path, Ev, sync="always") as w:
        w.append(Noted("before"))
        with pytest.raises(eventlog.RecordTooLargeError, match="limit") as info:
            w.append(too_big)
        assert (info.value.size, info.value.limit) == (MAX_PAYLOAD + 1, MAX_PAYLOAD)
        with pytest.raises(eventlog.RecordTooLargeError):
            w.append_many([Noted("x"), too_big])
        assert w.last_seq == 1
        w.append(Noted("after"))
    assert [r.event for r in eventlog.read(path, Ev)] == [Noted("before"), Noted("after")]
    mem: eventlog.MemoryLog[Ev] = eventlog.MemoryLog(Ev)
    with pytest.raises(eventlog.RecordTooLargeError):
        mem.append(too_big)
    assert mem.last_seq == 0


@pytest.mark.slow
def test_a_record_of_the_maximum_size_reads_back(tmp_path: Path) -> None:
    """A record of exactly MAX_PAYLOAD bytes, between small ones, is read, scanned and salvaged."""
    path = tmp_path / "log"
    evs: list[Ev] = [Noted("a"), big_event(MAX_PAYLOAD), Noted("b")]
    write_log(path, evs)
    assert [r.event for r in eventlog.read(path, Ev)] == evs
    assert eventlog.scan(path).last_seq == 3
    assert eventlog.salvage(path, tmp_path / "copy", Ev).copied == 3


async def test_follow_yields_records_larger_than_a_read_chunk(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """follow reads a record over 4 MiB whole, before and after it is appended, no spinning."""
    path = tmp_path / "log"
    big = big_event(CHUNK + 1000)
    got: list[eventlog.Record[Any]] = []
    with trio.fail_after(60), eventlog.open_writer(path, Ev, sync="none") as w:
        w.append_many([Noted("a"), big])
        w.flush()

        async def tail() -> None:
            async for record in eventlog.follow(path, Ev, poll_interval=0.5):
                got.append(record)
                if len(got) == 4:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tail)
            await trio.sleep(2)
            w.append_many([big, Noted("b")])
            w.flush()
    assert [r.event for r in got] == [Noted("a"), big, big, Noted("b")]


async def test_follow_raises_on_a_complete_record_that_is_corrupt(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A damaged last record is not waited for forever: follow raises CorruptLogError."""
    path = tmp_path / "log"
    starts = write_log(path, SAMPLE)
    flip(path, (starts[-1] + FRAME_SIZE) * 8)
    got: list[int] = []

    async def tail() -> None:
        async for record in eventlog.follow(path, Ev, poll_interval=0.5):
            assert record.seq < len(SAMPLE), "the damaged record was yielded"
            got.append(record.seq)

    with trio.fail_after(60), pytest.raises(eventlog.CorruptLogError) as info:
        await tail()
    assert got == [1, 2, 3]
    assert info.value.offset == starts[-1]


async def test_follow_waits_for_an_unterminated_record(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A record whose declared length runs past the end is a write in progress, not damage."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])
    got: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def tail() -> None:
                async for record in eventlog.follow(path, Ev, poll_interval=0.5):
                    got.append(record.seq)
                    if record.seq == len(SAMPLE):
                        return

            nursery.start_soon(tail)
            await trio.sleep(3)
            assert got == [1, 2, 3]
            with path.open("ab") as f:
                f.write(whole[-5:])
    assert got == [1, 2, 3, 4]


async def test_follow_raises_on_a_file_this_user_may_not_open(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read permission is not waited for (as a missing file is): LogUnreadableError."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    refuse_to_open(monkeypatch, path)
    with trio.fail_after(60), pytest.raises(eventlog.LogUnreadableError, match="Permission"):
        async for _ in eventlog.follow(path, Ev, poll_interval=0.5):
            pass


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_names_every_state_in_one_line(tmp_path: Path) -> None:
    """inspect tells missing, empty, header-only, ok, torn, corrupt and not-a-log apart."""
    log = tmp_path / "log"
    assert eventlog.inspect(log).state == "missing"
    log.write_bytes(b"")
    assert eventlog.inspect(log).state == "empty"
    log.write_bytes(header_bytes()[:5])
    assert eventlog.inspect(log).state == "empty"
    log.write_bytes(header_bytes())
    assert eventlog.inspect(log).state == "header-only"
    starts = write_log(log, SAMPLE)
    ok = eventlog.inspect(log)
    assert (ok.state, ok.last_seq, ok.has_records) == ("ok", 4, True)
    os.truncate(log, log.stat().st_size - 1)
    torn = eventlog.inspect(log)
    assert (torn.state, torn.last_seq, torn.offset) == ("torn", 3, starts[-1])
    flip(log, (starts[1] + FRAME_SIZE) * 8)
    bad = eventlog.inspect(log)
    assert (bad.state, bad.offset, bad.seq) == ("corrupt", starts[1], 2)
    assert str(starts[1]) in bad.message
    assert "salvage" in bad.message
    text = tmp_path / "notes.txt"
    text.write_text("not a log at all, just some notes\n")
    assert eventlog.inspect(text).state == "not-a-log"
    assert eventlog.inspect(tmp_path).state == "not-a-log"
    for path in (log, text, tmp_path, tmp_path / "nope"):
        assert "\n" not in eventlog.inspect(path).message


def test_inspect_says_a_file_this_user_may_not_open_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read permission: a not-a-log status saying so in one line (it raised
    PermissionError, a traceback in `run --resume`)."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    refuse_to_open(monkeypatch, path)
    status = eventlog.inspect(path)
    assert (status.state, status.has_records) == ("not-a-log", False)
    assert status.message.startswith(f"cannot read event log {str(path)!r}: Permission denied")


# -- the command line -------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m eventlog`` with ``args``."""
    return subprocess.run(
        [sys.executable, "-m", "eventlog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
def test_the_salvage_command_in_the_error_message_works(tmp_path: Path) -> None:
    """The command a CorruptLogError names copies every intact record into a new log."""
    log = tmp_path / "run log"
    starts = write_log(log, SAMPLE)
    flip(log, (starts[1] + FRAME_SIZE) * 8)
    with pytest.raises(eventlog.CorruptLogError) as info:
        eventlog.scan(log)
    assert f"python -m eventlog salvage '{log}' '{log}.salvaged'" in str(info.value)
    done = run_cli("salvage", str(log), f"{log}.salvaged")
    assert done.returncode == 0, done.stderr
    assert "salvaged 3 records" in done.stdout
    assert "lost seqs: 2" in done.stdout
    got = [r.event for r in eventlog.read(f"{log}.salvaged", Ev)]
    assert got == [SAMPLE[0], *SAMPLE[2:]]
    assert run_cli("inspect", str(log)).returncode == 1
    assert run_cli("inspect", f"{log}.salvaged").returncode == 0


def test_salvage_reads_past_a_damaged_header(tmp_path: Path) -> None:
    """A flipped bit in the file header loses no record: salvage copies them all."""
    log = tmp_path / "log"
    write_log(log, SAMPLE)
    flip(log, 8 * 8 + 1)  # the version field
    report = eventlog.salvage(log, tmp_path / "copy", Ev)
    assert (report.copied, report.skipped) == (len(SAMPLE), [(0, HEADER_SIZE)])
    assert [r.event for r in eventlog.read(tmp_path / "copy", Ev)] == SAMPLE


@pytest.mark.slow
@given(evs=event_lists.filter(lambda evs: len(evs) >= 2), data=st.data())
def test_a_read_that_stops_before_the_damage_reads_the_prefix(
    tmp_path_factory: pytest.TempPathFactory, evs: list[Ev], data: st.DataObject
) -> None:
    """``read(stop_seq=N)`` on a log damaged after record N gives records 1..N, whatever
    the damage (a flipped bit, garbage appended): it never reads past N (it raised
    CorruptLogError, found by the QA round's replay --at)."""
    path = tmp_path_factory.mktemp("damage") / "log"
    offsets = write_log(path, evs)
    stop = data.draw(st.integers(min_value=1, max_value=len(evs) - 1), label="stop")
    if data.draw(st.booleans(), label="garbage appended"):
        with path.open("ab") as f:
            f.write(b"\x01garbage after the end" * 3)
        stop = len(evs)
    else:  # a bit flipped in a record after ``stop``
        start = offsets[stop]
        end = offsets[stop + 1] if stop + 1 < len(offsets) else path.stat().st_size
        flip(path, 8 * data.draw(st.integers(min_value=start, max_value=end - 1), label="at"))
    read = [r.event for r in eventlog.read(path, Ev, stop_seq=stop)]
    assert read == evs[:stop]
