"""WebSocket plumbing for the simulators: one server-side interface, two transports.

A simulator's WebSocket handler talks to a :class:`ServerSocket`. Two adapters provide it:

- :class:`AsgiServerSocket` over the ASGI ``websocket`` protocol (hypercorn on loopback);
- :class:`TrioServerSocket` over a ``trio_websocket.WebSocketConnection``, which is how the
  in-memory mode works: :func:`connect_in_memory` joins a client and a server connection
  with ``trio.testing.memory_stream_pair`` and runs the handler on the server end. The
  client gets a normal ``WebSocketConnection``, so the code under test cannot tell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol

import trio
import trio.testing
import trio_websocket
import wsproto.utilities

__all__ = [
    "CLIENT_MAX_MESSAGE_SIZE",
    "AsgiServerSocket",
    "ServerSocket",
    "SocketClosedError",
    "TrioServerSocket",
    "connect_in_memory",
]

CLIENT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024

_Message = MutableMapping[str, Any]


class SocketClosedError(Exception):
    """The peer is gone: a send could not be delivered."""


class ServerSocket(Protocol):
    """The server end of one WebSocket, whatever carries it."""

    async def send_text(self, text: str) -> None:
        """Send a text frame; raises :class:`SocketClosedError` if the peer is gone."""
        ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next client message, or ``None`` once the socket is closed."""
        ...

    async def close(self, code: int = 1000) -> None: ...


class TrioServerSocket:
    """:class:`ServerSocket` over an accepted trio-websocket connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise SocketClosedError from exc

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self._ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise SocketClosedError from exc

    async def receive(self) -> str | bytes | None:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            return None

    async def close(self, code: int = 1000) -> None:
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            await self._ws.aclose(code)


class AsgiServerSocket:
    """:class:`ServerSocket` over the ASGI ``websocket`` messages (after ``accept``)."""

    def __init__(
        self,
        receive: Callable[[], Awaitable[_Message]],
        send: Callable[[_Message], Awaitable[None]],
    ) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

    async def accept(self) -> bool:
        """Wait for ``websocket.connect`` and accept it; ``False`` if the client left first."""
        message = await self._receive()
        if message["type"] != "websocket.connect":
            self._closed = True
            return False
        await self._send({"type": "websocket.accept"})
        return True

    async def send_text(self, text: str) -> None:
        await self._send_message({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._send_message({"type": "websocket.send", "bytes": data})

    async def _send_message(self, message: _Message) -> None:
        if self._closed:
            raise SocketClosedError
        try:
            await self._send(message)
        except (OSError, RuntimeError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # Servers signal "client gone" differently (hypercorn: a closed stream).
            self._closed = True
            raise SocketClosedError from exc

    async def receive(self) -> str | bytes | None:
        while not self._closed:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self._closed = True
                return None
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    return str(text)
                return bytes(message.get("bytes") or b"")
        return None

    async def close(self, code: int = 1000) -> None:
        if not self._closed:
            self._closed = True
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                await self._send({"type": "websocket.close", "code": code})


async def connect_in_memory(
    nursery: trio.Nursery,
    resource: str,
    handler: Callable[[ServerSocket, str], Awaitable[None]],
    *,
    host: str = "sim.invalid",
    max_message_size: int = CLIENT_MAX_MESSAGE_SIZE,
) -> trio_websocket.WebSocketConnection:
    """A client connection to ``handler`` over an in-memory stream pair.

    ``handler(socket, resource)`` runs in ``nursery`` on the server end; when it returns the
    server closes the connection. The connections' background tasks also live in ``nursery``,
    so close the client (``aclose``) before that nursery ends.
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve() -> None:
        # The server end lives in a nursery of its own, as a real server lives in its own
        # process: what goes wrong in its connection ends the connection, not the client.
        # trio-websocket (0.12, issue #184) answers a ping that arrives after it sent its
        # close frame, and wsproto refuses that pong with LocalProtocolError: a client
        # pinging while the server closes would otherwise crash the client's nursery.
        try:
            async with trio.open_nursery() as server_nursery:
                request = await trio_websocket.wrap_server_stream(server_nursery, server_stream)
                ws = await request.accept()
                sock = TrioServerSocket(ws)
                try:
                    await handler(sock, request.path)
                finally:
                    await sock.close()
                # (The connection's reader task ends once the close handshake is over; it
                # must not be cancelled before: it answers the client's close frame.)
        except* wsproto.utilities.LocalProtocolError:
            await server_stream.aclose()

    nursery.start_soon(serve)
    return await trio_websocket.wrap_client_stream(
        nursery,
        client_stream,  # type: ignore[arg-type]  # any trio Stream works
        host,
        resource,
        max_message_size=max_message_size,
    )
