"""Supervisors: strategies, restart types, intensity, escalation, backoff, shutdown, dynamic
children, and what a restart does to the mailbox."""

from __future__ import annotations

import functools
import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.runtime import (
    NO_BACKOFF,
    Actor,
    ActorCrashed,
    ActorRef,
    ActorRestarted,
    ActorSpec,
    ActorStarted,
    ActorStopped,
    ActorStoppedError,
    Backoff,
    EscalationError,
    Intensity,
    ListSink,
    NameTakenError,
    Restart,
    Strategy,
    SupervisorEscalated,
    SupervisorSpec,
    open_actor_system,
    shielded,
)

CAP = 30


class Worker(Actor):
    """Logs its lifecycle into a shared list; "crash" raises, "quit" ends it normally."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name

    async def on_start(self) -> None:
        self.log.append(f"start {self.name}{self.incarnation}")

    async def receive(self, msg: object) -> object:
        if msg == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if msg == "quit":
            self.stop()
        return self.incarnation

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}{self.incarnation}")


def worker(log: list[str], name: str, **kw: object) -> ActorSpec:
    return ActorSpec(functools.partial(Worker, log, name), name, **kw)  # type: ignore[arg-type]


class StartCrasher(Actor):
    """Crashes in on_start, every time."""

    async def on_start(self) -> None:
        raise ConnectionError("cannot start")

    async def receive(self, msg: object) -> object:
        return None


async def crash(ref: ActorRef) -> None:
    """Make the actor behind ``ref`` crash and wait until the crash has been handled."""
    await ref.tell("crash")
    await trio.testing.wait_all_tasks_blocked()


# -- restart intensity and escalation -----------------------------------------------------


async def test_crash_storm_within_intensity_restarts_each_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three crashes within 5 s (the default intensity) are each restarted, no escalation."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink, backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "w"))
            for _ in range(3):
                await crash(ref)
            assert await ref.ask("which") == 4
    assert not [e for e in sink.events if isinstance(e, SupervisorEscalated)]


async def test_crash_storm_beyond_intensity_escalates_out_of_the_system(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fourth crash within 5 s escalates at the root: open_actor_system raises."""
    sink = ListSink()

    async def storm() -> None:
        async with open_actor_system(sink, backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "w"))
            for _ in range(4):
                await crash(ref)
            await trio.sleep_forever()  # cancelled by the escalation

    with trio.fail_after(CAP), pytest.raises(EscalationError, match=r"root gave up.*root/w"):
        await storm()
    escalated = [e for e in sink.events if isinstance(e, SupervisorEscalated)]
    assert [(e.supervisor, e.child, e.restarts, e.window) for e in escalated] == [
        ("root", "root/w", 4, 5.0)
    ]
    assert isinstance(sink.events[-1], ActorStopped)
    assert (sink.events[-1].actor, sink.events[-1].reason) == ("root", "escalated")


async def test_an_escalation_names_the_crash_it_gave_up_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The one line a run stops with says what kept crashing, not only where."""

    async def storm() -> None:
        async with open_actor_system(intensity=Intensity(1, 5), backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "w"))
            for _ in range(2):
                await crash(ref)
            await trio.sleep_forever()  # cancelled by the escalation

    with trio.fail_after(CAP), pytest.raises(EscalationError) as info:
        await storm()
    assert "(last: root/w: RuntimeError: w crashed)" in str(info.value)


async def test_an_escalation_through_two_levels_names_the_first_crash_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The root's line names the leaf's crash (the middle supervisor's own escalation is
    the chain between them, not a second message inside the first)."""
    with trio.fail_after(CAP), pytest.raises(EscalationError) as info:
        await _two_level_crash_loop(ListSink())
    line = str(info.value)
    assert line.startswith("supervisor root gave up")
    assert "(last: root/mid: ConnectionError: cannot start)" in line
    assert line.count("gave up") == 1


