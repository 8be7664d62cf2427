"""The seq -> offset index (``LOG.index``): reads start mid-log, a stale index is never trusted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from eventlog_testtypes import Ev, Noted, Progressed
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog.index import INDEX_EVERY, index_path, read_index

N = 3 * INDEX_EVERY + 123


def write_log(path: Path, n: int = N, name: str = "a") -> list[Any]:
    """A log of ``n`` Progressed events (values 1..n); returns the events."""
    events = [Progressed(name, i) for i in range(1, n + 1)]
    with eventlog.open_writer(path, Ev, sync="none") as w:
        for i in range(0, n, 1000):
            w.append_many(events[i : i + 1000])
    return events


@pytest.fixture(scope="module")
def indexed_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One log with three index entries, shared by the property below."""
    path = tmp_path_factory.mktemp("index") / "log"
    write_log(path)
    return path


def test_writer_notes_every_index_every_th_record(tmp_path: Path) -> None:
    """The writer's index holds the seq, offset and ts of records 4096, 8192, 12288."""
    log = tmp_path / "log"
    write_log(log)
    entries = read_index(log)
    assert [seq for seq, _, _ in entries] == [INDEX_EVERY, 2 * INDEX_EVERY, 3 * INDEX_EVERY]
    offsets = {seq: offset for seq, offset, _ in entries}
    fd = os.open(log, os.O_RDONLY)
    try:
        walked = {
            seq: offset
            for offset, seq, _, _ in eventlog.reader.walk_frames(log, fd, os.fstat(fd).st_size)
            if seq in offsets
        }
    finally:
        os.close(fd)
    assert walked == offsets


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
@given(start=st.integers(1, N + 5), length=st.integers(0, 2 * INDEX_EVERY))
def test_read_from_any_seq_equals_the_full_read(indexed_log: Path, start: int, length: int) -> None:
    """read(start_seq, stop_seq) through the index gives exactly the records of a full read."""
    stop = start + length
    got = [(r.seq, r.event) for r in eventlog.read(indexed_log, Ev, start_seq=start, stop_seq=stop)]
    assert got == [(s, Progressed("a", s)) for s in range(start, min(stop, N) + 1)]


def test_writer_builds_the_index_of_an_old_log(tmp_path: Path) -> None:
    """A log without an index (an older eventlog) gets one when it is opened for writing."""
    log = tmp_path / "log"
    write_log(log)
    expected = Path(index_path(log)).read_bytes()
    os.unlink(index_path(log))
    assert [r.seq for r in eventlog.read(log, Ev, start_seq=N - 1)] == [N - 1, N]
    with eventlog.open_writer(log, Ev):
        pass
    assert Path(index_path(log)).read_bytes() == expected


def test_index_of_another_log_is_not_trusted(tmp_path: Path) -> None:
    """An index copied from another log (other offsets, other ts) is checked and ignored."""
    other, log = tmp_path / "other", tmp_path / "log"
    write_log(other, name="a-much-longer-name-so-offsets-differ")
    events = [Noted(f"n{i}") for i in range(1, N + 1)]
    with eventlog.open_writer(log, Ev, sync="none") as w:
        w.append_many(events)
    shutil.copyfile(index_path(other), index_path(log))
    start = 3 * INDEX_EVERY + 7
    got = [r.event for r in eventlog.read(log, Ev, start_seq=start, stop_seq=start + 2)]
    assert got == events[start - 1 : start + 2]


def test_garbage_index_is_ignored(tmp_path: Path) -> None:
    """Entries pointing at no frame (or past the end) fall back to a read from the start."""
    log = tmp_path / "log"
    write_log(log)
    with open(index_path(log), "r+b") as f:
        f.seek(16)
        f.write(b"\x01" * 200)
    got = [r.seq for r in eventlog.read(log, Ev, start_seq=N - 2)]
    assert got == [N - 2, N - 1, N]


def test_index_forgets_records_cut_off_with_a_torn_tail(tmp_path: Path) -> None:
    """Reopening after a torn tail drops the entries past it; new records are indexed anew."""
    log = tmp_path / "log"
    write_log(log)
    cut = dict((seq, off) for seq, off, _ in read_index(log))[3 * INDEX_EVERY] + 10
    os.truncate(log, cut)  # record 12288 is cut short: a torn tail
    with eventlog.open_writer(log, Ev) as w:
        assert w.last_seq == 3 * INDEX_EVERY - 1
        assert [seq for seq, _, _ in read_index(log)] == [INDEX_EVERY, 2 * INDEX_EVERY]
        w.append_many([Noted(f"new{i}") for i in range(200)])
    got = [
        r.event
        for r in eventlog.read(log, Ev, start_seq=3 * INDEX_EVERY, stop_seq=3 * INDEX_EVERY + 1)
    ]
    assert got == [Noted("new0"), Noted("new1")]
    assert [seq for seq, _, _ in read_index(log)] == [INDEX_EVERY, 2 * INDEX_EVERY, 3 * INDEX_EVERY]


def test_index_is_truncated_when_a_write_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed fsync truncates the log back, and the index loses the entries it wrote."""
    log = tmp_path / "log"
    with eventlog.open_writer(log, Ev, sync="batch", max_batch=10**9, max_delay=1e9) as w:
        w.append_many([Progressed("a", i) for i in range(INDEX_EVERY - 1)])
        w.flush()
        w.append_many([Progressed("b", i) for i in range(10)])

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(eventlog.writer, "_fdatasync", failing)
        with pytest.raises(eventlog.LogWriteError):
            w.flush()
        monkeypatch.undo()
        assert w.last_seq == INDEX_EVERY - 1
        assert read_index(log) == []
        w.append_many([Noted("again"), Noted("and again")])
    assert [r.event for r in eventlog.read(log, Ev, start_seq=INDEX_EVERY)] == [
        Noted("again"),
        Noted("and again"),
    ]


def test_tail_only_scan_agrees_with_the_full_scan(tmp_path: Path) -> None:
    """scan(tail_only=True) finds the same end, last ts and torn tail as a full scan."""
    log = tmp_path / "log"
    write_log(log)
    assert eventlog.scan(log, tail_only=True) == eventlog.scan(log)
    with open(log, "ab") as f:
        f.write(b"\x07" * 20)  # a torn tail: a frame header cut short
    full = eventlog.scan(log)
    assert full.torn_bytes == 20
    assert eventlog.scan(log, tail_only=True) == full
    os.unlink(index_path(log))
    assert eventlog.scan(log, tail_only=True) == full


def test_tail_only_scan_does_not_read_before_the_last_entry(tmp_path: Path) -> None:
    """Damage before the last index entry is not seen by a tail-only scan (only the tail is
    read); the full scan still reports it."""
    log = tmp_path / "log"
    write_log(log)
    with open(log, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    with pytest.raises(eventlog.CorruptLogError):
        eventlog.scan(log)
    assert eventlog.scan(log, tail_only=True).last_seq == N
