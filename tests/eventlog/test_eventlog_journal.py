"""The trio journal: group commit, seq order, persist-then-apply-then-publish, failures."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted, Progressed, Tally, apply_tally

import eventlog


@pytest.fixture(params=["file", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A path to a new log file, or a new MemoryLog."""
    if request.param == "file":
        return tmp_path / "journal.log"
    return eventlog.MemoryLog(Ev, sync="batch")


def reopened(backend: Any) -> Any:
    """The same log again, as a new writer would see it after close."""
    if isinstance(backend, Path):
        return backend
    backend.close()
    return backend.reopen()


def all_records(backend: Any) -> list[eventlog.Record[Any]]:
    """Every record of the backend, read back."""
    if isinstance(backend, Path):
        return list(eventlog.read(backend, Ev))
    return list(backend.records())


async def test_hundred_concurrent_appenders_get_contiguous_unique_seqs(backend: Any) -> None:
    """100 tasks appending at once get seqs 1..100; after reopen, appends continue at 101."""
    got: list[int] = []
    with trio.fail_after(20):
        async with eventlog.open_journal(backend, Ev) as journal:

            async def one(i: int) -> None:
                got.append((await journal.append(Progressed(f"t{i}", i))).seq)

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(one, i)
            assert journal.last_seq == 100
            stats = journal.statistics()
            assert stats.appended == 100
            assert stats.commits < 100  # group commit shared fsyncs
        assert sorted(got) == list(range(1, 101))
        store = reopened(backend)
        async with eventlog.open_journal(store, Ev) as journal:
            records = [await journal.append(Noted("again")) for _ in range(3)]
        assert [r.seq for r in records] == [101, 102, 103]
    assert [r.seq for r in all_records(store)] == list(range(1, 104))


async def test_seqs_follow_append_order_within_a_task(backend: Any) -> None:
    """Sequential appends and append_many from one task get increasing contiguous seqs."""
    with trio.fail_after(20):
        async with eventlog.open_journal(backend, Ev) as journal:
            a = await journal.append(Noted("a"))
            many = await journal.append_many([Noted("b"), Noted("c")])
            assert await journal.append_many([]) == []
    assert [a.seq, *(r.seq for r in many)] == [1, 2, 3]
    assert [r.event for r in all_records(backend)] == [Noted("a"), Noted("b"), Noted("c")]


