"""A journal opened with ``hold_full_disk`` rides out a full disk: the refused batch is written
again until the disk takes it (or its patience runs out), later appends wait behind it in
order, cancelled appenders are withdrawn, and the file and the state always agree."""

from __future__ import annotations

import errno
import math
import os
import tempfile
import unittest.mock
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted, Progressed, Tally, apply_tally
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog

pytestmark = pytest.mark.usefixtures("inline_worker_threads_under_autojump")

_real_pwrite = os.pwrite
_real_ftruncate = os.ftruncate


class FullDisk:
    """``os.pwrite`` of one log's descriptor as a full disk answers it: each of the next
    ``refusals`` writes of a record batch is cut short (half its bytes land: a torn write)
    and then refused with ``error`` (ENOSPC). ``fd`` is set once the journal is open."""

    def __init__(self, refusals: float = 0, error: int = errno.ENOSPC) -> None:
        self.fd = -1
        self.refusals = refusals
        self.error = error
        self.refused = 0
        self._cut = False

    def __call__(self, fd: int, data: bytes, offset: int) -> int:
        if fd != self.fd or self.refusals <= 0:
            return _real_pwrite(fd, data, offset)
        if not self._cut and len(data) > 1:
            self._cut = True  # the first write of an attempt: short, as a filling disk makes it
            return _real_pwrite(fd, data[: len(data) // 2], offset)
        self._cut = False
        self.refusals -= 1
        self.refused += 1
        raise OSError(self.error, os.strerror(self.error))

    def watch(self, journal: Any) -> None:
        """Refuse the writes of ``journal``'s log file (its writer's descriptor)."""
        self.fd = journal._store._fd


def _file(path: Path) -> list[eventlog.Record[Any]]:
    return list(eventlog.read(path, Ev))


async def test_a_batch_refused_by_a_full_disk_is_written_once_the_disk_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """Three refusals (each a torn write), then room: the append returns seq 1 after the
    back-off (0.5 + 1 + 2 s), and the file holds that one record, whole."""
    disk = FullDisk(refusals=3)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(60):
        async with eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=600) as journal:
            disk.watch(journal)
            start = trio.current_time()
            record = await journal.append(Noted("kept"))
            waited = trio.current_time() - start
    assert record.seq == 1
    assert disk.refused == 3
    assert waited == pytest.approx(3.5)
    assert [(r.seq, r.event) for r in _file(tmp_path / "log")] == [(1, Noted("kept"))]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT])
async def test_held_says_since_when_while_the_disk_is_full(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    error: int,
) -> None:
    """A full disk or a full quota: ``held`` and the statistics say since when (the
    journal's clock) while held, nothing once the disk took the batch."""
    disk = FullDisk(refusals=math.inf, error=error)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(60):
        async with (
            eventlog.open_journal(
                tmp_path / "log", Ev, hold_full_disk=600, clock=lambda: 1234.5
            ) as journal,
            trio.open_nursery() as nursery,
        ):
            disk.watch(journal)
            assert journal.held is None
            nursery.start_soon(journal.append, Noted("held"))
            await trio.sleep(2)
            assert journal.held == 1234.5
            stats = journal.statistics()
            assert (stats.held_since, stats.holds, stats.queued) == (1234.5, 1, 1)
            disk.refusals = 0
            await trio.sleep(10)
            assert journal.held is None
            assert journal.statistics().held_since is None


async def test_appends_during_a_hold_wait_behind_it_in_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """Appends made while a batch is held queue behind it: once the disk takes them, the
    seqs are contiguous and in the order of the appends, the held one first."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    returned: dict[str, int] = {}

    async def append(name: str) -> None:
        returned[name] = (await journal.append(Noted(name))).seq

    with trio.fail_after(60):
        async with (
            eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=600) as journal,
            trio.open_nursery() as nursery,
        ):
            disk.watch(journal)
            nursery.start_soon(append, "first")
            await trio.sleep(1)
            for name in ("second", "third", "fourth"):
                nursery.start_soon(append, name)
                await trio.sleep(1)
            assert returned == {}
            assert journal.statistics().queued == 4
            disk.refusals = 0
    assert returned == {"first": 1, "second": 2, "third": 3, "fourth": 4}
    assert [r.event.text for r in _file(tmp_path / "log")] == ["first", "second", "third", "fourth"]


async def test_an_inline_commit_the_disk_refuses_is_held_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """``sync="none"`` commits inline when nothing is queued: refused, its append is held
    as a queued one, and appends made meanwhile do not commit inline ahead of it."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    returned: dict[str, int] = {}
    with trio.fail_after(60):
        async with (
            eventlog.open_journal(tmp_path / "log", Ev, sync="none", hold_full_disk=600) as journal,
            trio.open_nursery() as nursery,
        ):
            disk.watch(journal)

            async def append(name: str) -> None:
                returned[name] = (await journal.append(Noted(name))).seq

            nursery.start_soon(append, "first")
            await trio.sleep(1)
            assert journal.held is not None
            nursery.start_soon(append, "second")
            await trio.sleep(1)
            assert returned == {}
            disk.refusals = 0
    assert returned == {"first": 1, "second": 2}
    assert [r.event.text for r in _file(tmp_path / "log")] == ["first", "second"]


