"""Property: under any mix of concurrent appenders, journal, log and subscriber agree."""

from __future__ import annotations

import math
import os
import tempfile
import unittest.mock
from typing import Any

import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Progressed, Tally, apply_tally, event_lists, events
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog

# One appender's program: single appends, batches, and pauses.
step = st.one_of(
    st.tuples(st.just("append"), events),
    st.tuples(st.just("many"), event_lists),
    st.tuples(st.just("sleep"), st.floats(0, 0.01)),
)
programs = st.lists(st.lists(step, max_size=8), min_size=1, max_size=12)


# The slow twins' examples: 100, or the loaded profile's count if more (`just fuzz`).
_MANY = max(100, settings.default.max_examples)


_journal_setups = {
    "programs": programs,
    "max_batch": st.integers(1, 20),
    "max_delay": st.sampled_from([0.0, 0.001]),
    "sync": st.sampled_from(["batch", "always", "none"]),
}


# A trio run of up to 12 appenders an example: the inner loop runs 10 examples, the slow
# tests _MANY.
@settings(max_examples=10)
@given(**_journal_setups)
def test_concurrent_appenders_journal_log_and_subscriber_agree(
    programs: list[list[tuple[str, Any]]],
    max_batch: int,
    max_delay: float,
    sync: eventlog.SyncPolicy,
) -> None:
    """Seqs are unique and contiguous, per-task order holds, state == fold(log), and a
    subscriber sees every record once, in order (under a fresh autojumping MockClock)."""
    _run_agreement(programs, max_batch, max_delay, sync)


@pytest.mark.slow
@settings(max_examples=_MANY)
@given(**_journal_setups)
def test_concurrent_appenders_agree_over_many_examples(
    programs: list[list[tuple[str, Any]]],
    max_batch: int,
    max_delay: float,
    sync: eventlog.SyncPolicy,
) -> None:
    """The same property as above, over many more programs."""
    _run_agreement(programs, max_batch, max_delay, sync)


def _run_agreement(
    programs: list[list[tuple[str, Any]]],
    max_batch: int,
    max_delay: float,
    sync: eventlog.SyncPolicy,
) -> None:
    trio.run(
        check_agreement,
        programs,
        max_batch,
        max_delay,
        sync,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def check_agreement(
    programs: list[list[tuple[str, Any]]],
    max_batch: int,
    max_delay: float,
    sync: eventlog.SyncPolicy,
) -> None:
    """The body of the property, run inside trio."""
    log = eventlog.MemoryLog(Ev, sync=sync)
    returned: list[list[int]] = [[] for _ in programs]
    seen: list[eventlog.Record[Any]] = []
    with trio.fail_after(60):
        async with (
            trio.open_nursery() as outer,
            eventlog.open_journal(
                log,
                Ev,
                apply=apply_tally,
                initial=Tally(),
                max_batch=max_batch,
                max_delay=max_delay,
            ) as journal,
        ):

            async def run(i: int, program: list[tuple[str, Any]]) -> None:
                for op, arg in program:
                    if op == "append":
                        returned[i].append((await journal.append(arg)).seq)
                    elif op == "many":
                        seqs = [r.seq for r in await journal.append_many(arg)]
                        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else 1
                        returned[i].extend(seqs)
                    else:
                        await trio.sleep(arg)

            async def watch(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                async with journal.subscribe(max_buffer=math.inf) as records:
                    task_status.started()
                    seen.extend([record async for record in records])

            await outer.start(watch)
            async with trio.open_nursery() as nursery:
                for i, program in enumerate(programs):
                    nursery.start_soon(run, i, program)
            state = journal.state
            last = journal.last_seq
            # Leaving open_journal ends the subscription, so watch() returns by itself.
    every = sorted(s for seqs in returned for s in seqs)
    assert every == list(range(1, last + 1))
    assert all(seqs == sorted(seqs) for seqs in returned)
    records = list(log.records())
    assert [r.seq for r in records] == every
    assert state == eventlog.fold(records, apply_tally, Tally())
    assert seen == records


# One appender's plan on a file log: how many single appends, and after how many seconds of
# (mock) time its scope is cancelled (None: never), so some appends are cancelled while
# queued (withdrawn) and some while their batch is being written (they still return).
plans = st.lists(
    st.tuples(st.integers(1, 12), st.none() | st.floats(0, 0.002)), min_size=1, max_size=24
)


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
@given(plans=plans, max_batch=st.integers(1, 16))
def test_every_returned_append_is_in_the_file_once_in_order(
    plans: list[tuple[int, float | None]], max_batch: int
) -> None:
    """On a file log with cancels: the file holds exactly the appends that returned, each
    once, at the seq it returned, each task's appends in its order."""
    # Real time (a mock clock would jump while the worker thread writes, firing every
    # deadline at once); fdatasync is skipped to keep examples fast: the write still goes
    # through the worker thread, so cancels land both while queued and while in flight.
    with (
        tempfile.TemporaryDirectory() as tmp,
        unittest.mock.patch.object(eventlog.writer, "_fdatasync", return_value=None),
    ):
        path = os.path.join(tmp, "log")
        returned = trio.run(append_with_cancels, path, plans, max_batch)
        records = list(eventlog.read(path, Ev))
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    by_seq = {r.seq: r.event for r in records}
    got = sorted(seq for seqs in returned.values() for seq, _ in seqs)
    assert got == [r.seq for r in records]
    for seqs in returned.values():
        assert [seq for seq, _ in seqs] == sorted(seq for seq, _ in seqs)
        assert all(by_seq[seq] == event for seq, event in seqs)


async def append_with_cancels(
    path: str, plans: list[tuple[int, float | None]], max_batch: int
) -> dict[int, list[tuple[int, Any]]]:
    """Run the plans against one journal; the (seq, event) of every append that returned."""
    returned: dict[int, list[tuple[int, Any]]] = {i: [] for i in range(len(plans))}
    with trio.fail_after(60):
        async with eventlog.open_journal(path, Ev, sync="batch", max_batch=max_batch) as journal:

            async def run(i: int, count: int, cancel_after: float | None) -> None:
                with trio.move_on_after(math.inf if cancel_after is None else cancel_after):
                    for n in range(count):
                        event = Progressed(f"task-{i}", n)
                        record = await journal.append(event)
                        returned[i].append((record.seq, event))

            async with trio.open_nursery() as nursery:
                for i, (count, cancel_after) in enumerate(plans):
                    nursery.start_soon(run, i, count, cancel_after)
    return returned
