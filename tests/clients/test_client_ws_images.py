"""Issue 14: SaveImageWebsocket images are outputs, so ``follow`` must not lose the frames
that are still on the socket when ``/history`` already says the prompt succeeded; and a
legacy (type 1) frame, which names no prompt, is given only to the prompt running (never
to one of ours that ended: another client's prompt may be broadcasting them)."""

from __future__ import annotations

import io
import json
import random
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing
from PIL import Image

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clients.comfyui import PreviewImage, PromptSucceeded, new_prompt_id
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyUISim

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"
SOCKET_DELAY = 1.5
"""Seconds every frame spends on its way (longer than follow's first poll of /history)."""


async def test_images_still_on_the_socket_when_history_says_done_are_not_lost(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Every frame reaches the client 1.5 s late (order kept): history is read first, yet
    both SaveImageWebsocket images come out before the success."""
    graph: dict[str, Any] = json.loads((WORKFLOWS / "ws_preview.json").read_text())
    sim = ComfyUISim(wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.asgi)) as http:
            client = ComfyUIClient(
                "http://comfy", http=http, ws_connect=sim.open_ws_in_memory, rng=random.Random(0)
            )
            events = client.events()
            route = events._route
            send, receive = trio.open_memory_channel[tuple[float, Any, Any]](float("inf"))

            def late(prompt_id: Any, item: Any) -> None:
                send.send_nowait((trio.current_time() + SOCKET_DELAY, prompt_id, item))

            async def deliver() -> None:
                async for due, prompt_id, item in receive:
                    await trio.sleep_until(due)
                    route(prompt_id, item)

            events._route = late  # type: ignore[method-assign]
            nursery.start_soon(deliver)
            await nursery.start(events.run)
            pid = new_prompt_id()
            await client.submit(graph, pid, events.client_id)
            with trio.fail_after(60):
                async with aclosing(client.follow(pid, events=events)) as stream:
                    updates = [update async for update in stream]
        nursery.cancel_scope.cancel()
    previews = [u for u in updates if isinstance(u, PreviewImage)]
    assert len(previews) == 2
    assert all(p.node == "2" for p in previews)
    assert isinstance(updates[-1], PromptSucceeded)


# A legacy (type 1) binary frame: no prompt id, a PNG.
LEGACY_FRAME = (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x89PNG\r\n\x1a\n"


def _text(kind: str, **data: Any) -> str:
    return json.dumps({"type": kind, "data": data})


def _legacy_owner(events: Any) -> list[str]:
    """The prompts a legacy frame dispatched now is buffered for."""
    before = {pid: len(q) for pid, q in events._orphans.items()}
    events.dispatch(LEGACY_FRAME)
    return [pid for pid, q in events._orphans.items() if len(q) > before.get(pid, 0)]


_OFFLINE: list[ComfyUIClient] = []  # one client (an httpx client loads its TLS context)


def _events() -> Any:
    """A fresh ComfyUIEvents, fed by hand (dispatch), never connected."""
    if not _OFFLINE:
        _OFFLINE.append(ComfyUIClient("http://127.0.0.1:1", http=httpx.AsyncClient()))
    return _OFFLINE[0].events()


def test_a_legacy_frame_belongs_to_the_prompt_running() -> None:
    """Between our prompt's start and its end, a legacy frame is that prompt's."""
    events = _events()
    events.dispatch(_text("execution_start", prompt_id="ours", timestamp=1))
    events.dispatch(_text("executing", node="2", display_node="2", prompt_id="ours"))
    assert _legacy_owner(events) == ["ours"]


def test_a_legacy_frame_after_our_prompt_ended_is_not_ours() -> None:
    """After executing null (or success, error, interrupted) of our prompt, a legacy frame is
    nobody's: another client's prompt without client_id broadcasts them to every socket."""
    ends = [
        _text("executing", node=None, prompt_id="ours"),
        _text("execution_success", prompt_id="ours", timestamp=2),
        _text(
            "execution_error",
            prompt_id="ours",
            node_id="2",
            node_type="X",
            executed=[],
            exception_message="m",
            exception_type="E",
            traceback=[],
            current_inputs={},
            current_outputs=[],
            timestamp=2,
        ),
        _text(
            "execution_interrupted",
            prompt_id="ours",
            node_id="2",
            node_type="X",
            executed=[],
            timestamp=2,
        ),
    ]
    for end in ends:
        events = _events()
        events.dispatch(_text("execution_start", prompt_id="ours", timestamp=1))
        events.dispatch(end)
        assert _legacy_owner(events) == [], end


def test_a_legacy_frame_after_a_foreign_prompts_progress_is_the_foreign_prompts() -> None:
    """A prompt without client_id names itself only in its broadcast progress frames: a
    legacy frame after one is that prompt's, not the one we saw start earlier."""
    events = _events()
    events.dispatch(_text("execution_start", prompt_id="ours", timestamp=1))
    events.dispatch(_text("progress", value=1, max=2, prompt_id="theirs", node="2"))
    assert _legacy_owner(events) == ["theirs"]


def test_a_foreign_end_does_not_end_ours() -> None:
    """An interruption broadcast for another prompt leaves ours the running one."""
    events = _events()
    events.dispatch(_text("execution_start", prompt_id="ours", timestamp=1))
    events.dispatch(
        _text(
            "execution_interrupted",
            prompt_id="theirs",
            node_id="2",
            node_type="X",
            executed=[],
            timestamp=2,
        )
    )
    events.dispatch(_text("executing", node=None, prompt_id="theirs"))
    assert _legacy_owner(events) == ["ours"]


async def test_a_legacy_frame_on_a_new_socket_is_nobodys(autojump_clock: trio.abc.Clock) -> None:
    """The socket is replaced (the server restarted): a prompt seen running on the old one is
    not the one running now."""
    sim = ComfyUISim(wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.asgi)) as http:
            client = ComfyUIClient(
                "http://comfy", http=http, ws_connect=sim.open_ws_in_memory, rng=random.Random(0)
            )
            events = client.events()
            await nursery.start(events.run)
            events.dispatch(_text("execution_start", prompt_id="ours", timestamp=1))
            sim.restart()
            await trio.testing.wait_all_tasks_blocked()  # the old socket is gone
            with trio.fail_after(60):
                await events.wait_connected()
            assert events.generation == 2
            assert _legacy_owner(events) == []
        nursery.cancel_scope.cancel()


