"""Supervisor spawns at the edges: a journal that fails while the child starts, an asker
already cancelled, a supervisor that stops while a spawn is pending."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import pytest
import trio

from conjure_actors.runtime import (
    Actor,
    ActorSpec,
    ActorStoppedError,
    ListSink,
    open_actor_system,
)

CAP = 30


class BreakingSink(ListSink):
    """A journal that fails for good (a full disk) once ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.fail_next = 0  # the next appends that fail (a transient write error)

    async def append(self, event: Any, /) -> object:
        if self.broken:
            raise OSError("no space left on device")
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("transient write error")
        return await super().append(event)


class SlowStart(Actor):
    def __init__(self, sink: BreakingSink | None = None) -> None:
        self.sink = sink

    async def on_start(self) -> None:
        await trio.sleep(1)
        if self.sink is not None:
            self.sink.fail_next = 2  # ActorStarted and the ActorCrashed after it fail

    async def receive(self, msg: object) -> object:
        return self.incarnation


@pytest.mark.slow
async def test_a_spawn_is_answered_when_the_journal_fails_while_the_child_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The child's ActorStarted and then its ActorCrashed cannot be journaled: the spawn
    is still answered with an error (a shortcut that let the child's task journal it,
    b29f19c, reverted, left the asker waiting forever)."""
    sink = BreakingSink()
    with trio.fail_after(CAP):  # a hang shows as TooSlowError
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            with pytest.raises(Exception) as info:  # noqa: PT011 - any answer, but an answer
                with trio.fail_after(10):
                    await jobs.start_child(ActorSpec(functools.partial(SlowStart, sink), "j"))
            assert not isinstance(info.value, trio.TooSlowError), "the spawn was never answered"
            # and the system goes on: "jobs" was restarted by root
            assert (await jobs.spawn(SlowStart, name="k")).path == "root/jobs/k"


class Counting(Actor):
    started: ClassVar[list[str]] = []

    async def on_start(self) -> None:
        Counting.started.append(self._cell.path)

    async def receive(self, msg: object) -> object:
        return self.incarnation


async def test_a_spawn_whose_asker_is_already_cancelled_starts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A start_child that raises Cancelled at its first checkpoint has not taken effect (the
    loop skips an abandoned request). The shortcut launches the child before it parks: the
    asker gets Cancelled, believes nothing happened, and a permanent child nobody knows of
    runs under the supervisor."""
    Counting.started = []
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            with trio.CancelScope() as scope:
                scope.cancel()
                await jobs.start_child(ActorSpec(Counting, "j"))
            assert scope.cancelled_caught
            await trio.sleep(1)
            assert jobs.child("j") is None, "a cancelled spawn left a running child"
            assert Counting.started == []


async def test_a_spawn_pending_when_its_supervisor_stops_fails_and_the_child_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A supervisor that stops first fails the pending spawn with ActorStoppedError and
    drops the child: its parent restarts it (a sibling crash under one_for_all) while the
    child is in on_start."""
    from conjure_actors.runtime import Strategy

    sink = ListSink()
    outcome: list[object] = []
    with trio.fail_after(CAP):
        async with open_actor_system(sink, strategy=Strategy.ONE_FOR_ALL) as system:
            jobs = await system.spawn_supervisor("jobs")

            class Crasher(Actor):
                async def receive(self, msg: object) -> object:
                    raise RuntimeError("boom")

            crasher = await system.spawn(Crasher, name="crasher")

            async def spawn() -> None:
                try:
                    outcome.append(await jobs.start_child(ActorSpec(SlowStart, "j")))
                except ActorStoppedError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(spawn)
                await trio.sleep(0.5)  # "j" is in on_start
                await crasher.tell("crash")  # root restarts every child, "jobs" too
            await trio.sleep(5)
            print(outcome)
            mine = [
                (type(e).__name__, getattr(e, "reason", None), getattr(e, "incarnation", None))
                for e in sink.events
                if getattr(e, "actor", None) == "root/jobs/j"
            ]
            print(mine, jobs.child("j"))
            assert isinstance(outcome[0], ActorStoppedError), outcome
            assert jobs.child("j") is None
