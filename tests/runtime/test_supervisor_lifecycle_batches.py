"""A supervisor journals the lifecycle events of children that start or end together in one
append (issue 16: ten jobs' actors ending in one pass were ten appends), in the order it
made them, and holds none across a wait for a child."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from conjure_actors.runtime import (
    Actor,
    ActorRef,
    ListSink,
    Restart,
    open_actor_system,
)

CAP = 30


class _BatchSink(ListSink):
    """A sink that takes batches (as ``eventlog.Journal``): each append's event types and
    actors, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[list[tuple[str, str]]] = []

    def _note(self, events: list[Any]) -> None:
        self.appends.append([(type(e).__name__, getattr(e, "actor", "")) for e in events])

    async def append(self, event: Any, /) -> object:
        self._note([event])
        return await super().append(event)

    async def append_many(self, events: list[Any], /) -> object:
        self._note(events)
        self.events.extend(events)
        return None

    def of_jobs(self) -> list[list[tuple[str, str]]]:
        """The appends that carry events of root/jobs' children."""
        return [a for a in self.appends if any("/jobs/" in actor for _, actor in a)]


class Stopping(Actor):
    """Ends normally at its first message, or crashes if the message says so."""

    async def receive(self, msg: object) -> object:
        if msg == "crash":
            raise RuntimeError("asked to crash")
        self.stop()
        return msg


async def test_children_started_together_are_announced_in_one_append() -> None:
    sink = _BatchSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            await jobs.spawn_many([(f"j{i}", Stopping) for i in range(5)])
    assert sink.of_jobs()[0] == [("ActorStarted", f"root/jobs/j{i}") for i in range(5)]


async def test_children_ending_together_are_journaled_in_one_append() -> None:
    sink = _BatchSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            refs = await jobs.spawn_many(
                [(f"j{i}", Stopping) for i in range(5)], restart=Restart.TRANSIENT
            )
            for ref in refs:
                assert isinstance(ref, ActorRef)
                ref.tell_nowait("stop")
            await trio.testing.wait_all_tasks_blocked()
            assert jobs.children() == []
    stops = sink.of_jobs()[1:]
    assert len(stops) == 1, sink.appends
    assert sorted(actor for _, actor in stops[0]) == [f"root/jobs/j{i}" for i in range(5)]
    assert {name for name, _ in stops[0]} == {"ActorStopped"}


async def test_a_restart_among_held_ends_keeps_every_lifecycle_in_order() -> None:
    """Three children end in one pass, the middle one crashing (its restart due after a
    backoff, which the system's shutdown cuts): each child's events come in its
    lifecycle's order, every one of them once."""
    sink = _BatchSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            refs = await jobs.spawn_many(
                [(f"j{i}", Stopping) for i in range(3)], restart=Restart.TRANSIENT
            )
            for ref, msg in zip(refs, ("stop", "crash", "stop"), strict=True):
                assert isinstance(ref, ActorRef)
                ref.tell_nowait(msg)
            await trio.testing.wait_all_tasks_blocked()
            assert [c.path for c in jobs.children()] == ["root/jobs/j1"]
    journaled = [(type(e).__name__, e.actor) for e in sink.events if "/jobs/" in e.actor]
    for name in ("root/jobs/j0", "root/jobs/j2"):
        assert [n for n, a in journaled if a == name] == ["ActorStarted", "ActorStopped"]
    assert [n for n, a in journaled if a == "root/jobs/j1"] == [
        "ActorStarted",
        "ActorCrashed",
        "ActorRestarted",
        "ActorStopped",  # (the system's shutdown, during the backoff)
    ]
