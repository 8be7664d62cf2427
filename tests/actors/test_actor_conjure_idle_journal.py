"""Conjure.wait_until_idle when the journal fails or closes: it ends, it does not wait on."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio

import eventlog
from conjure_actors.actors.conjure import Conjure
from conjure_actors.domain.events import Event
from conjure_actors.runtime import ActorStarted


def _fake(journal: Any) -> Any:
    # What wait_until_idle reads of a Conjure: no job active, a machine still running.
    return SimpleNamespace(
        ctx=SimpleNamespace(
            journal=journal, config=SimpleNamespace(pool=SimpleNamespace(poll_interval=5.0))
        ),
        active_jobs=lambda: [],
        running_machines=lambda: ["m1"],
        state=SimpleNamespace(jobs={}),
        _job_ended=trio.Event(),
        _job_refs={},
    )


async def test_wait_until_idle_ends_when_the_journal_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A journal that failed (its apply raised) publishes nothing more: the waiter for the
    machines to stop can never see them stop: the wait ends (its subscription is dropped)
    instead of polling forever (as it did with a journal listener, 893231e, reverted)."""
    broken = [False]

    def apply(state: Any, event: Any) -> Any:
        if broken[0]:
            raise RuntimeError("apply bug")
        return state

    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    outcome: list[BaseException] = []
    waited = 0.0
    try:
        async with eventlog.open_journal(log, Event, apply=apply, initial=None) as journal:
            conjure = _fake(journal)

            async def wait() -> None:
                try:
                    await Conjure.wait_until_idle(conjure, machines_stopped=True)
                except Exception as exc:
                    outcome.append(exc)

            with trio.move_on_after(3600):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait)
                    await trio.sleep(1)
                    broken[0] = True
                    with pytest.raises(eventlog.JournalFailedError):
                        await journal.append(ActorStarted(actor="root/x", incarnation=1, at=0.0))
            waited = trio.current_time()
    except eventlog.JournalFailedError:
        pass  # closing a failed journal says so
    assert outcome, f"wait_until_idle still waiting {waited:.0f} s after the journal failed"


async def test_wait_until_idle_follows_the_records_without_a_subscription(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The waiter takes each published record into account with a journal listener (issue
    16: no channel fed with every record of the run): it holds no subscription while it
    waits, and a record that may make the run idle (a machine's or the system's stop) wakes
    it at once, before its timeout's full check."""
    from conjure_actors.domain.events import SystemStopped

    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    running = ["m1"]
    returned_at: list[float] = []
    async with eventlog.open_journal(log, Event) as journal:
        conjure = _fake(journal)
        conjure.running_machines = lambda: list(running)

        async def wait() -> None:
            await Conjure.wait_until_idle(conjure, machines_stopped=True)
            returned_at.append(trio.current_time())

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await trio.sleep(0.5)
                assert journal.statistics().subscribers == 0
                running.clear()
                await journal.append(SystemStopped(reason="done", at=0.0))
                stopped_at = trio.current_time()
    assert returned_at == [stopped_at]