async def test_the_patience_ends_the_hold_with_the_disk_full_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A disk that stays full: after the patience the held append fails with DiskFullError,
    as it would have at once without the hold; the file holds nothing of it."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(600):
        async with eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=30) as journal:
            disk.watch(journal)
            start = trio.current_time()
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("lost"))
            assert trio.current_time() - start == pytest.approx(30)
            assert journal.held is None
            disk.refusals = 0
    assert _file(tmp_path / "log") == []


async def test_a_spent_hold_fails_the_next_full_disk_at_once_until_a_write_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """Once a hold ran out, the program stops on that error: a full disk then fails appends
    at once (no second 30 s), until one write succeeds, which arms the hold again."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(600):
        async with eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=30) as journal:
            disk.watch(journal)
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("lost"))
            start = trio.current_time()
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("at once"))
            assert trio.current_time() == start
            disk.refusals = 0
            await journal.append(Noted("kept"))
            disk.refusals = 1
            await journal.append(Noted("held again"))
            assert trio.current_time() - start == pytest.approx(0.5)
    assert [r.event.text for r in _file(tmp_path / "log")] == ["kept", "held again"]


async def test_another_write_error_is_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """An I/O error is not a full disk: the append fails at once, as without the hold."""
    disk = FullDisk(refusals=1, error=errno.EIO)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(60):
        async with eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=600) as journal:
            disk.watch(journal)
            start = trio.current_time()
            with pytest.raises(eventlog.LogWriteError) as caught:
                await journal.append(Noted("lost"))
            assert trio.current_time() == start
            assert not isinstance(caught.value, eventlog.DiskFullError)
            assert journal.statistics().holds == 0


async def test_a_journal_without_hold_fails_a_full_disk_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """The hold is opt-in: by default a full disk fails the batch's appends at once."""
    disk = FullDisk(refusals=1)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(60):
        async with eventlog.open_journal(tmp_path / "log", Ev) as journal:
            disk.watch(journal)
            start = trio.current_time()
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("lost"))
            assert trio.current_time() == start


async def test_an_appender_cancelled_while_held_is_withdrawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """Two appends held in one batch, one of them cancelled: it is taken out before the next
    attempt, so the file and the state hold only the other."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(60):
        async with (
            eventlog.open_journal(
                tmp_path / "log", Ev, apply=apply_tally, initial=Tally(), hold_full_disk=600
            ) as journal,
            trio.open_nursery() as nursery,
        ):
            disk.watch(journal)
            cancelled = trio.CancelScope()

            async def cancellable() -> None:
                with cancelled:
                    await journal.append(Progressed("gone", 1))

            nursery.start_soon(cancellable)
            nursery.start_soon(journal.append, Progressed("kept", 2))
            await trio.sleep(1)
            assert journal.statistics().queued == 2
            cancelled.cancel()
            await trio.sleep(3)
            assert cancelled.cancelled_caught
            assert journal.statistics().queued == 1
            disk.refusals = 0
    assert [r.event for r in _file(tmp_path / "log")] == [Progressed("kept", 2)]
    assert journal.state == Tally({"kept": 2}, 1)


async def test_stop_holding_fails_the_held_appends_now_and_holds_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """``stop_holding()`` (a program shutting down): the held append fails at once with
    DiskFullError, and a later full disk is not held."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    failed: list[BaseException] = []

    async def append() -> None:
        try:
            await journal.append(Noted("held"))
        except eventlog.DiskFullError as exc:
            failed.append(exc)

    with trio.fail_after(60):
        async with (
            eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=600) as journal,
            trio.open_nursery() as nursery,
        ):
            disk.watch(journal)
            nursery.start_soon(append)
            await trio.sleep(1)
            start = trio.current_time()
            journal.stop_holding()
            await trio.testing.wait_all_tasks_blocked()
            assert len(failed) == 1
            assert trio.current_time() == start
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("at once"))
            assert trio.current_time() == start
    assert _file(tmp_path / "log") == []


