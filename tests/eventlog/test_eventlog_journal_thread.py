"""The journal's commit thread: its own (to_thread under trio's MockClock, borrowing the default
limiter without a checkpoint), the loop running on during an fsync, failures per batch."""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from eventlog_testtypes import Ev, Noted

import eventlog
from eventlog.journal import GIL_SWITCH_SECONDS, _ImmediateLimiter


async def test_the_commit_thread_starts_without_a_checkpoint() -> None:
    """A free token is borrowed without a scheduler pass (the commit's thread starts at once)."""
    limiter = trio.CapacityLimiter(1)
    immediate = _ImmediateLimiter(limiter)
    borrower = object()
    with trio.testing.assert_no_checkpoints():
        await immediate.acquire_on_behalf_of(borrower)
    assert limiter.borrowed_tokens == 1
    immediate.release_on_behalf_of(borrower)
    assert limiter.borrowed_tokens == 0


async def test_the_commit_thread_waits_for_a_token_when_none_is_free() -> None:
    """With every token borrowed, the commit waits for one instead of exceeding the limit."""
    limiter = trio.CapacityLimiter(1)
    immediate = _ImmediateLimiter(limiter)
    holder, borrower = object(), object()
    limiter.acquire_on_behalf_of_nowait(holder)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(immediate.acquire_on_behalf_of, borrower)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            limiter.release_on_behalf_of(holder)
    assert limiter.borrowed_tokens == 1
    immediate.release_on_behalf_of(borrower)


def _blocking_flush(journal: Any, seen: dict[str, Any]) -> tuple[threading.Event, threading.Event]:
    """Make the journal's flush wait for a release; ``seen["thread"]``: where it first ran."""
    entered, release = threading.Event(), threading.Event()
    store = journal._store
    flush = store.flush

    def blocking_flush() -> None:
        seen.setdefault("thread", threading.current_thread())
        entered.set()
        release.wait(10)
        flush()

    store.flush = blocking_flush
    return entered, release


async def _until(event: threading.Event) -> None:
    """Wait for ``event`` in a thread of its own limiter (the default one is a witness)."""
    await trio.to_thread.run_sync(event.wait, 10, limiter=trio.CapacityLimiter(1))


async def test_a_commit_runs_in_the_journals_own_thread_and_the_loop_runs_on(
    tmp_path: Path,
) -> None:
    """A commit's write + fsync runs in the journal's thread; the event loop keeps running."""
    seen: dict[str, Any] = {}
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with eventlog.open_journal(tmp_path / "j.log", Ev, sync="batch") as journal:
            entered, release = _blocking_flush(journal, seen)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.append, Noted("a"))
                await _until(entered)
                nursery.start_soon(tick)
                while ticks < 100:  # the loop is not held by the fsync in flight
                    await trio.lowlevel.checkpoint()
                assert journal.last_seq == 0
                assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
                release.set()
                await journal.append(Noted("b"))
                nursery.cancel_scope.cancel()
            assert journal.last_seq == 2
    assert seen["thread"].name == "eventlog journal commit"


async def test_the_commit_thread_ends_when_the_journal_closes(tmp_path: Path) -> None:
    """Leaving open_journal lets its commit thread end."""
    seen: dict[str, Any] = {}
    with trio.fail_after(10):
        async with eventlog.open_journal(tmp_path / "j.log", Ev, sync="batch") as journal:
            _, release = _blocking_flush(journal, seen)
            release.set()
            await journal.append(Noted("a"))
        thread = seen["thread"]
        await trio.to_thread.run_sync(thread.join, 10)
    assert not thread.is_alive()


async def test_under_a_mock_clock_a_commit_in_flight_holds_a_default_limiter_token(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Under trio's MockClock a commit goes through to_thread: its default limiter (which a
    test harness watches) counts the commit while its fsync runs."""
    seen: dict[str, Any] = {}
    limiter = trio.to_thread.current_default_thread_limiter()
    async with eventlog.open_journal(tmp_path / "j.log", Ev, sync="batch") as journal:
        entered, release = _blocking_flush(journal, seen)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.append, Noted("a"))
            await _until(entered)
            assert limiter.borrowed_tokens == 1
            assert journal.last_seq == 0
            release.set()
        assert journal.last_seq == 1
        assert limiter.borrowed_tokens == 0
    assert seen["thread"].name != "eventlog journal commit"


async def test_a_flush_that_fails_in_the_commit_thread_fails_exactly_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error in the commit thread fails every append of that batch and no other;
    the next batch is written."""
    path = tmp_path / "j.log"
    real_pwrite = os.pwrite
    failing = True

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_pwrite(fd, data, offset)

    outcomes: dict[str, Any] = {}

    async def one(name: str) -> None:
        try:
            outcomes[name] = await journal.append(Noted(name))
        except eventlog.LogWriteError as exc:
            outcomes[name] = exc

    with trio.fail_after(10):
        async with eventlog.open_journal(path, Ev, sync="batch") as journal:
            monkeypatch.setattr(os, "pwrite", pwrite)
            async with trio.open_nursery() as nursery:
                for name in "abc":
                    nursery.start_soon(one, name)
            assert journal.statistics().commits == 0
            failing = False
            async with trio.open_nursery() as nursery:
                for name in "de":
                    nursery.start_soon(one, name)
    assert all(isinstance(outcomes[name], eventlog.LogWriteError) for name in "abc")
    assert sorted(outcomes[name].seq for name in "de") == [1, 2]
    assert sorted(r.event.text for r in eventlog.read(path, Ev)) == ["d", "e"]


@pytest.mark.usefixtures("default_switch_interval")
async def test_a_journal_that_fsyncs_shortens_the_switch_interval(tmp_path: Path) -> None:
    """Its commit thread needs the GIL back beside a busy loop (the convoy effect)."""
    async with eventlog.open_journal(tmp_path / "j.log", Ev, sync="batch"):
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)


@pytest.mark.usefixtures("default_switch_interval")
async def test_a_journal_without_fsync_leaves_the_switch_interval(tmp_path: Path) -> None:
    """sync="none" commits on the loop: no thread waits for the GIL."""
    async with eventlog.open_journal(tmp_path / "j.log", Ev, sync="none"):
        assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.usefixtures("default_switch_interval")
async def test_a_journal_that_writes_snapshots_shortens_the_switch_interval(
    tmp_path: Path,
) -> None:
    """sync="none", but its snapshots are written in a worker thread."""
    async with eventlog.open_journal(
        tmp_path / "j.log", Ev, sync="none", snapshot_every=10, apply=_count, initial=0
    ):
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)


def _count(state: int, record: Any) -> int:
    return state + 1


@pytest.mark.usefixtures("default_switch_interval")
async def test_a_shorter_switch_interval_is_kept(tmp_path: Path) -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS / 2)
    async with eventlog.open_journal(tmp_path / "j.log", Ev, sync="batch"):
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS / 2)
