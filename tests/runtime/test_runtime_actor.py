"""Actors and refs: tell, tell_nowait, ask, replies, mailboxes, statistics, task helpers."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.runtime import (
    NO_BACKOFF,
    Actor,
    ActorError,
    ActorStatistics,
    ActorStoppedError,
    AskTimeoutError,
    MailboxFullError,
    Reply,
    Restart,
    Status,
    open_actor_system,
    shielded,
)

CAP = 10


class Echo(Actor):
    """Answers an ask with its message; records tells."""

    def __init__(self, seen: list[object] | None = None) -> None:
        self.seen = seen if seen is not None else []

    async def receive(self, msg: object) -> object:
        self.seen.append(msg)
        return msg


class Gate(Actor):
    """Blocks on an event before handling each message (to fill its mailbox)."""

    def __init__(self, gate: trio.Event, seen: list[object]) -> None:
        self.gate = gate
        self.seen = seen

    async def receive(self, msg: object) -> object:
        await self.gate.wait()
        self.seen.append(msg)
        return msg


class Ping:
    """A message type whose name errors must mention."""


async def test_tell_delivers_in_order() -> None:
    """Messages told by one task are handled in the order sent."""
    seen: list[object] = []
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(functools.partial(Echo, seen), name="echo")
            for i in range(100):
                await ref.tell(i)
            assert await ref.ask("done") == "done"
    assert seen == [*range(100), "done"]


async def test_tell_waits_while_mailbox_full(autojump_clock: trio.testing.MockClock) -> None:
    """tell() blocks when the mailbox is full and proceeds once the actor drains it."""
    gate, seen = trio.Event(), list[object]()
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(
                functools.partial(Gate, gate, seen), name="gate", mailbox_size=2
            )
            for i in range(3):  # one in hand, two queued
                await ref.tell(i)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(1) as blocked:
                await ref.tell(3)
            assert blocked.cancelled_caught
            gate.set()
            await ref.tell(3)
            await ref.ask("sync")
    assert seen == [0, 1, 2, 3, "sync"]


async def test_tell_nowait_on_full_mailbox_raises_naming_actor_and_type() -> None:
    """tell_nowait() on a full mailbox raises MailboxFullError naming actor and message type."""
    gate, seen = trio.Event(), list[object]()
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(
                functools.partial(Gate, gate, seen), name="gate", mailbox_size=1
            )
            ref.tell_nowait(1)
            await trio.testing.wait_all_tasks_blocked()  # the actor holds 1, waiting on gate
            ref.tell_nowait(2)
            with pytest.raises(MailboxFullError, match=r"root/gate.*Ping"):
                ref.tell_nowait(Ping())
            gate.set()


async def test_ask_returns_what_receive_returned() -> None:
    """ask() returns receive()'s return value."""
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Echo, name="echo")
            assert await ref.ask(41) == 41


async def test_ask_timeout_raises_naming_actor_and_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An unanswered ask raises AskTimeoutError naming the actor and the message type."""
    gate = trio.Event()
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(functools.partial(Gate, gate, []), name="slow")
            with pytest.raises(AskTimeoutError, match=r"root/slow.*Ping.*2 s"):
                await ref.ask(Ping(), timeout=2)
            gate.set()


async def test_ask_abandoned_before_handling_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ask whose asker timed out before the actor got to it is not handled at all."""
    gate, seen = trio.Event(), list[object]()
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(functools.partial(Gate, gate, seen), name="slow")
            await ref.tell("first")  # occupies the actor
            with pytest.raises(AskTimeoutError):
                await ref.ask("late", timeout=1)
            gate.set()
            assert await ref.ask("after") == "after"
            stats = ref.statistics()
    assert seen == ["first", "after"]
    assert stats.abandoned_asks == 1
    assert stats.handled == 2


async def test_ask_to_stopped_actor_raises_naming_actor_and_type() -> None:
    """ask() and tell() to an actor stopped for good raise ActorStoppedError."""
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Echo, name="gone")
            assert await system.stop(ref)
            with pytest.raises(ActorStoppedError, match=r"root/gone.*Ping"):
                await ref.ask(Ping())
            with pytest.raises(ActorStoppedError, match=r"root/gone.*Ping"):
                await ref.tell(Ping())
            assert ref.statistics().status is Status.STOPPED