RTT = 0.1
"""One HTTP exchange with a remote machine (RunComfy) takes about a round trip."""


async def test_a_foreign_prompts_previews_are_not_ours(autojump_clock: trio.abc.Clock) -> None:
    """Another client's prompt without client_id, queued right behind ours: its images,
    broadcast as legacy frames while our follower reads our history, are not ours."""
    graph: dict[str, Any] = json.loads((WORKFLOWS / "ws_preview.json").read_text())  # green
    foreign = json.loads(json.dumps(graph))
    foreign["1"]["inputs"]["color"] = 255  # blue
    sim = ComfyUISim(wall=TrioWallClock().now)

    async def remote(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await trio.sleep(RTT)
        await sim.asgi(scope, receive, send)

    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=remote)) as http:
            client = ComfyUIClient(
                "http://comfy", http=http, ws_connect=sim.open_ws_in_memory, rng=random.Random(0)
            )
            events = client.events()
            await nursery.start(events.run)
            ours = new_prompt_id()
            await client.submit(graph, ours, events.client_id)
            answer = await http.post("http://comfy/prompt", json={"prompt": foreign})
            assert answer.status_code == 200, answer.text
            with trio.fail_after(600):
                async with aclosing(client.follow(ours, events=events)) as stream:
                    updates = [update async for update in stream]
        nursery.cancel_scope.cancel()
    assert isinstance(updates[-1], PromptSucceeded)
    previews = [u for u in updates if isinstance(u, PreviewImage)]
    colours = [Image.open(io.BytesIO(p.data)).convert("RGB").getpixel((0, 0)) for p in previews]
    assert colours == [(0, 255, 0)] * 2, colours
