"""The journal's inline commit: with nothing to fsync (sync="none") and nothing queued, an
append commits in the appending task, with the same seqs, state, publication and
cancellation semantics as a round trip through the committer."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted, Progressed, Tally, apply_tally
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


async def test_inline_append_many_commits_in_the_appending_task() -> None:
    """An append_many with nothing queued commits inline: applied and published when it
    returns, its committer never woken (issue 16), contiguous seqs."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with (
            eventlog.open_journal(store, Ev, apply=apply_tally, initial=Tally()) as journal,
            journal.subscribe(max_buffer=math.inf) as records,
        ):
            got = await journal.append_many([Progressed("a", 1), Progressed("b", 2)])
            assert [r.seq for r in got] == [1, 2]
            assert journal.state.sums == {"a": 1, "b": 2}
            assert [records.receive_nowait().seq for _ in range(2)] == [1, 2]
            assert journal.statistics().commits == 1


async def test_inline_append_many_in_a_cancelled_scope_commits_nothing() -> None:
    """An inline append_many whose scope is already cancelled logs none of its events."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev) as journal:
            with trio.CancelScope() as scope:
                scope.cancel()
                await journal.append_many([Progressed("a", 1), Progressed("b", 1)])
            assert journal.last_seq == 0
            assert list(store.records()) == []


async def test_a_listener_sees_each_commit_applied_before_the_appender_resumes() -> None:
    """A listener is called in the committing task with every durable batch, in order,
    with the state already folded, before the append returns."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev, apply=apply_tally, initial=Tally()) as journal:
            seen: list[tuple[list[int], dict[str, int]]] = []

            def fn(records: list[eventlog.Record[Ev]]) -> None:
                seen.append(([r.seq for r in records], dict(journal.state.sums)))

            with journal.listen(fn) as listener:
                await journal.append(Progressed("a", 1))
                assert seen == [([1], {"a": 1})]
                await journal.append_many([Progressed("a", 2), Progressed("b", 3)])
                assert listener.active
            await journal.append(Progressed("c", 1))  # after the with: not called
    assert seen == [([1], {"a": 1}), ([2, 3], {"a": 3, "b": 3})]
    assert not listener.active


async def test_a_raising_listener_is_dropped_and_the_commit_goes_on() -> None:
    """A listener that raises is dropped (active False); the append succeeds, the state and
    the other listeners are unaffected."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev, apply=apply_tally, initial=Tally()) as journal:
            calls: list[int] = []

            def broken(records: list[eventlog.Record[Ev]]) -> None:
                calls.append(-1)
                raise RuntimeError("boom")

            def fine(records: list[eventlog.Record[Ev]]) -> None:
                calls.extend(r.seq for r in records)

            with journal.listen(broken) as bad, journal.listen(fine) as good:
                assert (await journal.append(Progressed("a", 1))).seq == 1
                await journal.append(Progressed("a", 1))
                assert not bad.active
                assert good.active
            assert journal.state.sums == {"a": 2}
    assert calls == [-1, 1, 2]


async def test_a_listener_turns_inactive_when_the_journal_closes() -> None:
    """Leaving open_journal marks a listener still registered inactive."""
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        with contextlib.ExitStack() as stack:
            async with eventlog.open_journal(store, Ev) as journal:
                listener = stack.enter_context(journal.listen(lambda records: None))
                assert listener.active
            assert not listener.active


async def test_a_listener_that_raises_is_dropped_and_its_error_raised_to_its_keeper() -> None:
    """A listener that raises is dropped (the commit goes on: its records are durable and
    applied), and ``wait_raised`` raises that error in the task that keeps the listener."""
    calls: list[int] = []

    def fn(records: list[Any]) -> None:
        calls.append(len(records))
        raise ValueError("listener broke")

    async with eventlog.open_journal(eventlog.MemoryLog(Ev), Ev) as journal:
        with journal.listen(fn) as listener:
            record = await journal.append(Noted("a"))
            await journal.append(Noted("b"))
            with trio.fail_after(1), pytest.raises(ValueError, match="listener broke"):
                await listener.wait_raised()
    assert record.seq == 1
    assert calls == [1]
    assert not listener.active


async def test_inline_appends_yield_once_per_streak() -> None:
    """An inline commit returns without a task switch (nothing to wait for); one in every
    INLINE_STREAK commits in a row also yields, so an appending loop cannot hog the loop."""
    from eventlog.journal import INLINE_STREAK

    me = trio.lowlevel.current_task()

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.n = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is me:
                self.n += 1

    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev) as journal:
            steps = Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                for i in range(INLINE_STREAK - 1):
                    await journal.append(Progressed("a", i))
                assert steps.n == 0  # no task switch: this task was never stepped again
                for i in range(2 * INLINE_STREAK):
                    await journal.append(Progressed("a", i))
                assert steps.n == 2  # the streak's last append yielded, each time
            finally:
                trio.lowlevel.remove_instrument(steps)
            await journal.append_many([Progressed("b", 1), Progressed("b", 2)])
            assert journal.last_seq == 3 * INLINE_STREAK + 1


async def test_a_bounded_subscriber_that_keeps_up_is_not_cut_off_by_an_appending_loop() -> None:
    """With a bounded subscriber every inline append yields, so one that reads as fast as it
    is fed keeps up with a task appending in a loop (found by review)."""
    got: list[int] = []
    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev) as journal:
            ready = trio.Event()

            async def consume() -> None:
                async with journal.subscribe() as records:  # the default max_buffer (1024)
                    ready.set()
                    async for record in records:
                        got.append(record.seq)
                        if record.seq == 2000:
                            return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await ready.wait()
                for i in range(2000):
                    await journal.append(Progressed("a", i))
    assert got == list(range(1, 2001))


@pytest.mark.parametrize("how", ["left", "cut off"])
async def test_inline_appends_stop_yielding_each_once_the_bounded_subscriber_is_gone(
    how: str,
) -> None:
    """While a bounded subscriber is subscribed every inline commit yields; once it left its
    block or was cut off (overflow), an inline commit yields only once per streak again."""
    from eventlog.journal import INLINE_STREAK

    me = trio.lowlevel.current_task()

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.n = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is me:
                self.n += 1

    with trio.fail_after(10):
        store = eventlog.MemoryLog(Ev, sync="none")
        async with eventlog.open_journal(store, Ev) as journal:
            steps = Steps()
            with contextlib.suppress(eventlog.SubscriberOverflowError):
                async with journal.subscribe(max_buffer=2), journal.subscribe(math.inf):
                    trio.lowlevel.add_instrument(steps)
                    try:
                        for i in range(3 if how == "cut off" else 2):
                            await journal.append(Progressed("a", i))
                    finally:
                        trio.lowlevel.remove_instrument(steps)
                    # One yield per commit while it is subscribed (the third commit cut it
                    # off: it did not yield).
                    assert steps.n == 2
            steps.n = 0
            trio.lowlevel.add_instrument(steps)
            try:
                # (The cut-off commit did not yield: its streak goes on from 1.)
                for i in range(INLINE_STREAK - 2):
                    await journal.append(Progressed("b", i))
                assert steps.n == 0
            finally:
                trio.lowlevel.remove_instrument(steps)