async def test_queued_asks_fail_when_actor_stops_for_good(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Asks still queued when the actor stops for good fail; queued tells are dead letters."""
    gate = trio.Event()
    errors: list[BaseException] = []

    async def asker(ref: object) -> None:
        try:
            await ref.ask("q")  # type: ignore[attr-defined]
        except ActorStoppedError as exc:
            errors.append(exc)

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(
                functools.partial(Gate, gate, []), name="g", shutdown_timeout=1
            )
            await ref.tell("busy")
            await ref.tell("dropped")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(asker, ref)
                await trio.testing.wait_all_tasks_blocked()
                await system.stop(ref)  # the actor never finishes "busy": forced
            stats = ref.statistics()
    assert len(errors) == 1
    assert stats.dead_letters == 2


class _Answered:
    """A tell that carries its own answer."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def undelivered(self, error: BaseException) -> None:
        self.error = error


async def test_a_queued_tell_that_carries_its_answer_is_told_when_the_actor_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    queued = _Answered()
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(
                functools.partial(Gate, gate, []), name="g", shutdown_timeout=1
            )
            await ref.tell("busy")
            await ref.tell(queued)
            await trio.testing.wait_all_tasks_blocked()
            await system.stop(ref)  # the actor never finishes "busy": forced
    assert isinstance(queued.error, ActorStoppedError)
    assert "root/g" in str(queued.error)


class _FailsToBeTold:
    def undelivered(self, error: BaseException) -> None:
        raise RuntimeError("a buggy undelivered hook")


async def test_a_failing_undelivered_hook_still_fails_the_asks_behind_it_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message's bug is logged; it neither stops the system nor leaves the mailbox open."""
    gate = trio.Event()
    errors: list[BaseException] = []

    async def asker(ref: Any) -> None:
        try:
            await ref.ask("late")
        except ActorStoppedError as exc:
            errors.append(exc)

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(
                functools.partial(Gate, gate, []), name="g", shutdown_timeout=1
            )
            async with trio.open_nursery() as nursery:
                await ref.tell("busy")
                await ref.tell(_FailsToBeTold())
                nursery.start_soon(asker, ref)
                await trio.testing.wait_all_tasks_blocked()
                await system.stop(ref)
            with pytest.raises(ActorStoppedError):
                await ref.tell("after")
    assert len(errors) == 1


async def test_exception_in_ask_reaches_asker_and_crashes_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler exception during an ask is raised in the asker and restarts the actor."""

    class Fragile(Actor):
        async def receive(self, msg: object) -> object:
            if msg == "bad":
                raise KeyError("bad input")
            return self.incarnation

    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            ref = await system.spawn(Fragile, name="f")
            with pytest.raises(KeyError, match="bad input"):
                await ref.ask("bad")
            assert await ref.ask("which") == 2


async def test_deferred_reply_answers_later() -> None:
    """defer_reply() lets the actor answer after receive() returned, while serving others."""

    class Later(Actor):
        def __init__(self) -> None:
            self.parked: list[Reply] = []

        async def receive(self, msg: object) -> object:
            if msg == "wait":
                self.parked.append(self.defer_reply())
                return None
            for reply in self.parked:
                reply.send("released")
            return "ok"

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Later, name="later")
            results: list[object] = []

            async def waiter() -> None:
                results.append(await ref.ask("wait"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert await ref.ask("release") == "ok"
    assert results == ["released"]


async def test_deferred_reply_failure_does_not_crash_actor() -> None:
    """reply.fail(exc) raises exc in the asker and leaves the actor running."""

    class Refuser(Actor):
        async def receive(self, msg: object) -> object:
            if msg == "refuse":
                self.defer_reply().fail(ValueError("no"))
                return None
            return self.incarnation

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Refuser, name="r")
            with pytest.raises(ValueError, match="no"):
                await ref.ask("refuse")
            assert await ref.ask("which") == 1


async def test_deferred_reply_fails_when_incarnation_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A deferred reply still open when the actor restarts fails with ActorStoppedError."""

    class Forgetful(Actor):
        async def receive(self, msg: object) -> object:
            if msg == "wait":
                self.defer_reply()
                return None
            raise RuntimeError("crash")

    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            ref = await system.spawn(Forgetful, name="fg")
            async with trio.open_nursery() as nursery:

                async def waiter() -> None:
                    with pytest.raises(ActorStoppedError, match=r"root/fg.*str"):
                        await ref.ask("wait")

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await ref.tell("crash")


async def test_defer_reply_outside_an_ask_is_an_error() -> None:
    """defer_reply() while handling a tell raises ActorError (and crashes that actor)."""

    class Wrong(Actor):
        async def receive(self, msg: object) -> object:
            if msg == "tell":
                self.defer_reply()
            return "ok"

    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            ref = await system.spawn(Wrong, name="w")
            await ref.tell("tell")
            assert await ref.ask("x") == "ok"
            assert ref.statistics().restarts == 1


async def test_statistics_is_a_frozen_snapshot() -> None:
    """statistics() reports depth, handled and restarts, and cannot be mutated."""
    gate = trio.Event()
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(functools.partial(Gate, gate, []), name="g", mailbox_size=8)
            for i in range(4):
                await ref.tell(i)
            await trio.testing.wait_all_tasks_blocked()
            stats = ref.statistics()
            gate.set()
    assert isinstance(stats, ActorStatistics)
    assert (stats.mailbox_depth, stats.mailbox_capacity, stats.handled) == (3, 8, 0)
    assert (stats.incarnation, stats.restarts, stats.status) == (1, 0, Status.RUNNING)
    with pytest.raises(AttributeError):
        stats.handled = 5  # type: ignore[misc]


async def test_background_task_crash_crashes_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failing background task started with start_soon crashes (and restarts) its actor."""
    starts: list[int] = []

    class Poller(Actor):
        async def on_start(self) -> None:
            starts.append(self.incarnation)
            if self.incarnation == 1:
                self.start_soon(self.poll)

        async def poll(self) -> None:
            await trio.sleep(1)
            raise OSError("poll failed")

        async def receive(self, msg: object) -> object:
            return self.incarnation

    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            ref = await system.spawn(Poller, name="p")
            await trio.sleep(2)
            assert await ref.ask("which") == 2
    assert starts == [1, 2]


async def test_background_tasks_stop_with_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Background tasks are cancelled when their actor stops, before on_stop runs."""
    log: list[str] = []

    class Ticker(Actor):
        async def on_start(self) -> None:
            await self.start(self.tick)

        async def tick(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                log.append("tick cancelled")

        async def receive(self, msg: object) -> object:
            return None

        async def on_stop(self) -> None:
            log.append("on_stop")

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            await system.spawn(Ticker, name="t")
    assert log == ["tick cancelled", "on_stop"]


async def test_nursery_property_hosts_tasks_for_the_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks started in self.nursery run while the actor lives and end with it."""
    ticks: list[int] = []

    class Heart(Actor):
        async def on_start(self) -> None:
            self.nursery.start_soon(self.beat)

        async def beat(self) -> None:
            while True:
                ticks.append(self.incarnation)
                await trio.sleep(1)

        async def receive(self, msg: object) -> object:
            return len(ticks)

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Heart, name="h")
            await trio.sleep(2.5)
            assert await ref.ask("count") == 3
        count = len(ticks)
        await trio.sleep(5)
    assert len(ticks) == count


async def test_shielded_cleanup_runs_despite_forced_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cleanup in shielded(timeout) completes in on_stop even when the actor is cancelled."""
    log: list[str] = []

    class Stubborn(Actor):
        async def receive(self, msg: object) -> object:
            await trio.sleep_forever()

        async def on_stop(self) -> None:
            with shielded(10):
                await trio.sleep(3)  # e.g. stopping a paid machine
                log.append("machine stopped")

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Stubborn, name="s", shutdown_timeout=1)
            await ref.tell("hang")
            start = trio.current_time()
        elapsed = trio.current_time() - start
    assert log == ["machine stopped"]
    assert elapsed == pytest.approx(4)


async def test_shielded_gives_up_after_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """shielded(timeout) stops waiting after its timeout even though it is shielded."""
    with trio.fail_after(CAP):
        start = trio.current_time()
        with shielded(2) as scope:
            await trio.sleep(100)
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(2)


async def test_start_soon_before_start_is_an_error() -> None:
    """Task helpers on an actor that is not running raise ActorError."""

    class Early(Actor):
        def __init__(self) -> None:
            with pytest.raises(ActorError):
                self.start_soon(trio.sleep, 1)

        async def receive(self, msg: object) -> object:
            return msg

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Early, name="e")
            assert await ref.ask(1) == 1


