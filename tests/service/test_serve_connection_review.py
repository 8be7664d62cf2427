"""serve's connections as a client sees them on real sockets (127.0.0.1): an early answer
keeps its connection usable, a streamed chunk is never held, a hypercorn whose internals
differ is refused (defects found by review of the hypercorn subclass)."""

from __future__ import annotations

import functools
from typing import Any

import trio
import trio.testing
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conjure_actors.service.app import serve_app


def _early_app() -> Any:
    """POST /early answers 400 without reading its body, as POST /api/v2/assets does for a
    body that is not multipart/form-data (the contract test's urlencoded forms)."""

    async def early(request: Any) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=400)

    return Starlette(routes=[Route("/early", early, methods=["POST"])])


REQUEST = (
    b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 11\r\n\r\na=bbbbbbbbb"
)


async def _answer(stream: trio.SocketStream) -> bytes | None:
    """One whole answer (Content-Length: 2), or None if the server closed first."""
    got = b""
    while not (b"\r\n\r\n" in got and got.endswith(b"no")):
        chunk = await stream.receive_some()
        if not chunk:
            return None
        got += chunk
    return got


async def _ask_as_httpx(stream: trio.SocketStream) -> bytes | None:
    """REQUEST's head, then its body, in two sends (as httpx writes them); its answer, or
    None if the server closed the connection first (the client's request is then lost)."""
    head, body = REQUEST.split(b"\r\n\r\n")
    try:
        await stream.send_all(head + b"\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()  # the server's turn (a busy client)
        await stream.send_all(body)
        return await _answer(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return None


async def test_an_answer_not_marked_close_keeps_its_connection() -> None:
    """A request answered before its body was read (the app does not read it): hypercorn
    then closes the connection, but its answer does not say ``Connection: close``, so a
    client (httpx) sends its next request on that connection and loses it ('Server
    disconnected without sending a response': the contract test's flaky upload failure,
    where a urlencoded form is answered 400 unread)."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_app, _early_app(), port=0))
        port = int(url.rsplit(":", 1)[1])
        with trio.fail_after(30):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                first = await _ask_as_httpx(stream)
                assert first is not None
                assert first.startswith(b"HTTP/1.1 400")
                if b"connection: close" not in first.lower():  # the client may reuse it
                    second = await _ask_as_httpx(stream)
                    assert second is not None, "kept-alive connection closed, request lost"
        nursery.cancel_scope.cancel()


async def test_an_early_answer_to_a_large_body_says_connection_close() -> None:
    """An answer that goes before a body larger than DRAIN_MAX was read says
    ``Connection: close`` (the body is not read, the connection is not reused)."""
    from conjure_actors.service.app import DRAIN_MAX

    size = DRAIN_MAX + 1
    head = (
        b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
        b"Content-Length: " + str(size).encode() + b"\r\n\r\n"
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_app, _early_app(), port=0))
        port = int(url.rsplit(":", 1)[1])
        with trio.fail_after(30):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(head + b"x" * 100)
                answer = await _answer(stream)
                assert answer is not None
                assert answer.startswith(b"HTTP/1.1 400")
                assert b"connection: close" in answer.lower()
        nursery.cancel_scope.cancel()


def _streaming_app(first: bytes, released: trio.Event) -> Any:
    """GET /s streams ``b"a"``, ``first``, then (once ``released``) ``b"end"``, with a
    Content-Length."""
    from starlette.responses import StreamingResponse

    async def chunks() -> Any:
        yield b"a"
        yield first
        await released.wait()
        yield b"end"

    async def stream(request: Any) -> StreamingResponse:
        size = str(1 + len(first) + 3)
        return StreamingResponse(chunks(), headers={"Content-Length": size})

    return Starlette(routes=[Route("/s", stream)])


async def test_a_streamed_chunk_is_not_taken_for_a_head() -> None:
    """A body chunk that looks like a head (starts ``HTTP/1.1 2``, ends with a blank line)
    is sent at once, not held like a head until the next chunk (here: never, until the
    client has it)."""
    first = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n"  # e.g. an asset that is an HTTP transcript
    released = trio.Event()
    async with trio.open_nursery() as nursery:
        app = _streaming_app(first, released)
        url = await nursery.start(functools.partial(serve_app, app, port=0))
        port = int(url.rsplit(":", 1)[1])
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
            got = b""
            with trio.move_on_after(10):  # held, it would never come: the bound fails it
                while not got.endswith(first):
                    got += await stream.receive_some()
            released.set()
            assert got.endswith(first), f"the client has {got!r}, the chunk was held"
            with trio.fail_after(10):  # the stream ends before the server is stopped
                while not got.endswith(b"end"):
                    got += await stream.receive_some()
        nursery.cancel_scope.cancel()


def test_a_hypercorn_whose_internals_differ_is_refused_at_start(monkeypatch: Any) -> None:
    """If hypercorn's TCPServer no longer reads through ``_read_data`` (simulated here: a
    later version), _HeadWithBody's override would never be called and a connection its
    client ended would be kept 75 s, silently: serve refuses to start instead, naming
    hypercorn's version."""
    import inspect
    import textwrap

    import hypercorn.trio.run
    import hypercorn.trio.tcp_server as tcp
    import pytest

    from conjure_actors.service.app import _send_heads_with_bodies

    source = textwrap.dedent(inspect.getsource(tcp.TCPServer.run))
    namespace: dict[str, Any] = {}
    exec(source.replace("self._read_data()", "self._receive_loop()"), vars(tcp), namespace)
    monkeypatch.setattr(tcp.TCPServer, "run", namespace["run"])
    monkeypatch.setattr(tcp.TCPServer, "_receive_loop", tcp.TCPServer._read_data, raising=False)
    monkeypatch.delattr(tcp.TCPServer, "_read_data")
    monkeypatch.setattr(hypercorn.trio.run, "TCPServer", tcp.TCPServer)  # not patched yet
    with pytest.raises(RuntimeError, match="hypercorn"):
        _send_heads_with_bodies()
