"""PriorityGate: background work waits while foreground work is in flight, within a bound;
background supervisors' actors and their tasks wait at it, other actors never do."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.runtime import (
    Actor,
    ActorStoppedError,
    PriorityGate,
    background_checkpoint,
    open_actor_system,
)


async def _timed_turn(gate: PriorityGate, waits: list[float]) -> None:
    start = trio.current_time()
    await gate.background_turn()
    waits.append(trio.current_time() - start)


async def test_an_open_gate_lets_background_work_through_without_a_schedule_point() -> None:
    """No foreground in flight: background_turn returns at once, not even a checkpoint."""
    gate = PriorityGate()
    with trio.testing.assert_no_checkpoints():
        await gate.background_turn()
    assert gate.statistics().waits == 0


async def test_background_work_waits_until_the_foreground_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A waiter parked while a request is in flight goes on as soon as it ends."""
    gate = PriorityGate(max_wait=10.0)
    waits: list[float] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            gate.enter()
            nursery.start_soon(_timed_turn, gate, waits)
            await trio.sleep(3.0)
            assert waits == []
            gate.leave()
    assert waits == [3.0]
    assert gate.statistics().released_open == 1


async def test_the_bound_releases_background_work_under_a_foreground_that_never_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A foreground that never leaves holds a background waiter max_wait seconds, no more."""
    gate = PriorityGate(max_wait=0.02, turn=0.002)
    gate.enter()
    waits: list[float] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(_timed_turn, gate, waits)
    assert waits == [pytest.approx(0.02)] * 5
    stats = gate.statistics()
    assert (stats.released_bound, stats.waiting, stats.foreground) == (1, 0, 1)


async def test_a_bound_release_opens_a_background_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the bound released a cohort, background work passes freely for ``turn`` s."""
    gate = PriorityGate(max_wait=0.02, turn=0.005)
    gate.enter()
    with trio.fail_after(60):
        await gate.background_turn()
        await trio.sleep(0.004)
        with trio.testing.assert_no_checkpoints():
            await gate.background_turn()
        await trio.sleep(0.002)
        start = trio.current_time()
        await gate.background_turn()
    assert trio.current_time() - start == pytest.approx(0.02)


async def test_the_gate_stays_closed_for_the_linger_after_the_last_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a linger, background work arriving just after a request still waits it out."""
    gate = PriorityGate(max_wait=0.02, linger=0.003)
    gate.enter()
    gate.leave()
    start = trio.current_time()
    with trio.fail_after(60):
        await gate.background_turn()
    assert trio.current_time() - start == pytest.approx(0.003)
    with trio.testing.assert_no_checkpoints():
        await gate.background_turn()  # the linger is over: open


async def test_a_waiter_goes_on_once_the_linger_after_its_request_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The leader of a cohort parked during a request sees it end and waits the linger only."""
    gate = PriorityGate(max_wait=1.0, linger=0.003)
    waits: list[float] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            gate.enter()
            nursery.start_soon(_timed_turn, gate, waits)
            nursery.start_soon(_timed_turn, gate, waits)
            await trio.sleep(0.01)
            gate.leave()
    assert waits == [pytest.approx(0.013)] * 2


async def test_requests_back_to_back_within_the_linger_hold_background_until_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Requests that keep following each other within the linger: the bound still holds."""
    gate = PriorityGate(max_wait=0.05, linger=0.003)
    waits: list[float] = []

    async def requests() -> None:
        for _ in range(40):
            gate.enter()
            await trio.sleep(0.002)
            gate.leave()
            await trio.sleep(0.001)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(requests)
            await trio.sleep(0.0005)
            nursery.start_soon(_timed_turn, gate, waits)
    assert waits == [pytest.approx(0.05)]


async def test_a_cancelled_leader_lets_its_cohort_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The cohort's watcher (its first waiter) cancelled: the others go on at once rather
    than wait for a release nobody would give."""
    gate = PriorityGate(max_wait=10.0)
    gate.enter()
    waits: list[float] = []
    leader = trio.CancelScope()

    async def lead() -> None:
        with leader:
            await gate.background_turn()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lead)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_timed_turn, gate, waits)
            await trio.testing.wait_all_tasks_blocked()
            leader.cancel()
    assert waits == [0.0]
    assert gate.statistics().waiting == 0