async def test_start_holding_turns_the_hold_on_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A journal opened without the hold fails a full disk at once until
    ``start_holding(S)`` (a program that holds only once it is up); then it holds."""
    disk = FullDisk(refusals=1)
    monkeypatch.setattr(os, "pwrite", disk)
    with trio.fail_after(60):
        async with eventlog.open_journal(tmp_path / "log", Ev) as journal:
            disk.watch(journal)
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("lost"))
            journal.start_holding(600)
            disk.refusals = 1
            start = trio.current_time()
            record = await journal.append(Noted("held, then kept"))
            assert trio.current_time() - start == pytest.approx(0.5)
    assert [(r.seq, r.event) for r in _file(tmp_path / "log")] == [
        (record.seq, Noted("held, then kept"))
    ]


class _Interrupted(BaseException):
    """Stands for KeyboardInterrupt (pytest would end the session on the real one)."""


async def test_an_interrupt_during_a_held_attempt_answers_every_appender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A BaseException (KeyboardInterrupt and the like) in an attempt of a held batch fails
    the journal: the held appender and the one queued behind it get JournalFailedError,
    none is left parked."""
    disk = FullDisk(refusals=1)
    real = disk.__call__

    def refuse_then_interrupt(fd: int, data: bytes, offset: int) -> int:
        if fd == disk.fd and disk.refused:
            raise _Interrupted
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse_then_interrupt)
    failed: list[str] = []

    async def append(journal: Any, name: str) -> None:
        try:
            await journal.append(Noted(name))
        except eventlog.JournalFailedError:
            failed.append(name)

    with trio.fail_after(60), pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        async with (
            trio.open_nursery() as nursery,
            eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=600) as journal,
        ):
            disk.watch(journal)
            nursery.start_soon(append, journal, "held")
            await trio.sleep(0.1)
            nursery.start_soon(append, journal, "queued")
            await trio.sleep(5)
    assert caught.group_contains(_Interrupted)
    assert sorted(failed) == ["held", "queued"]


async def test_closing_the_journal_ends_a_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """Leaving ``open_journal`` while a batch is held does not wait out the patience: the
    held append fails with DiskFullError and the journal closes."""
    disk = FullDisk(refusals=math.inf)
    monkeypatch.setattr(os, "pwrite", disk)
    failed: list[BaseException] = []

    async def append(journal: Any) -> None:
        try:
            await journal.append(Noted("held"))
        except eventlog.DiskFullError as exc:
            failed.append(exc)

    with trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            eventlog.open_journal(tmp_path / "log", Ev, hold_full_disk=600) as journal,
        ):
            disk.watch(journal)
            nursery.start_soon(append, journal)
            await trio.sleep(1)
            start = trio.current_time()
        assert trio.current_time() - start < 1
    assert len(failed) == 1
    assert _file(tmp_path / "log") == []


async def test_no_snapshot_is_written_while_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A snapshot due while the disk is full is skipped (it would only fill the disk
    further; the statistics say why); the next one is written once the disk took the log."""
    disk = FullDisk()
    monkeypatch.setattr(os, "pwrite", disk)
    log = tmp_path / "log"
    with trio.fail_after(60):
        async with (
            eventlog.open_journal(
                log, Ev, apply=apply_tally, initial=Tally(), snapshot_every=5, hold_full_disk=600
            ) as journal,
            trio.open_nursery() as nursery,
        ):
            disk.watch(journal)
            await journal.append_many([Progressed("a", i) for i in range(5)])
            await trio.testing.wait_all_tasks_blocked()
            assert journal.statistics().snapshots == 1
            disk.refusals = math.inf
            nursery.start_soon(journal.append_many, [Progressed("b", i) for i in range(5)])
            await trio.sleep(1)
            assert journal.held is not None
            journal._take_snapshot(0.0)  # one due now (as if the last commit had crossed 10)
            await trio.sleep(1)
            stats = journal.statistics()
            assert stats.snapshots == 1
            assert stats.snapshot_error == "snapshot at seq 5 skipped: the disk is full"
            disk.refusals = 0
    assert eventlog.list_snapshots(str(log) + ".snapshots", Tally) == [5, 10]


async def test_a_torn_write_whose_truncation_failed_is_cut_before_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk cut a write short and the truncation back failed too: the next write (of
    fewer bytes) truncates first, so nothing of the torn one is left past the last record."""
    path = tmp_path / "log"
    with eventlog.open_writer(path, Ev, sync="always") as writer:
        disk = FullDisk(refusals=1)
        disk.fd = writer._fd
        monkeypatch.setattr(os, "pwrite", disk)
        refuse = [True]

        def ftruncate(fd: int, size: int) -> None:
            if refuse[0]:
                refuse[0] = False
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _real_ftruncate(fd, size)

        monkeypatch.setattr(os, "ftruncate", ftruncate)
        with pytest.raises(eventlog.DiskFullError):
            writer.append(Noted("x" * 4000))
        writer.append(Noted("small"))
    monkeypatch.undo()
    info = eventlog.inspect(path)
    assert [r.event for r in _file(path)] == [Noted("small")]
    assert (info.state, info.last_seq) == ("ok", 1), info


