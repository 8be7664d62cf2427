"""A journal on a log file: a commit whose fsync has been fast runs on the event loop while
nothing else is runnable (no worker-thread hand-off for a lone appender), and goes to a
worker thread when the disk is slow or other tasks could run meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from eventlog_testtypes import Ev, Progressed

import eventlog
from eventlog import journal as journal_module


def _count_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each worker-thread call the journal makes, by function name."""
    calls: list[str] = []
    original = trio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    return calls


async def test_a_lone_appender_on_a_fast_disk_commits_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first commit measures the disk in a thread; the next ones, fast, run inline; every
    record is durable and reads back in order."""
    monkeypatch.setattr(journal_module, "INLINE_FLUSH_BELOW", 10.0)
    path = tmp_path / "j.log"
    with trio.fail_after(30):
        async with eventlog.open_journal(path, Ev) as journal:
            calls = _count_threads(monkeypatch)
            seqs = [(await journal.append(Progressed("a", i))).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert calls.count("_timed_flush") == 1
    assert [r.seq for r in eventlog.read(path, Ev)] == [1, 2, 3, 4, 5]


async def test_a_slow_disk_commits_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk slower than the bound: every commit goes to a worker thread."""
    monkeypatch.setattr(journal_module, "INLINE_FLUSH_BELOW", 0.0)
    path = tmp_path / "j.log"
    with trio.fail_after(30):
        async with eventlog.open_journal(path, Ev) as journal:
            calls = _count_threads(monkeypatch)
            for i in range(5):
                await journal.append(Progressed("a", i))
    assert calls.count("_timed_flush") == 5


async def test_a_commit_goes_to_a_thread_while_other_tasks_are_runnable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With other tasks runnable the fsync overlaps them in a worker thread, fast disk or not
    (as trio counts them: those queued for the next pass, so a commit that runs first in a
    pass may still go inline: with 50 busy tasks, about one in 51)."""
    monkeypatch.setattr(journal_module, "INLINE_FLUSH_BELOW", 10.0)
    path = tmp_path / "j.log"
    with trio.fail_after(30):
        async with eventlog.open_journal(path, Ev) as journal:
            await journal.append(Progressed("a", 0))  # the first measure
            calls = _count_threads(monkeypatch)
            done = False

            async def busy() -> None:
                while not done:
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(busy)
                await trio.lowlevel.checkpoint()
                for i in range(5):
                    await journal.append(Progressed("a", i))
                done = True
    assert calls.count("_timed_flush") >= 3
