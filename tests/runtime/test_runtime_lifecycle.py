"""Whatever happens in a supervision tree, each actor's lifecycle events form a legal sequence.

The domain folds these events into actor health; a replay must never see, say, a restart of
an actor that was never started, or an actor left "up" after the system stopped.
"""

from __future__ import annotations

import contextlib

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.runtime import (
    NO_BACKOFF,
    Actor,
    ActorCrashed,
    ActorError,
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
    Restart,
    Status,
    Strategy,
    SupervisorEscalated,
    SupervisorRef,
    SupervisorSpec,
    open_actor_system,
)

# Legal moves of one actor's lifecycle: state -> {event type -> next state}.
LEGAL = {
    "none": {ActorStarted: "up", ActorCrashed: "crashed"},  # crashed: failed dynamic start
    "up": {ActorCrashed: "crashed", ActorStopped: "down"},
    "crashed": {ActorRestarted: "pending", ActorStopped: "down"},
    "pending": {ActorStarted: "up", ActorStopped: "down", ActorCrashed: "crashed"},
    "down": {ActorRestarted: "pending", ActorStarted: "up"},
}


class Node(Actor):
    async def on_start(self) -> None:
        if self.path.endswith("bad"):
            raise ConnectionError("cannot start")

    async def receive(self, msg: str) -> None:
        if msg == "crash":
            raise RuntimeError("crash")
        if msg == "quit":
            self.stop()
        if msg == "slow":
            await trio.sleep(1)
        if msg == "defer":
            self.defer_reply()  # never answered: fails when the incarnation ends


OPS = (
    *("crash", "quit", "slow", "stop", "spawn", "spawn-bad", "sleep"),
    *("ask", "ask-crash", "ask-slow", "ask-defer"),
)
ops = st.lists(
    st.tuples(
        st.sampled_from(OPS),
        st.integers(min_value=0, max_value=5),
    ),
    max_size=25,
)


@given(
    strategy=st.sampled_from(list(Strategy)),
    restarts=st.lists(st.sampled_from(list(Restart)), min_size=1, max_size=4),
    plan=ops,
    max_restarts=st.integers(min_value=0, max_value=4),
    delay=st.sampled_from([0.0, 0.3]),
    nested=st.booleans(),
)
@pytest.mark.slow
def test_lifecycle_events_form_legal_sequences(
    strategy: Strategy,
    restarts: list[Restart],
    plan: list[tuple[str, int]],
    max_restarts: int,
    delay: float,
    nested: bool,
) -> None:
    """Random crashes, exits, stops, spawns and asks: every actor's events follow LEGAL and end
    down, statistics agree with the journal, and every ask ends (none is left parked)."""
    sink = ListSink()
    seen: dict[str, ActorRef] = {}
    asked: list[str] = []
    answered: list[str] = []

    async def asker(ref: ActorRef, msg: str) -> None:
        asked.append(msg)
        try:
            await ref.ask(msg)
            answered.append("ok")
        except ActorStoppedError:
            answered.append("stopped")
        except RuntimeError:
            answered.append("crash")

    async def scenario(askers: trio.Nursery) -> None:
        backoff = Backoff(initial=delay, jitter=0) if delay else NO_BACKOFF
        async with open_actor_system(
            sink, intensity=Intensity(max_restarts, 5), backoff=backoff, rng=0
        ) as system:
            sup = await system.spawn_supervisor(
                "s",
                strategy=strategy,
                intensity=Intensity(max_restarts, 5),
                backoff=backoff,
                children=[
                    # Odd children stop within 0.5 s or are cancelled ("slow" takes 1 s).
                    ActorSpec(Node, f"c{i}", restart=kind, shutdown_timeout=0.5 + 5 * (i % 2))
                    for i, kind in enumerate(restarts)
                ],
            )
            if nested:
                await sup.start_child(
                    SupervisorSpec(
                        "n",
                        children=[ActorSpec(Node, "n0"), ActorSpec(Node, "n1")],
                        strategy=strategy,
                        intensity=Intensity(max_restarts, 5),
                        backoff=backoff,
                    )
                )
            for n, (op, i) in enumerate(plan):
                children = sup.children()
                seen.update((r.path, r) for r in children if isinstance(r, ActorRef))
                if op == "sleep":
                    await trio.sleep(i)
                elif op == "spawn":
                    await sup.start_child(ActorSpec(Node, f"d{n}", restart=Restart.TRANSIENT))
                elif op == "spawn-bad":
                    with contextlib.suppress(ConnectionError):
                        await sup.start_child(ActorSpec(Node, f"x{n}bad"))
                elif children:
                    ref = children[i % len(children)]
                    if isinstance(ref, SupervisorRef):  # reach into the nested supervisor
                        grandchildren = ref.children()
                        ref = grandchildren[i % len(grandchildren)] if grandchildren else ref
                    if op == "stop":
                        await system.stop(ref)
                    elif op.startswith("ask") and isinstance(ref, ActorRef):
                        askers.start_soon(asker, ref, op.partition("-")[2] or "x")
                    else:
                        # Stopped meanwhile, or full: both fine here.
                        with contextlib.suppress(ActorError, AttributeError):
                            ref.tell_nowait(op)  # type: ignore[union-attr]
                await trio.testing.wait_all_tasks_blocked()

    async def main() -> None:
        with trio.fail_after(1000):
            async with trio.open_nursery() as askers:
                try:
                    await scenario(askers)
                except EscalationError:
                    assert any(isinstance(e, SupervisorEscalated) for e in sink.events)
        assert len(answered) == len(asked)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    states: dict[str, str] = {}
    started: dict[str, int] = {}
    for event in sink.events:
        if isinstance(event, SupervisorEscalated):
            continue
        state = states.get(event.actor, "none")
        moves = LEGAL[state]
        assert type(event) in moves, (event, state)
        states[event.actor] = moves[type(event)]
        if isinstance(event, ActorStarted):
            assert event.incarnation == started.get(event.actor, 0) + 1, event
            started[event.actor] = event.incarnation
    assert set(states.values()) == {"down"}, states
    for path, ref in seen.items():  # statistics agree with the journal
        stats = ref.statistics()
        assert stats.status is Status.STOPPED
        restarted = [e for e in sink.events if isinstance(e, ActorRestarted) and e.actor == path]
        assert stats.restarts == len(restarted), path
        assert stats.incarnation == started[path], path