# -- the property ------------------------------------------------------------------------------

# One appender: how many single appends, and after how many seconds of (mock) time its scope
# is cancelled (None: never), so some appends are cancelled while queued, while held between
# two attempts, or while an attempt is in flight (each takes 0.25 s: _slow_write).
plans = st.lists(
    st.tuples(st.integers(1, 6), st.none() | st.floats(0, 20)), min_size=1, max_size=10
)


@settings(max_examples=15)
@given(
    plans=plans,
    refusals=st.integers(0, 8),
    full_after=st.integers(0, 6),
    patience=st.sampled_from([3.0, 600.0]),
    max_batch=st.integers(1, 8),
    sync=st.sampled_from(["batch", "none"]),
)
@pytest.mark.slow
def test_the_file_and_the_state_agree_whatever_the_refusals_and_cancels(
    plans: list[tuple[int, float | None]],
    refusals: int,
    full_after: int,
    patience: float,
    max_batch: int,
    sync: eventlog.SyncPolicy,
) -> None:
    """The disk fills after ``full_after`` writes and refuses ``refusals`` attempts (each a
    torn write); appenders are cancelled at any point: the file's records are exactly the
    appends that returned (at the seqs they returned, each task's in its order, seqs
    contiguous), and the state is the fold of the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        disk = FullDisk()
        with (
            unittest.mock.patch.object(os, "pwrite", disk),
            unittest.mock.patch.object(trio.to_thread, "run_sync", _slow_write),
        ):
            returned, state = trio.run(
                _append_while_full,
                path,
                plans,
                disk,
                refusals,
                full_after,
                patience,
                max_batch,
                sync,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
        records = _file(path)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    got = sorted((seq, event) for seqs in returned.values() for seq, event in seqs)
    assert got == [(r.seq, r.event) for r in records]
    for seqs in returned.values():
        assert [seq for seq, _ in seqs] == sorted(seq for seq, _ in seqs)
    assert state == eventlog.fold(records, apply_tally, Tally())


async def _slow_write(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """``trio.to_thread.run_sync`` of a commit, inline, after 0.25 s of (mock) time: a write
    in flight long enough for cancels to land during it."""
    await trio.sleep(0.25)
    return fn(*args)


async def _append_while_full(
    path: Path,
    plans: list[tuple[int, float | None]],
    disk: FullDisk,
    refusals: int,
    full_after: int,
    patience: float,
    max_batch: int,
    sync: eventlog.SyncPolicy,
) -> tuple[dict[int, list[tuple[int, Any]]], Tally]:
    returned: dict[int, list[tuple[int, Any]]] = {i: [] for i in range(len(plans))}
    with trio.fail_after(3600):
        async with eventlog.open_journal(
            path,
            Ev,
            sync=sync,
            apply=apply_tally,
            initial=Tally(),
            max_batch=max_batch,
            hold_full_disk=patience,
        ) as journal:
            disk.watch(journal)
            real_flush = journal._store.flush
            writes = [0]

            def flush() -> None:  # the disk fills after full_after writes
                writes[0] += 1
                if writes[0] == full_after + 1:
                    disk.refusals = refusals
                real_flush()

            journal._store.flush = flush  # type: ignore[method-assign]

            async def run(i: int, count: int, cancel_after: float | None) -> None:
                with trio.move_on_after(math.inf if cancel_after is None else cancel_after):
                    for n in range(count):
                        event = Progressed(f"task-{i}", n)
                        try:
                            record = await journal.append(event)
                        except eventlog.DiskFullError:
                            continue  # the patience ran out: not appended
                        returned[i].append((record.seq, event))

            async with trio.open_nursery() as nursery:
                for i, (count, cancel_after) in enumerate(plans):
                    nursery.start_soon(run, i, count, cancel_after)
            state = journal.state
    return returned, state