async def test_crashes_spread_beyond_the_period_never_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Crashes 2 s apart stay within 3-in-5 s forever: the window slides."""
    log: list[str] = []
    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker(log, "w"))
            for _ in range(12):
                await crash(ref)
                await trio.sleep(2)
            assert await ref.ask("which") == 13


async def test_zero_intensity_escalates_on_first_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Intensity(0, ...) escalates on the very first crash."""

    async def one_crash() -> None:
        async with open_actor_system(intensity=Intensity(0, 1), backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "w"))
            await crash(ref)
            await trio.sleep_forever()

    with trio.fail_after(CAP), pytest.raises(EscalationError):
        await one_crash()


async def _two_level_crash_loop(sink: ListSink) -> None:
    """root -> mid -> a leaf that crashes as it starts, every time (both allow 1 in 5 s)."""
    mid = SupervisorSpec(
        "mid",
        children=[ActorSpec(StartCrasher, "leaf")],
        intensity=Intensity(1, 5),
        backoff=NO_BACKOFF,
    )
    async with open_actor_system(sink, intensity=Intensity(1, 5), backoff=NO_BACKOFF) as system:
        await system.root.start_child(mid)
        await trio.sleep_forever()


async def test_escalation_through_two_levels(autojump_clock: trio.testing.MockClock) -> None:
    """A crash loop escalates from the middle supervisor to the root, then out."""
    sink = ListSink()
    with trio.fail_after(CAP), pytest.raises(EscalationError, match="supervisor root ") as info:
        await _two_level_crash_loop(sink)
    escalations = [
        (e.supervisor, e.child) for e in sink.events if isinstance(e, SupervisorEscalated)
    ]
    assert escalations == [
        ("root/mid", "root/mid/leaf"),
        ("root/mid", "root/mid/leaf"),
        ("root", "root/mid"),
    ]
    assert isinstance(info.value.__cause__, EscalationError)  # mid's, as the root's cause
    assert isinstance(info.value.__cause__.__cause__, ConnectionError)  # the leaf's crash
    crashed_mid = [e for e in sink.events if isinstance(e, ActorCrashed) and e.actor == "root/mid"]
    assert [e.error_type for e in crashed_mid] == ["EscalationError", "EscalationError"]


# -- strategies ---------------------------------------------------------------------------


async def _run_strategy(strategy: Strategy) -> tuple[list[str], list[object]]:
    log: list[str] = []
    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            sup = await system.spawn_supervisor(
                "s",
                strategy=strategy,
                backoff=NO_BACKOFF,
                children=[worker(log, n) for n in "abc"],
            )
            refs = sup.children()
            log.clear()
            await crash(refs[1])  # type: ignore[arg-type]
            incarnations = [await r.ask("which") for r in refs]  # type: ignore[union-attr]
            during = list(log)
    return during, incarnations


async def test_one_for_one_restarts_only_the_failed_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """one_for_one: only b restarts."""
    log, incarnations = await _run_strategy(Strategy.ONE_FOR_ONE)
    assert incarnations == [1, 2, 1]
    assert log == ["stop b1", "start b2"]


async def test_one_for_all_restarts_every_child_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """one_for_all: siblings stop in reverse start order, then all start in start order."""
    log, incarnations = await _run_strategy(Strategy.ONE_FOR_ALL)
    assert incarnations == [2, 2, 2]
    assert log == ["stop b1", "stop c1", "stop a1", "start a2", "start b2", "start c2"]


async def test_rest_for_one_restarts_the_failed_child_and_younger_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """rest_for_one: b and c (started after b) restart; a keeps running."""
    log, incarnations = await _run_strategy(Strategy.REST_FOR_ONE)
    assert incarnations == [1, 2, 2]
    assert log == ["stop b1", "stop c1", "start b2", "start c2"]