def test_leave_without_enter_is_refused() -> None:
    """More leaves than enters is a bug in the caller, said at once."""
    with pytest.raises(RuntimeError, match="without a matching enter"):
        PriorityGate().leave()


@pytest.mark.parametrize(
    ("knob", "value"),
    [("max_wait", 0.0), ("max_wait", math.inf), ("turn", -1.0), ("linger", math.nan)],
)
def test_bad_timings_are_refused(knob: str, value: float) -> None:
    """A bound that is not a positive finite time (or a negative turn/linger) is refused."""
    with pytest.raises(ValueError, match=knob):
        PriorityGate(**{knob: value})


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 80)), min_size=1, max_size=25),
    arrivals=st.lists(st.integers(0, 300), min_size=1, max_size=25),
    max_wait=st.integers(1, 30),
    linger=st.integers(0, 5),
)
@pytest.mark.slow
def test_no_background_wait_exceeds_the_bound_and_an_open_gate_never_waits(
    requests: list[tuple[int, int]], arrivals: list[int], max_wait: int, linger: int
) -> None:
    """Any schedule of requests (start, duration in ms) and background arrivals: every wait
    is at most max_wait, and work arriving at an open gate does not wait at all."""
    gate = PriorityGate(max_wait=max_wait / 1000, turn=0.001, linger=linger / 1000)
    waits: list[tuple[bool, float]] = []

    async def request(start: int, duration: int) -> None:
        await trio.sleep(start / 1000)
        with gate.foreground():
            await trio.sleep(duration / 1000)

    async def background(at: int) -> None:
        await trio.sleep(at / 1000)
        now = trio.current_time()
        was_open = gate.is_open()
        await gate.background_turn()
        waits.append((was_open, trio.current_time() - now))

    async def main() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for start, duration in requests:
                    nursery.start_soon(request, start, duration)
                for at in arrivals:
                    nursery.start_soon(background, at)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(waits) == len(arrivals)
    for was_open, waited in waits:
        assert waited <= max_wait / 1000 + 1e-9
        if was_open:
            assert waited == 0


# ---------------------------------------------------------------- actors and their tasks


class Recorder(Actor):
    """Records (message, trio time) of what it handles; ``"spawn"`` starts a helper task
    that passes a background checkpoint and records when it got through."""

    def __init__(self, seen: list[tuple[Any, float]]) -> None:
        self.seen = seen

    async def receive(self, msg: Any) -> None:
        if msg == "spawn":
            self.start_soon(self._helper)
        self.seen.append((msg, trio.current_time()))

    async def _helper(self) -> None:
        await background_checkpoint()
        self.seen.append(("helper", trio.current_time()))


async def test_a_background_supervisors_actor_waits_and_a_plain_actor_does_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While a request is in flight, only the background supervisor's actor is held."""
    front: list[tuple[Any, float]] = []
    back: list[tuple[Any, float]] = []
    with trio.fail_after(60):
        async with open_actor_system(gate=PriorityGate(max_wait=5.0)) as system:
            plain = await system.spawn(lambda: Recorder(front), name="plain")
            jobs = await system.spawn_supervisor("jobs", background=True)
            job = await jobs.spawn(lambda: Recorder(back), name="job")
            system.gate.enter()
            await plain.tell("a")
            await job.tell("a")
            await trio.sleep(2.0)
            assert (front, back) == ([("a", 0.0)], [])
            system.gate.leave()
            await trio.testing.wait_all_tasks_blocked()
            assert back == [("a", 2.0)]


