"""``SupervisorRef.spawn_many``: several actor children started together (their
``on_start`` s in one scheduler pass), each answered on its own."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from conjure_actors.runtime import (
    Actor,
    ActorRef,
    ActorStarted,
    ActorStoppedError,
    ListSink,
    NameTakenError,
    Restart,
    open_actor_system,
)

CAP = 30


class _Passes(trio.abc.Instrument):
    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


class Noting(Actor):
    """Notes the scheduler pass its ``on_start`` ran in; fails it if its name says so."""

    passes: ClassVar[_Passes | None] = None
    started: ClassVar[dict[str, int]] = {}

    async def on_start(self) -> None:
        name = self._cell.path.rpartition("/")[2]
        assert Noting.passes is not None
        Noting.started[name] = Noting.passes.passes
        if name.startswith("bad"):
            raise RuntimeError(f"{name} will not start")

    async def receive(self, msg: object) -> object:
        return msg


async def _spawn_many(names: list[str], system: Any) -> tuple[Any, list[ActorRef | Exception]]:
    jobs = await system.spawn_supervisor("jobs")
    answers = await jobs.spawn_many([(n, Noting) for n in names], restart=Restart.TRANSIENT)
    return jobs, answers


async def test_the_children_start_in_one_scheduler_pass() -> None:
    """Five children: every ``on_start`` in the same pass (one request for all, where one
    spawn after another took a round trip each)."""
    Noting.passes, Noting.started = _Passes(), {}
    trio.lowlevel.add_instrument(Noting.passes)
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            _, answers = await _spawn_many([f"j{i}" for i in range(5)], system)
            assert [a.path for a in answers if isinstance(a, ActorRef)] == [
                f"root/jobs/j{i}" for i in range(5)
            ]
            assert len(set(Noting.started.values())) == 1, Noting.started
            assert await answers[3].ask("hi") == "hi"  # type: ignore[union-attr]
    started = [e.actor for e in sink.events if isinstance(e, ActorStarted)]
    assert [a for a in started if a.startswith("root/jobs/")] == [
        f"root/jobs/j{i}" for i in range(5)
    ]


async def test_a_child_that_fails_to_start_fails_alone() -> None:
    """The middle child's ``on_start`` raises: its answer is that error and it is not a
    child; the others start, and a name already taken is refused for that one only."""
    Noting.passes, Noting.started = _Passes(), {}
    trio.lowlevel.add_instrument(Noting.passes)
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs, answers = await _spawn_many(["a", "bad", "c"], system)
            assert isinstance(answers[1], RuntimeError)
            assert "bad will not start" in str(answers[1])
            assert isinstance(answers[0], ActorRef)
            assert isinstance(answers[2], ActorRef)
            assert jobs.child("bad") is None
            assert [c.name for c in jobs.children()] == ["a", "c"]
            again = await jobs.spawn_many([("a", Noting), ("d", Noting)])
            assert isinstance(again[0], NameTakenError)
            assert isinstance(again[1], ActorRef)


async def test_no_children_is_an_empty_answer() -> None:
    """Nothing to start: an empty answer (and no request to the supervisor)."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            assert await jobs.spawn_many([]) == []


async def test_a_stopped_supervisor_refuses_them() -> None:
    """A supervisor stopped for good: ActorStoppedError, nothing started."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            await system.root.stop_child("jobs")
            with pytest.raises(ActorStoppedError):
                await jobs.spawn_many([("x", Noting)])


class _PassSink(ListSink):
    """Notes the scheduler pass each event is journaled in."""

    def __init__(self, passes: _Passes) -> None:
        super().__init__()
        self.passes = passes
        self.at: list[tuple[str, str, int]] = []

    async def append(self, event: Any, /) -> object:
        self.at.append((type(event).__name__, getattr(event, "actor", ""), self.passes.passes))
        return await super().append(event)


class Stopping(Actor):
    async def receive(self, msg: object) -> object:
        self.stop()
        return msg


async def test_their_starts_are_journaled_in_one_pass() -> None:
    """The children's ActorStarted go in together (a started child's wait was a schedule
    point: one pass per child)."""
    passes = _Passes()
    trio.lowlevel.add_instrument(passes)
    sink = _PassSink(passes)
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            jobs = await system.spawn_supervisor("jobs")
            await jobs.spawn_many([(f"j{i}", Stopping) for i in range(5)])
    started = {p for name, actor, p in sink.at if name == "ActorStarted" and "/jobs/" in actor}
    assert len(started) == 1, sink.at


async def test_children_ending_together_are_journaled_in_one_pass() -> None:
    """Five children that end in one pass: their ActorStopped in one pass too (the
    supervisor's control loop took one message per pass)."""
    passes = _Passes()
    trio.lowlevel.add_instrument(passes)
    sink = _PassSink(passes)
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
    stopped = [p for name, actor, p in sink.at if name == "ActorStopped" and "/jobs/" in actor]
    assert len(stopped) == 5
    assert len(set(stopped)) == 1, sink.at