async def test_group_restart_drops_temporary_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """one_for_all stops a temporary sibling and does not bring it back."""
    log: list[str] = []
    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            sup = await system.spawn_supervisor(
                "s",
                strategy=Strategy.ONE_FOR_ALL,
                backoff=NO_BACKOFF,
                children=[worker(log, "a"), worker(log, "t", restart=Restart.TEMPORARY)],
            )
            a, t = sup.children()
            await crash(a)  # type: ignore[arg-type]
            assert [r.name for r in sup.children()] == ["a"]
            with pytest.raises(ActorStoppedError):
                await t.ask("x")  # type: ignore[union-attr]


# -- restart types ------------------------------------------------------------------------


async def test_permanent_child_restarts_after_crash_and_after_normal_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """permanent: restarted whether it crashed or ended normally."""
    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "p"))
            await crash(ref)
            await ref.tell("quit")
            await trio.testing.wait_all_tasks_blocked()
            assert await ref.ask("which") == 3


async def test_transient_child_restarts_after_crash_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """transient: restarted after a crash, removed after a normal exit."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink, backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "t", restart=Restart.TRANSIENT))
            await crash(ref)
            assert await ref.ask("which") == 2
            await ref.tell("quit")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorStoppedError):
                await ref.ask("which")
            assert system.root.child("t") is None
    stopped = [e for e in sink.events if isinstance(e, ActorStopped) and e.actor == "root/t"]
    assert [(e.incarnation, e.reason) for e in stopped] == [(2, "normal")]


async def test_temporary_child_is_never_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """temporary: a crash removes it (ActorCrashed, then ActorStopped reason crashed)."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink, backoff=NO_BACKOFF) as system:
            ref = await system.root.start_child(worker([], "x", restart=Restart.TEMPORARY))
            await crash(ref)
            with pytest.raises(ActorStoppedError):
                await ref.ask("which")
    mine = [e for e in sink.events if getattr(e, "actor", None) == "root/x"]
    assert [type(e) for e in mine] == [ActorStarted, ActorCrashed, ActorStopped]
    assert mine[-1].reason == "crashed"


# -- backoff ------------------------------------------------------------------------------


async def test_backoff_grows_exponentially_and_is_capped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Restart delays follow initial * factor**k up to max, and the restart waits that long."""
    sink = ListSink()
    backoff = Backoff(initial=1, factor=2, max=5, jitter=0)
    starts: list[float] = []
    crashes: list[float] = []

    class Timed(Actor):
        async def on_start(self) -> None:
            starts.append(trio.current_time())

        async def receive(self, msg: object) -> object:
            crashes.append(trio.current_time())
            raise RuntimeError("again")

    with trio.fail_after(10 * CAP):
        async with open_actor_system(sink, backoff=backoff, intensity=Intensity(10, 100)) as system:
            ref = await system.spawn(Timed, name="t")
            for _ in range(5):
                await ref.tell("go")
                await trio.sleep(10)  # longer than any delay: the next start has happened
    delays = [e.delay for e in sink.events if isinstance(e, ActorRestarted)]
    assert delays == [1, 2, 4, 5, 5]
    gaps = [start - crashed for crashed, start in zip(crashes, starts[1:], strict=True)]
    assert gaps == pytest.approx(delays)


async def test_backoff_jitter_is_reproducible_with_a_seed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same rng seed gives the same jittered delays."""

    async def delays(seed: int) -> list[float]:
        sink = ListSink()
        with trio.fail_after(CAP):
            async with open_actor_system(sink, rng=seed, intensity=Intensity(10, 100)) as system:
                ref = await system.root.start_child(worker([], "w"))
                for _ in range(4):
                    await ref.tell("crash")
                    await trio.sleep(6)
        return [e.delay for e in sink.events if isinstance(e, ActorRestarted)]

    first, second, other = await delays(7), await delays(7), await delays(8)
    assert first == second
    assert first != other
    assert len(first) == 4


