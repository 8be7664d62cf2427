"""``runtime.sink.emit``: a lifecycle event is appended even when its emitter is being
cancelled; a journal shields the append itself (``append_shielded``), other sinks get a
shielded scope around theirs."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import eventlog
from conjure_actors.domain.events import Event
from conjure_actors.runtime import ActorStarted
from conjure_actors.runtime.sink import ListSink, emit


def _event() -> ActorStarted:
    return ActorStarted(actor="root/x", incarnation=1, at=0.0)


async def test_a_cancelled_emitter_still_appends_to_a_list_sink() -> None:
    sink = ListSink()
    with trio.CancelScope() as scope:
        scope.cancel()
        await emit(sink, _event())
    assert sink.events == [_event()]


async def test_a_journal_appends_shielded_without_a_scope_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An inline journal (sync="none"): the cancelled emitter's event is committed, and no
    cancel scope is opened for it (issue 16: ~300 Python bytecodes per lifecycle event)."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, sync="none")
    async with eventlog.open_journal(log, Event) as journal:
        entered: list[bool] = []
        real = trio.CancelScope.__enter__

        def counting(self: trio.CancelScope) -> trio.CancelScope:
            entered.append(self.shield)
            return real(self)

        monkeypatch.setattr(trio.CancelScope, "__enter__", counting)
        with trio.CancelScope() as scope:
            scope.cancel()
            await emit(journal, _event())
        monkeypatch.undo()
        assert entered == [False]  # the test's own scope, none for the append
        assert journal.last_seq == 1
    assert [r.event for r in log.records()] == [_event()]
