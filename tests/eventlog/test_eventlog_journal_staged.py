"""A commit that fails between staging its records and the disk leaves nothing behind
(found by review; the commit thread path: no MockClock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from eventlog_testtypes import Ev, Noted

import eventlog
from eventlog import journal as journal_module


def _first_thread_start_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's commit thread cannot start once (RuntimeError: can't start new
    thread, as under a pids limit), then starts."""
    real_init = journal_module._CommitThread.__init__
    failed: list[bool] = []

    def init(self: Any) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("can't start new thread")
        real_init(self)

    monkeypatch.setattr(journal_module._CommitThread, "__init__", init)


async def test_an_append_that_failed_before_its_flush_is_not_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch was staged, then the commit thread could not start: the append fails, and
    its event must not reach the log with the next commit."""
    path = tmp_path / "j.log"
    _first_thread_start_fails(monkeypatch)
    with trio.fail_after(10):
        async with eventlog.open_journal(path, Ev, sync="batch") as journal:
            with pytest.raises(RuntimeError):
                await journal.append(Noted("failed"))
            record = await journal.append(Noted("ok"))
    assert [r.event.text for r in eventlog.read(path, Ev)] == ["ok"]
    assert record.seq == 1


async def test_a_batch_committed_one_by_one_after_a_failed_start_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three appenders in one batch, the commit thread fails to start once: the one-by-one
    retry must write each event once, at the seq its appender got back."""
    path = tmp_path / "j.log"
    _first_thread_start_fails(monkeypatch)
    got: dict[str, Any] = {}

    async def one(name: str) -> None:
        try:
            got[name] = (await journal.append(Noted(name))).seq
        except RuntimeError as exc:
            got[name] = exc

    with trio.fail_after(10):
        async with eventlog.open_journal(path, Ev, sync="batch") as journal:
            async with trio.open_nursery() as nursery:
                for name in "abc":
                    nursery.start_soon(one, name)
            last_seq = journal.last_seq
    written = [(r.seq, r.event.text) for r in eventlog.read(path, Ev)]
    answered = sorted((seq, name) for name, seq in got.items() if isinstance(seq, int))
    assert written == answered, (written, got)
    assert last_seq == len(written)


@pytest.mark.parametrize("in_memory", [False, True])
async def test_a_flush_that_fails_before_the_disk_leaves_nothing_to_write_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """The store's flush raises something other than a write error before writing: the
    append fails, and its staged event never reaches the log (neither with the next
    commit nor with the close)."""
    store_type = eventlog.MemoryLog if in_memory else eventlog.LogWriter
    real_flush = store_type.flush
    failed: list[bool] = []

    def flush(self: Any) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("not the disk")
        real_flush(self)

    monkeypatch.setattr(store_type, "flush", flush)
    target: Any = eventlog.MemoryLog(Ev) if in_memory else tmp_path / "j.log"
    with trio.fail_after(10):
        async with eventlog.open_journal(target, Ev, sync="batch") as journal:
            with pytest.raises(RuntimeError):
                await journal.append(Noted("failed"))
            record = await journal.append(Noted("ok"))
    records = target.records() if in_memory else list(eventlog.read(target, Ev))
    assert [r.event.text for r in records] == ["ok"]
    assert record.seq == 1


async def test_a_flush_that_fails_after_writing_stops_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush raises after its records reached the OS: they cannot be taken back, so
    the journal stops (the log and the state could no longer be told to agree)."""

    real_flush = eventlog.LogWriter.flush
    failed: list[bool] = []

    def flush(self: Any) -> None:
        if failed:
            return real_flush(self)
        failed.append(True)
        self._write_out()
        raise RuntimeError("not the disk")

    monkeypatch.setattr(eventlog.LogWriter, "flush", flush)
    path = tmp_path / "j.log"

    async def use() -> None:
        async with eventlog.open_journal(path, Ev, sync="batch") as journal:
            with pytest.raises(RuntimeError):
                await journal.append(Noted("written"))
            with pytest.raises(eventlog.JournalFailedError):
                await journal.append(Noted("refused"))

    with trio.fail_after(10), pytest.raises(eventlog.JournalFailedError):  # also at the close
        await use()
    assert [r.event.text for r in eventlog.read(path, Ev)] == ["written"]
