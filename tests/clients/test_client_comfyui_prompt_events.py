"""``ComfyUIClient.open_prompt_events``: a socket under the client id a dead process's
prompts were submitted with. P3 (a reused id may be silenced): it must say ``status`` with
that id promptly, it connects once per id (the followers of that id's prompts share it, and
it closes when the last leaves), never under an id this process's sockets had, and it does
not reconnect. MockClock, the ComfyUI simulator in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
import trio.testing

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyFaults, ComfyUISim

BASE = "http://comfy.sim.invalid:8188"
OLD = "0123456789abcdef0123456789abcdef"


@asynccontextmanager
async def _client(
    faults: ComfyFaults | None = None,
) -> AsyncIterator[tuple[ComfyUISim, ComfyUIClient]]:
    sim = ComfyUISim(faults=faults or ComfyFaults(), wall=TrioWallClock().now)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport) as http:
            yield sim, ComfyUIClient(BASE, http=http, ws_connect=sim.open_ws_in_memory)
        nursery.cancel_scope.cancel()


async def test_the_socket_connects_under_the_old_client_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server's ``status`` names the old id: the socket is used, under that id."""
    async with _client() as (sim, client), client.open_prompt_events(OLD) as events:
        assert events is not None
        assert events.connected
        assert events.client_id == OLD
        assert OLD in sim._conns


async def test_a_socket_without_status_promptly_is_taken_for_silenced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No ``status`` within the hello timeout (the server says nothing): not used (None),
    where the machine's own socket would be used anyway."""
    silent = ComfyFaults(ws_silence_rate=1.0)
    async with _client(silent) as (_, client):
        started = trio.current_time()
        async with client.open_prompt_events(OLD, hello_timeout=5.0) as events:
            assert events is None
            assert trio.current_time() - started >= 5.0


async def test_an_old_client_id_is_used_once(autojump_clock: trio.testing.MockClock) -> None:
    """A second socket under the same id would be silenced when the first closes: None."""
    async with _client() as (_, client):
        async with client.open_prompt_events(OLD) as first:
            assert first is not None
        async with client.open_prompt_events(OLD) as second:
            assert second is None


async def test_an_id_this_process_connected_under_is_not_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The machine's own socket's id (its old handler may live on): None."""
    async with _client() as (_, client), trio.open_nursery() as nursery:
        events = client.events()
        await nursery.start(events.run)
        assert events.connected
        async with client.open_prompt_events(events.client_id) as again:
            assert again is None
        nursery.cancel_scope.cancel()


async def test_the_socket_does_not_reconnect(autojump_clock: trio.testing.MockClock) -> None:
    """Dropped by the server, it stays down (a fresh id would get none of the old
    prompts' frames): its followers poll."""
    async with _client() as (sim, client), client.open_prompt_events(OLD) as events:
        assert events is not None
        sim._conns[OLD].scope.cancel()  # the server closes it
        await trio.sleep(60)
        assert not events.connected
        assert events.generation == 1


async def test_followers_of_one_old_id_share_one_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every prompt the dead process sent to the server went under its one socket's id: a
    second follower under that id gets the same socket (one connection), not None."""
    async with _client() as (_, client):
        connections: list[str] = []
        connect = client.ws_connect

        def counting(url: str) -> Any:
            connections.append(url)
            return connect(url)

        client.ws_connect = counting
        async with (
            client.open_prompt_events(OLD) as first,
            client.open_prompt_events(OLD) as second,
        ):
            assert first is not None
            assert second is first
            assert first.connected
        assert len(connections) == 1


async def test_the_shared_socket_closes_when_its_last_follower_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The follower that opened it leaves first: the socket stays for the other one (its
    prompt's frames still come), and closes once that one leaves too."""
    async with _client() as (sim, client), trio.open_nursery() as nursery:
        opener_in, opener_out = trio.Event(), trio.Event()

        async def opener() -> None:
            async with client.open_prompt_events(OLD) as events:
                assert events is not None
                opener_in.set()
                await opener_out.wait()

        nursery.start_soon(opener)
        await opener_in.wait()
        async with client.open_prompt_events(OLD) as events:
            assert events is not None
            opener_out.set()
            await trio.sleep(60)  # the opener is gone
            assert events.connected
            assert OLD in sim._conns
            shared = client._reattached[OLD]
        with trio.fail_after(30):  # closing takes its close handshake
            await shared.closed.wait()
        assert not events.connected
        await trio.testing.wait_all_tasks_blocked()  # the server saw it close
        assert OLD not in sim._conns
        async with client.open_prompt_events(OLD) as again:  # closed: never reused (P3)
            assert again is None


def test_the_ids_of_this_process_s_sockets_are_kept_bounded() -> None:
    """A long serve on a flaky ComfyUI reconnects without end: only the newest ids are
    kept (an old one's handler is long gone on the server), the newest always."""
    client = ComfyUIClient(BASE, http=httpx.AsyncClient())
    total = ComfyUIClient.MAX_OWN_IDS + 10
    for n in range(total):
        client._own_id(f"{n:032x}")
    assert len(client._ws_ids) == ComfyUIClient.MAX_OWN_IDS
    assert f"{total - 1:032x}" in client._ws_ids
    assert f"{0:032x}" not in client._ws_ids


@asynccontextmanager
async def _with_machine_socket(client: ComfyUIClient) -> AsyncIterator[Any]:
    """The machine's own socket (a fresh id), connected: it brings the server's broadcasts."""
    async with trio.open_nursery() as nursery:
        events = client.events()
        await nursery.start(events.run)
        assert events.connected
        yield events
        nursery.cancel_scope.cancel()


async def test_a_socket_silenced_after_it_connected_is_taken_for_silenced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """P3 after the hello: the dead process's handler, still open when the socket connected
    under its id, closes and drops the new socket from the server's table. The next status
    the server broadcasts (its queue changed) comes on the machine's socket, not on this
    one: within the hello timeout it is taken for silenced, no longer connected, and its
    followers are told to look at once (before, it counted as connected for ever: they
    polled every 10 s)."""
    async with _client() as (sim, client), trio.open_nursery() as nursery:
        old = await sim.connect_ws_in_memory(nursery, f"/ws?clientId={OLD}")
        async with (
            _with_machine_socket(client) as machine,
            client.open_prompt_events(OLD, hello_timeout=5.0) as events,
        ):
            assert events is not None
            sub = events.subscribe("p-1")
            await trio.sleep(30)
            await old.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert OLD not in sim._conns  # P3: deaf from now on
            assert events.connected  # nothing tells it yet
            frames = machine.frames
            sim._queue_updated()  # a status to every socket the server has
            await trio.testing.wait_all_tasks_blocked()
            assert machine.frames == frames + 1
            await trio.sleep(4.9)
            assert events.connected
            await trio.sleep(0.2)
            assert not events.connected
            assert events.silenced
            assert sub.receive.receive_nowait() is None  # "look now"
            sub.close()
        nursery.cancel_scope.cancel()


async def test_a_socket_that_has_the_broadcasts_stays_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same broadcasts on both sockets (the re-attach socket is in the server's table):
    it stays connected, however many come."""
    async with (
        _client() as (sim, client),
        _with_machine_socket(client),
        client.open_prompt_events(OLD, hello_timeout=5.0) as events,
    ):
        assert events is not None
        for _ in range(5):
            await trio.sleep(30)
            sim._queue_updated()
        await trio.sleep(60)
        assert events.connected
        assert not events.silenced
