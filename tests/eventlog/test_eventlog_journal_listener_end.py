"""``Journal.listen(fn, on_end=...)``: a listener told once that no more records will come,
when the journal fails (its apply raised) or closes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from eventlog_testtypes import Ev, Noted

import eventlog


async def test_on_end_is_told_once_the_journal_fails() -> None:
    """An apply that raises fails the journal: ``on_end`` gets its JournalFailedError, once
    (the listener itself is not called with the failed batch)."""
    ended: list[Exception] = []
    calls: list[int] = []

    def apply(state: Any, event: Any) -> Any:
        if event.text == "bad":
            raise RuntimeError("apply bug")
        return state

    failed_at_close = False
    with trio.fail_after(10):
        try:
            async with eventlog.open_journal(
                eventlog.MemoryLog(Ev), Ev, apply=apply, initial=None
            ) as journal:
                with journal.listen(
                    lambda records: calls.append(len(records)), on_end=ended.append
                ):
                    await journal.append(Noted("fine"))
                    with pytest.raises(eventlog.JournalFailedError):
                        await journal.append(Noted("bad"))
                    assert [type(e) for e in ended] == [eventlog.JournalFailedError]
        except eventlog.JournalFailedError:
            failed_at_close = True  # closing a failed journal says so
    assert failed_at_close
    assert calls == [1]
    assert len(ended) == 1


async def test_on_end_is_told_once_the_journal_closes() -> None:
    """Leaving open_journal with the listener still registered: ``on_end`` gets a
    LogClosedError; leaving ``listen`` first: it is never called."""
    ended: list[Exception] = []
    left: list[Exception] = []
    with trio.fail_after(10):
        async with eventlog.open_journal(eventlog.MemoryLog(Ev), Ev) as journal:
            with journal.listen(lambda records: None, on_end=left.append):
                await journal.append(Noted("a"))
            listening = journal.listen(lambda records: None, on_end=ended.append)
            listener = listening.__enter__()
        assert not listener.active
        listening.__exit__(None, None, None)
    assert [type(e) for e in ended] == [eventlog.LogClosedError]
    assert left == []
