"""A journal that opens N records or more past its newest usable snapshot writes one at once.

Snapshots are written when the log crosses a multiple of N: a log whose snapshots are all of
an older state type (ignored, as they must be: that state lacks what this fold keeps) and
that grows by less than N records per run was folded from its start at every open, forever
(a resume of a 1M-event run: 1.9 s each time instead of 0.7 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from eventlog_testtypes import Ev, Progressed, Tally, apply_tally

import eventlog
from eventlog.snapshot import list_snapshots, snapshot_file, snapshots_dir


def _log(path: Path, count: int) -> None:
    with eventlog.open_writer(path, Ev, sync="none") as writer:
        writer.append_many([Progressed("a", v) for v in range(count)])


def _fold(path: Path) -> Tally:
    return eventlog.fold(eventlog.read(path, Ev), apply_tally, Tally())


def _older_snapshot(directory: Path) -> Path:
    """A snapshot file of another state type (another fingerprint) in ``directory``."""
    directory.mkdir()
    older = directory / "000000000200.0123456789abcdef.snapshot"
    older.write_bytes(b"an older program's snapshot")
    return older


async def _open_and_close(path: Path, every: int, **kwargs: object) -> None:
    with trio.fail_after(30):
        async with eventlog.open_journal(
            path, Ev, apply=apply_tally, snapshot_every=every, **kwargs
        ) as journal:
            assert journal.state == _fold(path)


async def test_a_journal_folding_a_long_log_without_snapshot_writes_one_at_once(
    tmp_path: Path,
) -> None:
    """250 records, N = 100, no snapshot: one is written at 250 (its state the fold's)."""
    log = tmp_path / "log"
    _log(log, 250)
    await _open_and_close(log, 100, initial=Tally())
    directory = snapshots_dir(log)
    assert list_snapshots(directory, Tally) == [250]
    assert eventlog.read_snapshot(snapshot_file(directory, 250, Tally), Tally) == (
        250,
        _fold(log),
    )


async def test_snapshots_of_another_state_type_do_not_count(tmp_path: Path) -> None:
    """A snapshot of an older state type (another fingerprint) is left alone, and one of
    this type is written: the next open starts from it."""
    log = tmp_path / "log"
    _log(log, 250)
    directory = Path(snapshots_dir(log))
    older = _older_snapshot(directory)
    await _open_and_close(log, 100, initial=Tally())
    assert list_snapshots(directory, Tally) == [250]
    assert older.exists()
    replayed = eventlog.replay(
        log, Ev, apply_tally, Tally(), snapshot_dir=directory, state_type=Tally
    )
    assert (replayed.used_snapshot_seq, replayed.state) == (250, _fold(log))


async def test_a_recent_snapshot_is_enough(tmp_path: Path) -> None:
    """The newest snapshot fewer than N records behind the end: none is written at open."""
    log = tmp_path / "log"
    _log(log, 200)
    directory = snapshots_dir(log)
    await _open_and_close(log, 100, initial=Tally())  # writes 200
    _log(log, 50)
    await _open_and_close(log, 100, initial=Tally())
    assert list_snapshots(directory, Tally) == [200]


async def test_a_state_the_caller_folded_counts_from_the_newest_snapshot(
    tmp_path: Path,
) -> None:
    """``initial_seq`` (the caller read the log itself, past any snapshot): written too."""
    log = tmp_path / "log"
    _log(log, 250)
    await _open_and_close(log, 100, initial=_fold(log), initial_seq=250)
    assert list_snapshots(snapshots_dir(log), Tally) == [250]


async def test_a_state_of_more_records_than_the_log_holds_is_refused_unwritten(
    tmp_path: Path,
) -> None:
    """``initial_seq`` past the log's end (the log was cut or replaced since the caller read
    it): LogShorterError, and no snapshot of that state under the log's last seq (one was
    written there, and the next open trusted it)."""
    log = tmp_path / "log"
    _log(log, 250)
    read = _fold(log)
    log.unlink()
    _log(log, 120)
    with pytest.raises(eventlog.LogShorterError) as refused:
        await _open_and_close(log, 100, initial=read, initial_seq=250)
    assert (refused.value.state_seq, refused.value.last_seq) == (250, 120)
    assert list_snapshots(snapshots_dir(log), Tally) == []
