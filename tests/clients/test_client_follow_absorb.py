"""``ComfyUIClient.follow(absorb=...)``: frames the socket's task hands to ``absorb`` while
the follower waits, and those it yields, are together every update of the prompt's frames,
in the frames' order, whatever ``absorb`` accepts and however the frames are timed."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clients.comfyui import (
    NodeExecuted,
    NodeProgress,
    NodesCached,
    NodeStarted,
    PromptStarted,
    PromptSucceeded,
)

BASE = "http://comfy.sim.invalid:8188"
PID = "p-1"


def _offline() -> httpx.AsyncClient:
    """An HTTP client that is never called (the follower never polls here): a transport of
    its own, so no TLS context is built per example."""
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(404)))


def frame(kind: str, node: str, value: int) -> str:
    data: dict[str, Any] = {"prompt_id": PID}
    if kind == "progress":
        data.update(node=node, value=value, max=9)
    elif kind in ("executing", "executed"):
        data["node"] = node
        if kind == "executed":
            data["output"] = {}
    elif kind == "execution_cached":
        data["nodes"] = [node]
    return json.dumps({"type": kind, "data": data})


def expected(kind: str, node: str, value: int) -> object:
    if kind == "progress":
        return NodeProgress(PID, node, float(value), 9.0)
    if kind == "executing":
        return NodeStarted(PID, node)
    if kind == "executed":
        return NodeExecuted(PID, node, ())
    if kind == "execution_start":
        return PromptStarted(PID)
    return NodesCached(PID, (node,))


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["progress", "progress", "executing", "executed", "execution_cached", "execution_start"]
        ),
        st.sampled_from(["3", "7"]),
        st.integers(0, 9),
        st.booleans(),  # wait for the follower to park before the next frame
    ),
    max_size=25,
)


ACCEPTS = st.lists(st.booleans(), min_size=1, max_size=8)


@settings(max_examples=20, deadline=None)
@given(ops=OPS, accepts=ACCEPTS)
def test_absorbed_and_yielded_updates_keep_the_frames_order(
    ops: list[tuple[str, str, int, bool]], accepts: list[bool]
) -> None:
    """Absorbed and yielded updates together equal the frames' updates, in order."""
    check_order(ops, accepts)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(ops=OPS, accepts=ACCEPTS)
def test_absorbed_and_yielded_updates_keep_the_frames_order_long(
    ops: list[tuple[str, str, int, bool]], accepts: list[bool]
) -> None:
    """The same property, many more cases (just check and CI)."""
    check_order(ops, accepts)


def check_order(ops: list[tuple[str, str, int, bool]], accepts: list[bool]) -> None:
    """Play ``ops`` on a socket-less ComfyUIEvents to a follower whose ``absorb`` takes
    what ``accepts`` says (cyclically); every update, absorbed or yielded, in order."""
    seen: list[object] = []
    offered = 0

    def absorb(update: Any) -> bool:
        nonlocal offered
        take = accepts[offered % len(accepts)]
        offered += 1
        if take:
            seen.append(update)
        return take

    async def main() -> None:
        client = ComfyUIClient(BASE, http=_offline(), redact="server s-1")
        events = client.events()
        events.connected = True  # no socket task: the test plays it with dispatch
        follow = client.follow(PID, events=events, poll_interval=1000.0, absorb=absorb)

        async def consume() -> None:
            async with aclosing(follow) as updates:
                async for update in updates:
                    seen.append(update)  # noqa: PERF401 - between absorb's appends

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                for kind, node, value, settle in ops:
                    events.dispatch(frame(kind, node, value))
                    if settle:
                        await trio.testing.wait_all_tasks_blocked()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert seen == [expected(kind, node, value) for kind, node, value, _ in ops]


@pytest.mark.parametrize(
    "kinds",
    [
        ["progress"] * 20,
        ["execution_start", "execution_cached", "executing", "progress", "executed"] * 4,
    ],
    ids=["progress", "start-cached-node-frames"],
)
def test_a_parked_follower_is_not_woken_for_absorbed_frames(kinds: list[str]) -> None:
    """Frames taken by ``absorb`` (progress; the prompt's start, its cached nodes, a node
    started or executed) wake no follower: it steps once to park, once to be cancelled."""
    steps = 0

    class Count(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            if task.name.endswith("consume"):
                steps += 1

    async def main() -> None:
        client = ComfyUIClient(BASE, http=_offline(), redact="server s-1")
        events = client.events()
        events.connected = True
        taken: list[object] = []

        def absorb(update: object) -> bool:
            taken.append(update)
            return True

        async def consume() -> None:
            follow = client.follow(PID, events=events, poll_interval=1000.0, absorb=absorb)
            async with aclosing(follow) as updates:
                async for _ in updates:
                    raise AssertionError("nothing is yielded: every frame was absorbed")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.add_instrument(Count())
                for value, kind in enumerate(kinds):
                    events.dispatch(frame(kind, "3", value))
                    await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        assert taken == [expected(kind, "3", value) for value, kind in enumerate(kinds)]

    trio.run(main)
    assert steps <= 1


def test_an_absorbed_start_and_cached_nodes_are_not_repeated_from_history() -> None:
    """The prompt's start and cached nodes taken by ``absorb`` count as seen: the history's
    answer yields neither again, and the success carries the cached nodes."""
    history = {
        PID: {
            "prompt": [0, PID, {}, {}, []],
            "outputs": {},
            "status": {
                "status_str": "success",
                "completed": True,
                "messages": [
                    ["execution_start", {"prompt_id": PID, "timestamp": 1}],
                    ["execution_cached", {"prompt_id": PID, "nodes": ["7"], "timestamp": 1}],
                    ["execution_success", {"prompt_id": PID, "timestamp": 2}],
                ],
            },
        }
    }
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json=history))
    )
    taken: list[object] = []
    yielded: list[object] = []

    def absorb(update: object) -> bool:
        taken.append(update)
        return True

    async def main() -> None:
        client = ComfyUIClient(BASE, http=http, redact="server s-1")
        events = client.events()
        events.connected = True
        follow = client.follow(PID, events=events, poll_interval=1000.0, absorb=absorb)

        async def consume() -> None:
            async with aclosing(follow) as updates:
                async for update in updates:
                    yielded.append(update)  # noqa: PERF401 - between absorb's appends

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                events.dispatch(frame("execution_start", "", 0))
                events.dispatch(frame("execution_cached", "7", 0))
                await trio.testing.wait_all_tasks_blocked()
                done = {"type": "executing", "data": {"node": None, "prompt_id": PID}}
                events.dispatch(json.dumps(done))  # history is ready

    trio.run(main)
    assert taken == [PromptStarted(PID), NodesCached(PID, ("7",))]
    assert [type(u) for u in yielded] == [PromptSucceeded]
    assert yielded[0].cached_nodes == ("7",)  # type: ignore[attr-defined]
