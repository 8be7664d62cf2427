"""The file format and the synchronous writer/reader: round trips, damage, bad input."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pytest
from eventlog_testtypes import Ev, Noted, Progressed, Started, event_lists, refuse_to_open
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog._format import FRAME_SIZE, HEADER_SIZE, header_bytes


def write_log(path: Path, evs: list[Ev], sync: eventlog.SyncPolicy = "none") -> list[int]:
    """Write ``evs`` and return the byte offset where each record ends."""
    ends = []
    with eventlog.open_writer(path, Ev, sync=sync) as w:
        for e in evs:
            w.append(e)
            w.flush()
            ends.append(os.path.getsize(path))
    return ends


SAMPLE: list[Ev] = [
    Started("a", 1.0),
    Progressed("a", 3),
    Noted("hello", b"\x00\x01"),
    Progressed("b", -7),
    Started("b", 2.5),
]


@given(evs=event_lists)
def test_any_event_sequence_round_trips(
    tmp_path_factory: pytest.TempPathFactory, evs: list[Ev]
) -> None:
    """Whatever is appended is read back, in order, with seqs 1..n."""
    path = tmp_path_factory.mktemp("rt") / "log"
    with eventlog.open_writer(path, Ev, sync="none") as w:
        records = w.append_many(evs[: len(evs) // 2])
        records += [w.append(e) for e in evs[len(evs) // 2 :]]
    got = list(eventlog.read(path, Ev))
    assert got == records
    assert [r.event for r in got] == evs
    assert [r.seq for r in got] == list(range(1, len(evs) + 1))


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
def test_truncation_at_every_offset_yields_the_longest_complete_prefix(tmp_path: Path) -> None:
    """Cutting the file at any byte and reopening gives exactly the complete records before it."""
    src = tmp_path / "full"
    ends = write_log(src, SAMPLE)
    data = src.read_bytes()
    for cut in range(len(data) + 1):
        path = tmp_path / f"cut{cut}"
        path.write_bytes(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        assert [r.event for r in eventlog.read(path, Ev)] == SAMPLE[:complete]
        with eventlog.open_writer(path, Ev) as w:
            assert w.last_seq == complete
            good = ends[complete - 1] if complete else HEADER_SIZE
            assert w.dropped_bytes == (cut - good if cut >= HEADER_SIZE else cut)
            w.append(Noted("after"))
        assert [r.event for r in eventlog.read(path, Ev)] == [*SAMPLE[:complete], Noted("after")]


@given(data=st.data())
def test_any_flipped_bit_in_a_record_is_detected_with_its_offset(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A flipped bit in any record, the last one included, raises CorruptLogError naming
    that record's offset and seq, from the reader, scan and a writer (which changes nothing)."""
    path = tmp_path_factory.mktemp("flip") / "log"
    ends = write_log(path, SAMPLE)
    starts = [HEADER_SIZE, *ends[:-1]]
    raw = bytearray(path.read_bytes())
    bit = data.draw(st.integers(HEADER_SIZE * 8, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(raw)
    index = max(i for i, s in enumerate(starts) if s <= bit // 8)
    with pytest.raises(eventlog.CorruptLogError) as info:
        list(eventlog.read(path, Ev))
    assert (info.value.offset, info.value.seq) == (starts[index], index + 1)
    assert str(starts[index]) in str(info.value)
    with pytest.raises(eventlog.CorruptLogError):
        eventlog.scan(path)
    with pytest.raises(eventlog.CorruptLogError, match="salvage"):
        eventlog.open_writer(path, Ev)
    assert path.read_bytes() == raw


def test_corruption_in_the_middle_leaves_the_file_untouched(tmp_path: Path) -> None:
    """Opening a writer on a log damaged in the middle raises and does not truncate it."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + FRAME_SIZE] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(eventlog.CorruptLogError, match="salvage"):
        eventlog.open_writer(path, Ev)
    assert path.read_bytes() == raw


def test_new_log_file_has_mode_0600(tmp_path: Path) -> None:
    """A log created by the writer is readable and writable by its owner only."""
    path = tmp_path / "log"
    with eventlog.open_writer(path, Ev):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_second_writer_gets_log_locked_error_naming_the_path(tmp_path: Path) -> None:
    """Only one writer at a time; the second fails at once, and the lock goes with close."""
    path = tmp_path / "log"
    with eventlog.open_writer(path, Ev), pytest.raises(eventlog.LogLockedError, match="log"):
        eventlog.open_writer(path, Ev)
    with eventlog.open_writer(path, Ev) as w:
        assert w.last_seq == 0


def test_directory_path_is_a_clear_error(tmp_path: Path) -> None:
    """A directory is neither written nor read as a log."""
    with pytest.raises(eventlog.NotALogError, match="directory"):
        eventlog.open_writer(tmp_path, Ev)
    with pytest.raises(eventlog.NotALogError, match="directory"):
        list(eventlog.read(tmp_path, Ev))


def test_a_file_this_user_may_not_open_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read permission: read and scan raise LogUnreadableError (a NotALogError and an
    OSError with the open's errno), not a bare PermissionError."""
    path = tmp_path / "log"
    write_log(path, SAMPLE)
    refuse_to_open(monkeypatch, path)
    for attempt in (lambda: list(eventlog.read(path, Ev)), lambda: eventlog.scan(path)):
        with pytest.raises(eventlog.LogUnreadableError) as info:
            attempt()
        assert isinstance(info.value, eventlog.NotALogError)
        assert info.value.errno == errno.EACCES
        assert str(info.value) == (
            f"cannot read event log {str(path)!r}: Permission denied; give this user read"
            " access to it, or run as its owner"
        )


def test_wrong_magic_is_not_a_log(tmp_path: Path) -> None:
    """A file that is not an event log is refused and left unchanged."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"just some text, long enough for a header\n")
    with pytest.raises(eventlog.NotALogError, match="magic"):
        eventlog.open_writer(path, Ev)
    with pytest.raises(eventlog.NotALogError):
        eventlog.scan(path)
    assert path.read_bytes() == b"just some text, long enough for a header\n"


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    """A log from a newer format version raises UnsupportedVersionError naming both versions."""
    path = tmp_path / "log"
    path.write_bytes(header_bytes(version=7))
    with pytest.raises(eventlog.UnsupportedVersionError, match="version 7") as info:
        eventlog.open_writer(path, Ev)
    assert info.value.version == 7


def test_missing_log_read_is_log_not_found(tmp_path: Path) -> None:
    """Reading a path that does not exist raises LogNotFoundError (a FileNotFoundError)."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(eventlog.read(tmp_path / "nope", Ev))


@pytest.mark.parametrize("partial", [False, True])
def test_disk_full_append_fails_loudly_and_leaves_the_file_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bool
) -> None:
    """An ENOSPC write raises DiskFullError; the file is truncated back and still appendable."""
    path = tmp_path / "log"
    with eventlog.open_writer(path, Ev, sync="always") as w:
        w.append(Started("a", 1.0))
        size = path.stat().st_size
        real_pwrite = os.pwrite

        def full_disk(fd: int, data: bytes, offset: int) -> int:
            if partial:
                real_pwrite(fd, bytes(data)[:10], offset)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "pwrite", full_disk)
        with pytest.raises(eventlog.DiskFullError, match="unchanged"):
            w.append(Progressed("a", 1))
        assert w.last_seq == 1
        assert path.stat().st_size == size
        monkeypatch.setattr(os, "pwrite", real_pwrite)
        w.append(Progressed("a", 2))
    assert [r.event for r in eventlog.read(path, Ev)] == [Started("a", 1.0), Progressed("a", 2)]


def test_read_range_by_seq_and_time(tmp_path: Path) -> None:
    """start_seq, stop_seq (inclusive) and stop_ts (inclusive) select records."""
    path = tmp_path / "log"
    times = iter([10.0, 20.0, 30.0, 40.0, 50.0])
    with eventlog.open_writer(path, Ev, clock=lambda: next(times)) as w:
        w.append_many([])
        for e in SAMPLE:
            w.append(e)
    assert [r.seq for r in eventlog.read(path, Ev, start_seq=2, stop_seq=4)] == [2, 3, 4]
    assert [r.ts for r in eventlog.read(path, Ev, stop_ts=30.0)] == [10.0, 20.0, 30.0]
    assert list(eventlog.read(path, Ev, start_seq=6)) == []


def test_reader_sees_complete_records_of_a_log_being_written(tmp_path: Path) -> None:
    """A partly written last record (a write in progress) is not an error for a reader."""
    path = tmp_path / "log"
    with eventlog.open_writer(path, Ev, sync="none") as w:
        w.append(Started("a", 1.0))
        w.flush()
        with open(path, "ab") as f:
            f.write(b"\x01\x02\x03")  # the first bytes of a frame still being written
        assert [r.seq for r in eventlog.read(path, Ev)] == [1]
        assert eventlog.scan(path).torn_bytes == 3


def test_append_of_a_foreign_type_is_refused_before_writing(tmp_path: Path) -> None:
    """An object outside event_type raises TypeError and nothing is written."""
    path = tmp_path / "log"
    with eventlog.open_writer(path, Ev) as w:
        with pytest.raises(TypeError, match="not part of the event type"):
            w.append("nope")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            w.append_many([Noted("x"), 3])  # type: ignore[list-item]
        assert w.last_seq == 0
    assert list(eventlog.read(path, Ev)) == []


def test_closed_writer_refuses_appends(tmp_path: Path) -> None:
    """After close, append raises LogClosedError; close is idempotent."""
    w = eventlog.open_writer(tmp_path / "log", Ev)
    w.close()
    w.close()
    with pytest.raises(eventlog.LogClosedError):
        w.append(Noted("x"))


def test_fold_applies_events_in_order() -> None:
    """fold is a left fold of apply over the records' events."""
    records = [eventlog.Record(i, 0.0, i) for i in range(1, 5)]
    assert eventlog.fold(records, lambda s, e: [*s, e], []) == [1, 2, 3, 4]


def test_public_names_are_exported() -> None:
    """eventlog.__all__ lists exactly the public API, and each name exists."""
    expected = {
        "open_writer", "read", "scan", "follow", "fold", "Record", "LogInfo", "LogWriter",
        "LogFollower", "Journal", "open_journal", "JournalStatistics", "EventStore", "MemoryLog",
        "write_snapshot", "read_snapshot", "replay", "ReplayResult", "salvage",
        "SalvageReport", "SyncPolicy", "Upcaster", "Upcasters", "EventLogError",
        "CorruptLogError", "LogLockedError", "LogShorterError", "NotALogError",
        "UnsupportedVersionError",
        "UnknownEventError", "EventDecodeError", "DiskFullError", "LogWriteError",
        "LogClosedError", "LogNotFoundError", "LogUnreadableError", "SnapshotError",
        "SubscriberOverflowError",
        "JournalFailedError", "RecordTooLargeError", "inspect", "LogStatus", "LogState",
        "snapshots_dir", "snapshot_file", "list_snapshots", "Listener", "being_written",
        "writer_pid",
    }  # fmt: skip
    assert set(eventlog.__all__) == expected
    assert all(hasattr(eventlog, name) for name in eventlog.__all__)
    assert all(
        issubclass(getattr(eventlog, n), eventlog.EventLogError)
        for n in expected
        if n.endswith("Error")
    )


def test_journal_names_load_lazily_as_the_public_objects() -> None:
    """The journal's names, loaded on first use (no trio for a plain read), are the journal
    module's objects; ``follow`` is the function even once its submodule is imported; an
    unknown name is an AttributeError."""
    import eventlog.follow
    import eventlog.journal as journal_module

    assert eventlog.follow is sys.modules["eventlog.follow"].follow
    assert eventlog.open_journal is journal_module.open_journal
    assert eventlog.Journal is journal_module.Journal
    assert eventlog.EventStore is journal_module.EventStore
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = eventlog.no_such_name  # type: ignore[attr-defined]


@given(evs=event_lists, chunk=st.integers(1, 200))
def test_reading_in_small_chunks_gives_the_same_records(
    tmp_path_factory: pytest.TempPathFactory,
    evs: list[Ev],
    chunk: int,
) -> None:
    """Frames that straddle read chunks are reassembled (read and scan agree on every size)."""
    path = tmp_path_factory.mktemp("chunks") / "log"
    with eventlog.open_writer(path, Ev, sync="none") as w:
        w.append_many(evs)
    expected = list(eventlog.read(path, Ev))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eventlog.reader, "CHUNK", chunk)
        assert list(eventlog.read(path, Ev)) == expected
        assert eventlog.scan(path).last_seq == len(evs)