async def test_restart_backoff_does_not_block_the_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While one child waits out a long backoff, start_child on its supervisor still works."""
    with trio.fail_after(10 * CAP):
        async with open_actor_system(backoff=Backoff(initial=100, jitter=0, max=100)) as system:
            a = await system.root.start_child(worker([], "a"))
            await crash(a)
            start = trio.current_time()
            b = await system.root.start_child(worker([], "b"))
            assert trio.current_time() - start < 1
            assert await b.ask("which") == 1
            assert await a.ask("which") == 2
            assert trio.current_time() - start == pytest.approx(100, abs=1)


# -- mailboxes across restarts ------------------------------------------------------------


@given(
    count=st.integers(min_value=1, max_value=60),
    crash_at=st.sets(st.integers(min_value=0, max_value=59), max_size=3),
    delay=st.sampled_from([0.0, 0.5]),
)
def test_restart_drops_exactly_the_crashing_message(
    count: int, crash_at: set[int], delay: float
) -> None:
    """Across restarts nothing queued is lost or duplicated; only the crashing message is gone."""
    crash_at = {c for c in crash_at if c < count}

    async def main() -> None:
        seen: list[int] = []

        class Picky(Actor):
            async def receive(self, msg: int) -> None:
                if msg in crash_at:
                    raise ValueError(f"message {msg}")
                seen.append(msg)

        backoff = Backoff(initial=delay, jitter=0)
        async with open_actor_system(backoff=backoff) as system:
            ref = await system.spawn(Picky, name="p", mailbox_size=math.inf)
            for i in range(count):
                ref.tell_nowait(i)  # all queued before the first is handled
            await trio.sleep(5)  # every restart and backoff is over
            stats = ref.statistics()
        assert seen == [i for i in range(count) if i not in crash_at]
        assert stats.restarts == len(crash_at)
        assert stats.handled == count - len(crash_at)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_ref_stays_valid_across_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    """The same ref reaches the new incarnation; tells sent during the backoff wait for it."""
    with trio.fail_after(CAP):
        async with open_actor_system(backoff=Backoff(initial=3, jitter=0)) as system:
            ref = await system.root.start_child(worker([], "w"))
            await ref.tell("crash")
            await trio.sleep(1)  # inside the backoff
            await ref.tell("queued")
            assert ref.statistics().mailbox_depth == 1
            assert await ref.ask("which") == 2
            assert system.lookup("root/w") is ref


async def test_supervisor_restart_keeps_children_refs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When a supervisor is restarted by its parent, its children come back behind the same refs."""
    with trio.fail_after(CAP):
        async with open_actor_system(backoff=NO_BACKOFF) as system:
            mid = await system.spawn_supervisor(
                "mid", intensity=Intensity(0, 5), children=[worker([], "a"), worker([], "b")]
            )
            a, b = mid.children()
            await crash(a)  # type: ignore[arg-type]  # mid escalates (intensity 0), root restarts mid
            assert mid.statistics().incarnation == 2
            assert [await a.ask("which"), await b.ask("which")] == [2, 2]  # type: ignore[union-attr]


# -- shutdown -----------------------------------------------------------------------------


async def test_shutdown_stops_children_in_reverse_start_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Leaving the system stops the tree depth-first in reverse start order."""
    log: list[str] = []
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            await system.root.start_child(worker(log, "a"))
            await system.spawn_supervisor("s", children=[worker(log, "b"), worker(log, "c")])
            await system.root.start_child(worker(log, "d"))
            log.clear()
    assert log == ["stop d1", "stop c1", "stop b1", "stop a1"]


async def test_shutdown_cancels_a_child_after_its_graceful_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child stuck in a message is cancelled after shutdown_timeout; others stop gracefully."""
    sink = ListSink()

    class Stuck(Actor):
        async def receive(self, msg: object) -> object:
            await trio.sleep_forever()

    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            await system.root.start_child(worker([], "calm"))
            stuck = await system.spawn(Stuck, name="stuck", shutdown_timeout=7)
            await stuck.tell("hang")
            start = trio.current_time()
        elapsed = trio.current_time() - start
    assert elapsed == pytest.approx(7)
    stops = {e.actor: e.forced for e in sink.events if isinstance(e, ActorStopped)}
    assert stops == {"root/stuck": True, "root/calm": False, "root": False}


