"""The in-memory WebSocket transport of the simulators."""

from __future__ import annotations

import contextlib

import trio
import trio.testing
import trio_websocket

from conjure_actors.sim import ws as simws


async def test_ping_while_the_server_closes_ends_the_connection_not_the_client(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A client ping that reaches the server after it sent its close frame: trio-websocket
    (#184) answers it on the closing socket and wsproto refuses; that stays on the server's
    side, as it would in a server process of its own."""
    go = trio.Event()

    async def handler(sock: simws.ServerSocket, path: str) -> None:
        await go.wait()  # then return: the server closes

    async with trio.open_nursery() as nursery:
        conn = await simws.connect_in_memory(nursery, "/ws", handler)

        async def ping() -> None:
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await conn.ping()  # may never be answered: it is cancelled below

        nursery.start_soon(ping)
        go.set()
        await trio.testing.wait_all_tasks_blocked()  # the close handshake is over
        nursery.cancel_scope.cancel()
    assert conn.closed is not None