@pytest.mark.parametrize("window", [1, 7, 64])
def test_damage_search_works_across_small_windows(tmp_path: Path, window: int) -> None:
    """The windowed search for intact records after an unterminated one (its length field
    damaged to run past the end of the file) finds them across windows."""
    path = tmp_path / "log"
    ends = write_log(path, SAMPLE)
    good = path.read_bytes()
    raw = bytearray(good)
    raw[HEADER_SIZE + 6] ^= 0x01  # record 1's length + 65536: past the end of the file
    path.write_bytes(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eventlog._format, "CHUNK", window)
        with pytest.raises(eventlog.CorruptLogError, match="intact records after") as info:
            eventlog.scan(path)
        assert (info.value.offset, info.value.seq) == (HEADER_SIZE, 1)
        path.write_bytes(good[: ends[-2] + 30])  # only a torn tail this time
        assert eventlog.scan(path).last_seq == len(SAMPLE) - 1


def test_being_written_while_a_writer_holds_the_log(tmp_path: Path) -> None:
    """A live writer's log is being written; once it closes, or for a file that is not
    there, it is not (the probe takes and drops a shared lock: it never blocks a writer)."""
    path = tmp_path / "w.log"
    assert not eventlog.being_written(path)
    writer = eventlog.open_writer(path, int, sync="none")
    try:
        assert eventlog.being_written(path)
        writer.append(1)
    finally:
        writer.close()
    assert not eventlog.being_written(path)
    eventlog.open_writer(path, int, sync="none").close()  # the probe left no lock behind