async def test_body_exception_still_shuts_down_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception in the system block stops actors gracefully and comes out unwrapped."""
    sink = ListSink()

    class Slow(Actor):
        async def receive(self, msg: object) -> object:
            await trio.sleep(2)  # finishes within its graceful deadline
            return None

    async def failing_block() -> None:
        async with open_actor_system(sink) as system:
            ref = await system.spawn(Slow, name="a")
            await ref.tell("work")
            raise LookupError("mine")

    with trio.fail_after(CAP), pytest.raises(LookupError, match="mine"):
        await failing_block()
    stopped = [(e.actor, e.reason, e.forced) for e in sink.events if isinstance(e, ActorStopped)]
    assert stopped == [("root/a", "shutdown", False), ("root", "shutdown", False)]


# -- dynamic children ---------------------------------------------------------------------


async def test_dynamic_children_start_and_stop_by_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A job supervisor hosts one actor per job; stop_child removes one and kills its ref."""
    log: list[str] = []
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            jobs = await system.spawn_supervisor("jobs")
            refs = [
                await jobs.start_child(worker(log, f"job{i}", restart=Restart.TEMPORARY))
                for i in range(4)
            ]
            assert [r.path for r in jobs.children()] == [f"root/jobs/job{i}" for i in range(4)]
            assert await jobs.stop_child(refs[1])
            assert not await jobs.stop_child("job1")
            with pytest.raises(ActorStoppedError):
                await refs[1].tell("x")
            assert [r.name for r in jobs.children()] == ["job0", "job2", "job3"]
            assert system.lookup("root/jobs/job1") is None


async def test_start_child_with_taken_name_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two children of one supervisor cannot share a name."""
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            await system.root.start_child(worker([], "dup"))
            with pytest.raises(NameTakenError, match=r"root.*'dup'"):
                await system.root.start_child(worker([], "dup"))


async def test_dynamic_child_failing_on_start_raises_to_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_child raises what on_start raised, and the child is not kept."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink) as system:
            with pytest.raises(ConnectionError, match="cannot start"):
                await system.spawn(StartCrasher, name="bad")
            assert system.root.child("bad") is None
    mine = [type(e) for e in sink.events if getattr(e, "actor", None) == "root/bad"]
    assert mine == [ActorCrashed, ActorStopped]


async def test_supervisor_stopped_for_good_refuses_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_child on a stopped supervisor raises ActorStoppedError; its children are stopped."""
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            jobs = await system.spawn_supervisor("jobs", children=[worker([], "j")])
            (j,) = jobs.children()
            assert await system.stop(jobs)
            with pytest.raises(ActorStoppedError, match="root/jobs"):
                await jobs.start_child(worker([], "k"))
            with pytest.raises(ActorStoppedError):
                await j.ask("x")  # type: ignore[union-attr]


async def test_stopping_a_supervisor_fails_its_pending_start_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A start_child still waiting for on_start when its supervisor stops gets ActorStoppedError."""

    class SlowStart(Actor):
        async def on_start(self) -> None:
            await trio.sleep_forever()

        async def receive(self, msg: object) -> object:
            return None

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            jobs = await system.spawn_supervisor("jobs")
            async with trio.open_nursery() as nursery:

                async def starter() -> None:
                    with pytest.raises(ActorStoppedError, match="root/jobs"):
                        await jobs.spawn(SlowStart, name="slow", shutdown_timeout=2)

                nursery.start_soon(starter)
                await trio.testing.wait_all_tasks_blocked()
                assert await system.stop(jobs)


async def test_outside_cancellation_stops_everything_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling the system from outside cancels actors at once; shielded cleanup still runs."""
    sink, log = ListSink(), []

    class Paid(Actor):
        async def receive(self, msg: object) -> object:
            return None

        async def on_stop(self) -> None:
            with shielded(5):
                await trio.sleep(1)
                log.append("machine stopped")

    with trio.fail_after(CAP):
        with trio.CancelScope() as outer:
            async with open_actor_system(sink) as system:
                await system.spawn(Paid, name="m")
                outer.cancel()
                await trio.sleep_forever()
    assert log == ["machine stopped"]
    (stopped,) = [e for e in sink.events if isinstance(e, ActorStopped) and e.actor == "root/m"]
    assert (stopped.reason, stopped.forced) == ("cancelled", True)