async def test_self_stop_ends_a_transient_actor_normally() -> None:
    """An actor calling self.stop() ends after that message; transient: not restarted."""

    class Once(Actor):
        async def receive(self, msg: object) -> object:
            self.stop()
            return "bye"

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Once, name="once", restart=Restart.TRANSIENT)
            assert await ref.ask("x") == "bye"
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorStoppedError):
                await ref.ask("again")


@given(
    plan=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
    mailbox=st.integers(min_value=1, max_value=8),
)
def test_per_sender_order_under_load(plan: list[int], mailbox: int) -> None:
    """Many senders into a small mailbox: each sender's messages arrive complete and in order."""

    async def main() -> None:
        seen: list[tuple[int, int]] = []

        class Slowish(Actor):
            async def receive(self, msg: tuple[int, int]) -> None:
                if msg[1] % 3 == 0:
                    await trio.lowlevel.checkpoint()
                seen.append(msg)

        with trio.fail_after(CAP):
            async with open_actor_system() as system:
                ref = await system.spawn(Slowish, name="sink", mailbox_size=mailbox)

                async def sender(who: int, count: int) -> None:
                    for i in range(count):
                        if i % 2:
                            await ref.tell((who, i))
                        else:
                            await ref.ask((who, i))

                async with trio.open_nursery() as nursery:
                    for who, count in enumerate(plan):
                        nursery.start_soon(sender, who, count)
                await ref.ask((-1, 0))  # queued after every tell: all are handled once it answers
        for who, count in enumerate(plan):
            assert [i for w, i in seen if w == who] == list(range(count))

    trio.run(main)
