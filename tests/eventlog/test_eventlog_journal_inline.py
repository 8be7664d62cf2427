"""The journal's inline commit: with nothing to fsync (sync="none") and nothing queued, an
append commits in the appending task, with the same seqs, state, publication and
cancellation semantics as a round trip through the committer."""

from __future__ import annotations

import math

import trio
import trio.testing
from eventlog_testtypes import Ev, Progressed, Tally, apply_tally
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog


async def test_inline_append_is_applied_and_published_before_it_returns() -> None:
    """An inline append returns its record with the state folded and subscribers fed."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with (
            eventlog.open_journal(store, Ev, apply=apply_tally, initial=Tally()) as journal,
            journal.subscribe(max_buffer=math.inf) as records,
        ):
            record = await journal.append(Progressed("a", 2))
            assert record.seq == 1
            assert journal.state.sums == {"a": 2}
            assert records.receive_nowait().seq == 1


async def test_inline_append_in_a_cancelled_scope_commits_nothing() -> None:
    """An append whose scope is already cancelled raises Cancelled and logs nothing."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev) as journal:
            with trio.CancelScope() as scope:
                scope.cancel()
                await journal.append(Progressed("a", 1))
            assert journal.last_seq == 0
            assert list(store.records()) == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12))
def test_inline_and_concurrent_appends_get_contiguous_seqs_in_log_order(
    bursts: list[int],
) -> None:
    """Bursts of concurrent appenders mixing the inline path and the committer's queue
    still get contiguous unique seqs, and the log holds them in seq order."""

    async def main() -> None:
        store = eventlog.MemoryLog(Ev, sync="none")
        got: list[int] = []
        async with eventlog.open_journal(store, Ev, apply=apply_tally, initial=Tally()) as journal:

            async def one(i: int) -> None:
                got.append((await journal.append(Progressed("x", i))).seq)

            for size in bursts:
                async with trio.open_nursery() as nursery:
                    for i in range(size):
                        nursery.start_soon(one, i)
            assert journal.state.count == sum(bursts)
        assert sorted(got) == list(range(1, sum(bursts) + 1))
        assert [r.seq for r in store.records()] == sorted(got)

    trio.run(main)