async def test_self_stop_from_a_background_task_wakes_an_idle_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """self.stop() called from a background task ends an idle (transient) actor promptly."""

    class Timer(Actor):
        async def on_start(self) -> None:
            self.start_soon(self.expire)

        async def expire(self) -> None:
            await trio.sleep(3)
            self.stop()

        async def receive(self, msg: object) -> object:
            return None

    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Timer, name="t", restart=Restart.TRANSIENT)
            await trio.sleep(4)
            assert system.root.child("t") is None
            with pytest.raises(ActorStoppedError):
                await ref.tell("x")


def _model_escalates(times: list[float], max_restarts: int, period: float) -> int | None:
    """Index of the crash that exceeds the intensity (sliding window of restarts), or None."""
    for i, now in enumerate(times):
        if sum(1 for t in times[: i + 1] if t > now - period) > max_restarts:
            return i
    return None


@given(
    gaps=st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=12),
    max_restarts=st.integers(min_value=0, max_value=3),
    period=st.integers(min_value=1, max_value=5),
)
def test_intensity_matches_the_sliding_window_model(
    gaps: list[int], max_restarts: int, period: int
) -> None:
    """The root escalates exactly at the crash where a sliding-window model says it must."""
    times = []
    now = 0.0
    for gap in gaps:
        now += gap / 2
        times.append(now)
    expected = _model_escalates(times, max_restarts, period)

    async def main() -> None:
        sink = ListSink()
        crashed = 0

        async def scenario() -> None:
            nonlocal crashed
            async with open_actor_system(
                sink, intensity=Intensity(max_restarts, period), backoff=NO_BACKOFF
            ) as system:
                ref = await system.root.start_child(worker([], "w"))
                origin = trio.current_time()
                for at in times:
                    await trio.sleep_until(origin + at)
                    crashed += 1
                    await crash(ref)

        if expected is None:
            await scenario()
            assert not [e for e in sink.events if isinstance(e, SupervisorEscalated)]
        else:
            with pytest.raises(EscalationError):
                await scenario()
            assert crashed == expected + 1
            restarted = [e for e in sink.events if isinstance(e, ActorRestarted)]
            assert len(restarted) == expected

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_child_that_stopped_itself_can_be_started_again_once_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wait_child_ended, then start_child of the same name: no NameTakenError, even when
    asked right after the child's stop (before its supervisor handled the exit)."""
    log: list[str] = []
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.root.start_child(worker(log, "w", restart=Restart.TRANSIENT))
            await ref.tell("quit")
            await system.root.wait_child_ended("w")
            again = await system.root.start_child(worker(log, "w", restart=Restart.TRANSIENT))
            assert await again.ask("hello") == 1
            await system.root.wait_child_ended("nobody")  # no such child: returns at once
    assert log[:3] == ["start w1", "stop w1", "start w1"]


async def test_wait_child_ended_waits_out_a_restart_until_the_child_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child waiting for its restart is not gone: wait_child_ended returns once it ended."""
    log: list[str] = []
    with trio.fail_after(10 * CAP):
        async with open_actor_system(backoff=Backoff(initial=10, jitter=0, max=10)) as system:
            ref = await system.root.start_child(worker(log, "w", restart=Restart.TRANSIENT))
            await crash(ref)  # restarted in 10 s

            async def quit_once_restarted() -> None:
                assert await ref.ask("which") == 2
                await ref.tell("quit")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(quit_once_restarted)
                await system.root.wait_child_ended("w")
                again = await system.root.start_child(worker(log, "w", restart=Restart.TRANSIENT))
            assert await again.ask("which") == 1
    assert log[:5] == ["start w1", "stop w1", "start w2", "stop w2", "start w1"]
