"""ComfyUIEvents counts a socket as connected once the server spoke on it (ComfyUI files the
socket under its client id, then sends ``status`` with the ``sid``; a prompt posted after the
handshake but before that sends its frames to nobody). MockClock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
import trio.testing
import trio_websocket

from conjure_actors.clients import ComfyUIClient, ComfyUIEvents
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyFaults, ComfyUISim

BASE = "http://comfy.sim.invalid:8188"


@attrs.define
class _QuietSocket:
    """A socket whose server says its first frame only when ``speak`` is set."""

    speak: trio.Event = attrs.Factory(trio.Event)
    sent: list[str] = attrs.Factory(list)
    spoke: bool = False

    async def send_message(self, message: str) -> None:
        self.sent.append(message)

    async def get_message(self) -> str:
        if self.spoke:
            await trio.sleep_forever()
        await self.speak.wait()
        self.spoke = True
        return '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}'

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _client(ws_connect: Any) -> ComfyUIClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    return ComfyUIClient(BASE, http=http, ws_connect=ws_connect, rng=random.Random(0))


async def test_the_socket_is_not_connected_before_the_servers_first_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    socket = _QuietSocket()

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Any]:
        yield socket

    events = _client(connect).events(hello_timeout=60.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.run)
        await trio.sleep(30.0)
        assert not events.connected
        socket.speak.set()
        with trio.fail_after(1):
            await events.wait_connected()
        assert events.connected
        nursery.cancel_scope.cancel()
    assert socket.sent[0].startswith('{"type":"feature_flags"')


async def test_a_server_silent_from_the_start_is_used_after_the_hello_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = ComfyUISim(faults=ComfyFaults(ws_silence_rate=1.0), wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport) as http:
            client = ComfyUIClient(BASE, http=http, ws_connect=sim.open_ws_in_memory)
            events: ComfyUIEvents = client.events(hello_timeout=5.0)
            started = trio.current_time()
            await nursery.start(events.run)
            assert events.connected
            assert trio.current_time() - started >= 5.0
            assert events.generation == 1
        nursery.cancel_scope.cancel()


async def test_a_socket_closed_before_its_first_frame_is_reconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[str] = []
    socket = _QuietSocket()
    socket.speak.set()

    class _Closed(_QuietSocket):
        async def get_message(self) -> str:
            raise trio_websocket.ConnectionClosed(None)

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Any]:
        attempts.append(url)
        yield _Closed() if len(attempts) == 1 else socket

    events = _client(connect).events()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.run)
        with trio.fail_after(60):
            await events.wait_connected()
        nursery.cancel_scope.cancel()
    assert len(attempts) == 2
    assert events.generation == 1
