"""``Journal.append_shielded``: an append a cancel of its caller does not cut, as ``append``
inside a shielded cancel scope (inline without the scope, issue 16)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted

import eventlog


@pytest.mark.parametrize("sync", ["none", "always"])
async def test_a_cancelled_caller_still_commits_its_event(sync: str) -> None:
    """Inline (sync="none") or through the committer (sync="always"): the caller's scope is
    already cancelled, the record is committed and returned all the same, and the cancel
    reaches the caller at its next checkpoint."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync=sync)  # type: ignore[arg-type]
        async with eventlog.open_journal(store, Ev) as journal:
            got: list[int] = []
            with trio.CancelScope() as scope:
                scope.cancel()
                record = await journal.append_shielded(Noted("kept"))
                got.append(record.seq)
                await trio.lowlevel.checkpoint()
                got.append(-1)  # not reached: the cancel is delivered here
            assert scope.cancelled_caught
            assert got == [1]
            assert journal.last_seq == 1
    assert [r.event for r in store.records()] == [Noted("kept")]


async def test_an_inline_append_shielded_opens_no_cancel_scope() -> None:
    """On an inline journal the shielded append needs no scope: nothing in it can be cut
    but the cancel check it leaves out (the scope was ~300 bytecodes per lifecycle event)."""
    entered: list[bool] = []
    real = trio.CancelScope.__enter__

    def counting(self: trio.CancelScope) -> trio.CancelScope:
        entered.append(self.shield)
        return real(self)

    with trio.fail_after(10):
        async with eventlog.open_journal(eventlog.MemoryLog(Ev, sync="none"), Ev) as journal:
            mp = pytest.MonkeyPatch()
            mp.setattr(trio.CancelScope, "__enter__", counting)
            try:
                await journal.append_shielded(Noted("a"))
            finally:
                mp.undo()
    assert entered == []
