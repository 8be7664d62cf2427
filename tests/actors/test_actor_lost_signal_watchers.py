"""A lost signal's watchers run in the pool's task as it sets it: none may raise there, and
one that fails loses no other (found by review)."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from conjure_actors.actors import LostSignal
from conjure_actors.actors.job import WorkflowActor
from conjure_actors.runtime.errors import MailboxFullError


def test_one_raising_watcher_loses_the_others() -> None:
    """set() swaps the watchers out, then calls them: the first that raises makes the pool's
    handler (_mark_lost) raise, and every watcher after it is never called (forgotten)."""
    lost = LostSignal()
    calls: list[str] = []

    def bad() -> None:
        raise RuntimeError("boom")

    lost.watch("a", bad)
    lost.watch("b", lambda: calls.append("b"))
    lost.set()  # must not raise into the pool's handler (_mark_lost)
    assert lost.watchers == 0
    assert calls == ["b"], "job b was never told its machine is lost"


async def test_machine_lost_callback_raises_when_the_incarnation_nursery_closed() -> None:
    """WorkflowActor._machine_lost with a full mailbox falls back to start_soon, guarded
    only against ActorError; a nursery that is closed (incarnation ending: its last child
    exited, run() not yet past `async with`) raises RuntimeError into the pool's task."""

    def full(msg: object) -> None:
        raise MailboxFullError("full")

    async with trio.open_nursery() as nursery:
        pass
    actor = object.__new__(WorkflowActor)
    actor._cell = SimpleNamespace(ref=SimpleNamespace(tell_nowait=full))  # type: ignore[assignment]
    actor._nursery = nursery
    actor.job_id = "job-1"
    actor._machine_lost(1)  # the contract: must not raise