async def test_subscribers_see_records_only_after_they_are_durable_and_applied(
    backend: Any,
) -> None:
    """Each published record is already in the log (durable) and folded into the state."""
    seen: list[int] = []
    all_seen = trio.Event()
    with trio.fail_after(20):
        async with eventlog.open_journal(
            backend, Ev, apply=apply_tally, initial=Tally()
        ) as journal:

            async def watch(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                async with journal.subscribe(max_buffer=math.inf) as records:
                    task_status.started()
                    async for record in records:
                        if isinstance(backend, Path):
                            on_disk = eventlog.scan(backend).last_seq
                        else:
                            on_disk = backend.durable_seq
                        assert on_disk >= record.seq
                        assert journal.state.count >= record.seq
                        seen.append(record.seq)
                        if len(seen) == 50:
                            all_seen.set()

            async with trio.open_nursery() as nursery:
                await nursery.start(watch)
                async with trio.open_nursery() as appenders:
                    for i in range(50):
                        appenders.start_soon(journal.append, Progressed("x", i))
                await all_seen.wait()
                nursery.cancel_scope.cancel()
    assert seen == list(range(1, 51))


async def test_state_is_the_fold_of_the_log_including_records_from_before(backend: Any) -> None:
    """open_journal folds the existing records into the initial state; state == replay."""
    with trio.fail_after(20):
        async with eventlog.open_journal(backend, Ev) as journal:
            await journal.append_many([Progressed("a", 2), Progressed("b", 5)])
        store = reopened(backend)
        async with eventlog.open_journal(store, Ev, apply=apply_tally, initial=Tally()) as journal:
            await journal.append(Progressed("a", 1))
            state = journal.state
    assert state == Tally({"a": 3, "b": 5}, 3)
    assert eventlog.fold(all_records(store), apply_tally, Tally()) == state


async def test_slow_subscriber_is_cut_off_with_an_error_it_can_see(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber that falls max_buffer behind is closed; leaving subscribe() raises."""
    received: list[int] = []
    with trio.fail_after(10):
        async with eventlog.open_journal(eventlog.MemoryLog(Ev), Ev) as journal:

            async def stuck_subscriber() -> None:
                async with journal.subscribe(max_buffer=2) as records:
                    for i in range(5):  # never blocked by the stuck subscriber
                        await journal.append(Noted(str(i)))
                    received.extend([r.seq async for r in records])

            with pytest.raises(eventlog.SubscriberOverflowError, match="seq 3") as info:
                await stuck_subscriber()
            assert received == [1, 2]
            assert info.value.seq == 3
            assert journal.statistics().subscribers == 0


async def test_closing_the_journal_ends_subscriptions_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the journal closes, a subscriber's channel just ends (no error)."""
    got: list[int] = []
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            eventlog.open_journal(eventlog.MemoryLog(Ev), Ev) as journal,
        ):

            async def watch(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                async with journal.subscribe() as records:
                    task_status.started()
                    got.extend([r.seq async for r in records])

            await nursery.start(watch)
            await journal.append(Noted("x"))
    assert got == [1]


async def test_ts_comes_from_the_given_clock(autojump_clock: trio.testing.MockClock) -> None:
    """Under MockClock a lambda clock stamps each record with the append's time."""
    with trio.fail_after(10):
        async with eventlog.open_journal(
            eventlog.MemoryLog(Ev), Ev, clock=lambda: 1000.0 + trio.current_time()
        ) as journal:
            await trio.sleep(5)
            record = await journal.append(Noted("x"))
    assert record.ts == pytest.approx(1005.0)


async def test_cancelled_queued_append_is_withdrawn(autojump_clock: trio.testing.MockClock) -> None:
    """An append cancelled before its batch is taken is never written."""
    log = eventlog.MemoryLog(Ev)
    with trio.fail_after(10):
        async with eventlog.open_journal(log, Ev, max_delay=1.0, max_batch=10) as journal:
            with trio.move_on_after(0.5):
                await journal.append(Noted("withdrawn"))
            record = await journal.append(Noted("kept"))
    assert record.seq == 1
    assert [r.event for r in log.records()] == [Noted("kept")]


async def test_appends_around_a_withdrawn_one_get_their_own_records(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A cancel in the middle of an open batch: the appends before and after it (single and
    many) get their own records, and the withdrawn one is not written."""
    log = eventlog.MemoryLog(Ev)
    got: dict[str, Any] = {}
    with trio.fail_after(10):
        async with eventlog.open_journal(log, Ev, max_delay=1.0, max_batch=10) as journal:

            async def one(name: str) -> None:
                got[name] = await journal.append(Noted(name))

            async def many(name: str) -> None:
                got[name] = await journal.append_many([Noted(name), Progressed(name, 1)])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(many, "before")
                await trio.sleep(0.1)
                with trio.move_on_after(0.1):
                    await journal.append(Noted("withdrawn"))
                nursery.start_soon(one, "after")
                await trio.sleep(0.1)
                nursery.start_soon(many, "last")
            assert journal.statistics().commits == 1
    assert [(r.seq, r.event) for r in got["before"]] == [
        (1, Noted("before")),
        (2, Progressed("before", 1)),
    ]
    assert (got["after"].seq, got["after"].event) == (3, Noted("after"))
    assert [(r.seq, r.event) for r in got["last"]] == [
        (4, Noted("last")),
        (5, Progressed("last", 1)),
    ]
    assert [r.event for r in log.records()] == [
        Noted("before"),
        Progressed("before", 1),
        Noted("after"),
        Noted("last"),
        Progressed("last", 1),
    ]


async def test_a_cancel_in_a_reused_batch_withdraws_only_its_own_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Batches (and their slots' abort callbacks) are reused after a commit: a cancel in a
    later batch still withdraws exactly its own entry, and the queue count follows it."""
    log = eventlog.MemoryLog(Ev)
    got: dict[str, Any] = {}
    with trio.fail_after(10):
        async with eventlog.open_journal(log, Ev, max_delay=1.0, max_batch=10) as journal:

            async def one(name: str) -> None:
                got[name] = await journal.append(Noted(name))

            for round_ in ("r1", "r2"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(one, f"{round_}-before")
                    await trio.sleep(0.1)
                    with trio.move_on_after(0.1):
                        await journal.append(Noted(f"{round_}-withdrawn"))
                    assert journal.statistics().queued == 1
                    nursery.start_soon(one, f"{round_}-after")
                    await trio.sleep(0.1)
                    assert journal.statistics().queued == 2
            assert journal.statistics().commits == 2
    assert [(got[name].seq, got[name].event) for name in sorted(got)] == [
        (2, Noted("r1-after")),
        (1, Noted("r1-before")),
        (4, Noted("r2-after")),
        (3, Noted("r2-before")),
    ]
    assert [r.event.text for r in log.records()] == [
        "r1-before",
        "r1-after",
        "r2-before",
        "r2-after",
    ]


async def test_an_event_that_does_not_encode_fails_only_its_own_append(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One event msgspec cannot encode in a shared batch: that append raises, the others of
    the batch are written and get their own records."""
    log = eventlog.MemoryLog(Ev)
    got: dict[str, Any] = {}
    unencodable = Noted(object())  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with eventlog.open_journal(log, Ev, max_delay=1.0, max_batch=10) as journal:

            async def one(name: str, event: Any) -> None:
                try:
                    got[name] = await journal.append(event)
                except TypeError as exc:
                    got[name] = exc

            async with trio.open_nursery() as nursery:
                for name, event in [("a", Noted("a")), ("bad", unencodable), ("b", Noted("b"))]:
                    nursery.start_soon(one, name, event)
                    await trio.sleep(0.1)
    assert isinstance(got["bad"], TypeError)
    assert (got["a"].seq, got["a"].event) == (1, Noted("a"))
    assert (got["b"].seq, got["b"].event) == (2, Noted("b"))
    assert [r.event for r in log.records()] == [Noted("a"), Noted("b")]


async def test_max_delay_groups_appends_into_one_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With max_delay, appends spread over that delay share one commit."""
    log = eventlog.MemoryLog(Ev)
    with trio.fail_after(10):
        async with eventlog.open_journal(log, Ev, max_delay=1.0, max_batch=100) as journal:
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(journal.append, Noted(str(i)))
                    await trio.sleep(0.1)
            assert journal.statistics().commits == 1


async def test_always_policy_commits_each_append_alone(tmp_path: Path) -> None:
    """Under sync="always" every append gets its own fsync, even when concurrent."""
    with trio.fail_after(20):
        async with eventlog.open_journal(tmp_path / "log", Ev, sync="always") as journal:
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(journal.append, Noted(str(i)))
            assert journal.statistics().commits == 5


async def test_disk_full_fails_that_batch_and_the_journal_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ENOSPC commit fails its appends with DiskFullError; later appends succeed."""
    path = tmp_path / "log"
    real_pwrite = os.pwrite
    full = True

    def maybe_full(fd: int, data: bytes, offset: int) -> int:
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    with trio.fail_after(20):
        async with eventlog.open_journal(path, Ev) as journal:
            monkeypatch.setattr(os, "pwrite", maybe_full)
            with pytest.raises(eventlog.DiskFullError):
                await journal.append(Noted("lost"))
            full = False
            record = await journal.append(Noted("kept"))
    assert record.seq == 1
    assert [r.event for r in eventlog.read(path, Ev)] == [Noted("kept")]


async def test_apply_that_raises_fails_the_journal_loudly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """If apply raises, appends and open_journal's exit raise JournalFailedError."""

    def bad_apply(state: int, event: Any) -> int:
        raise ZeroDivisionError("bug in apply")

    async def use_journal() -> None:
        async with eventlog.open_journal(
            eventlog.MemoryLog(Ev), Ev, apply=bad_apply, initial=0
        ) as journal:
            with pytest.raises(eventlog.JournalFailedError):
                await journal.append(Noted("x"))
            with pytest.raises(eventlog.JournalFailedError):
                await journal.append(Noted("y"))

    with trio.fail_after(10), pytest.raises(eventlog.JournalFailedError) as info:
        await use_journal()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_append_after_close_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    """A journal used after its open_journal block raises LogClosedError."""
    async with eventlog.open_journal(eventlog.MemoryLog(Ev), Ev) as journal:
        pass
    with pytest.raises(eventlog.LogClosedError):
        await journal.append(Noted("late"))


async def test_foreign_event_type_is_refused_without_touching_the_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Appending an object outside event_type raises TypeError at once."""
    async with eventlog.open_journal(eventlog.MemoryLog(Ev), Ev) as journal:
        with pytest.raises(TypeError):
            await journal.append(42)
        assert (await journal.append(Noted("ok"))).seq == 1


async def test_store_with_another_sync_policy_is_refused() -> None:
    """Passing a store and a different sync policy is a ValueError."""
    with pytest.raises(ValueError, match="sync"):
        async with eventlog.open_journal(eventlog.MemoryLog(Ev, sync="none"), Ev, sync="always"):
            pass


async def test_shielded_appends_outlive_a_cancel_of_the_journals_scope(backend: Any) -> None:
    """The scope around the journal is cancelled and the body's shielded teardown appends
    (an actor system logging its shutdown): the appends are committed, nothing hangs.
    (Real clock: the file backend's fsync runs in a thread, which autojump would not wait
    for; the deadline only turns a hang into a failure.)"""
    with trio.CancelScope() as outer:
        async with eventlog.open_journal(backend, Ev) as journal:
            try:
                outer.cancel()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(60):
                    await journal.append(Noted("teardown 1"))
                    await journal.append(Noted("teardown 2"))
    events = [r.event for r in all_records(backend)]
    assert events == [Noted("teardown 1"), Noted("teardown 2")]


async def test_a_journal_tells_its_log_files_path_and_none_in_memory(backend: Any) -> None:
    async with eventlog.open_journal(backend, Ev) as journal:
        assert journal.path == (None if isinstance(backend, eventlog.MemoryLog) else str(backend))