async def test_tasks_a_background_actor_starts_are_background_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A background actor's helper task waits at background_checkpoint; elsewhere it is free."""
    seen: list[tuple[Any, float]] = []
    with trio.fail_after(60):
        async with open_actor_system(gate=PriorityGate(max_wait=5.0, turn=0.0)) as system:
            jobs = await system.spawn_supervisor("jobs", background=True)
            job = await jobs.spawn(lambda: Recorder(seen), name="job")
            await job.tell("spawn")  # handled at once: the gate is open
            await trio.testing.wait_all_tasks_blocked()
            system.gate.enter()
            await job.ask("spawn", timeout=30)  # the message waits the bound, then its helper
            await trio.sleep(1.0)
            system.gate.leave()
            await trio.testing.wait_all_tasks_blocked()
            with trio.testing.assert_no_checkpoints():
                await background_checkpoint()  # this test's task is not background work
    assert seen == [("spawn", 0.0), ("helper", 0.0), ("spawn", 5.0), ("helper", 6.0)]


async def test_a_background_actor_under_a_foreground_that_never_ends_still_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A foreground held for ever (a 429 storm): 100 queued messages are all handled, one
    bound (or turn) at a time, none waiting longer than max_wait."""
    seen: list[tuple[Any, float]] = []
    gate = PriorityGate(max_wait=0.02, turn=0.0)
    with trio.fail_after(60):
        async with open_actor_system(gate=gate) as system:
            jobs = await system.spawn_supervisor("jobs", background=True)
            job = await jobs.spawn(lambda: Recorder(seen), name="job")
            gate.enter()
            for i in range(100):
                await job.tell(i)
            await job.ask("last")  # answered once all before it were handled
            gate.leave()
    assert [m for m, _ in seen] == [*range(100), "last"]
    assert seen[-1][1] == pytest.approx(101 * 0.02)
    assert gate.statistics().longest_wait == pytest.approx(0.02)


class _CrashesSoon(Actor):
    """Answers asks; told "crash-soon", one of its tasks fails a second later."""

    async def receive(self, msg: Any) -> Any:
        if msg == "crash-soon":
            self.start_soon(self._boom)
            return None
        return f"answer to {msg}"

    async def _boom(self) -> None:
        await trio.sleep(1.0)
        raise RuntimeError("a helper task of the actor fails")


async def test_an_ask_taken_while_waiting_at_the_gate_survives_the_incarnations_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The incarnation ends (a crash) while the ask it took waits at the gate: the next
    incarnation answers it (it was lost, its asker hung; found by review)."""
    gate = PriorityGate(max_wait=10.0)
    async with open_actor_system(gate=gate) as system:
        jobs = await system.spawn_supervisor("jobs", background=True)
        ref = await jobs.spawn(_CrashesSoon, name="job")
        await ref.tell("crash-soon")
        await trio.testing.wait_all_tasks_blocked()
        gate.enter()
        with trio.fail_after(30):
            answer = await ref.ask("q")
        gate.leave()
    assert answer == "answer to q"


async def test_an_ask_held_at_the_gate_when_the_actor_is_stopped_is_not_left_unanswered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ask held at the gate when the actor is stopped is answered or failed, never left
    unanswered."""
    gate = PriorityGate(max_wait=10.0)
    outcome: list[object] = []
    async with open_actor_system(gate=gate) as system:
        jobs = await system.spawn_supervisor("jobs", background=True)
        ref = await jobs.spawn(_CrashesSoon, name="job")
        gate.enter()

        async def asker() -> None:
            try:
                outcome.append(await ref.ask("q"))
            except ActorStoppedError as exc:
                outcome.append(exc)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(asker)
                await trio.testing.wait_all_tasks_blocked()
                await jobs.stop_child("job")
        gate.leave()
    assert len(outcome) == 1
    assert outcome[0] == "answer to q" or isinstance(outcome[0], ActorStoppedError)
