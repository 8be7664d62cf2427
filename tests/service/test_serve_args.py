"""``serve``'s ``--journal-sync``: parsed, and (slow) the journal it opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from service_helpers import serving, workflow

from conjure_actors.cli import build_parser


def test_journal_sync_defaults_to_fsynced_batches() -> None:
    """Without --journal-sync a 201 waits for an fsync (the durable default)."""
    args = build_parser("serve").parse_args(["serve"])
    assert args.journal_sync == "batch"


@pytest.mark.parametrize("level", ["batch", "always", "none"])
def test_journal_sync_accepts_the_journals_policies(level: str) -> None:
    """Each of the journal's sync policies is a valid --journal-sync."""
    args = build_parser("serve").parse_args(["serve", "--journal-sync", level])
    assert args.journal_sync == level


def test_journal_sync_refuses_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown level is a usage error naming the choices."""
    with pytest.raises(SystemExit):
        build_parser("serve").parse_args(["serve", "--journal-sync", "sometimes"])
    assert "batch" in capsys.readouterr().err


@pytest.mark.slow
async def test_journal_sync_none_reaches_the_journal(sim_config: Any, tmp_path: Path) -> None:
    """serve's journal writes under the level asked for, and a job is accepted under it."""
    import httpx

    with trio.fail_after(60):
        async with serving(sim_config, tmp_path, sync="none") as served:
            async with httpx.AsyncClient(base_url=served.url) as http:
                r = await http.post("/api/v2/jobs", json={"workflow": workflow("invert_save.json")})
            assert r.status_code == 201, r.text
            assert served.service.journal.statistics().sync == "none"


async def test_an_idle_kept_alive_connection_outlives_the_clients_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server keeps an idle kept-alive connection open longer than a client's pool does
    (httpx: 5 s), so it never closes one just as the client sends a POST on it."""
    import functools

    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from conjure_actors.service.app import serve_app

    async def answer(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", status_code=201)

    app = Starlette(routes=[Route("/", answer, methods=["POST"])])
    expiry = httpx.Limits().keepalive_expiry
    assert expiry is not None
    request = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve_app, app, port=0))
            port = int(url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(request)
                answered = b""
                while not answered.endswith(b"ok"):
                    answered += await stream.receive_some()
                assert answered.startswith(b"HTTP/1.1 201")
                # Idle for twice the client's expiry: the server has not closed it.
                with trio.move_on_after(2 * expiry):
                    assert await stream.receive_some() != b"", "closed by the server"
                await stream.send_all(request)
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 201")
            nursery.cancel_scope.cancel()


class _Recorder:
    """A connection's stream and protocol that record what hypercorn's server does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    async def send_all(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True

    async def handle(self, event: Any) -> None:
        pass


def _connection(recorder: _Recorder) -> Any:
    import hypercorn.config

    from conjure_actors.service.app import _HeadWithBody

    server = _HeadWithBody(None, hypercorn.config.Config(), None, None, recorder)  # type: ignore[arg-type]
    server.protocol = recorder  # type: ignore[assignment]
    return server


HEAD = b"HTTP/1.1 201 \r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


async def test_a_response_head_goes_out_with_its_body() -> None:
    """A 201's head and body leave in one send (then the response's end), not two."""
    from hypercorn.events import RawData

    recorder = _Recorder()
    server = _connection(recorder)
    await server.protocol_send(RawData(data=HEAD))
    assert recorder.sent == []
    await server.protocol_send(RawData(data=b"{}"))
    await server.protocol_send(RawData(data=b""))
    assert recorder.sent == [HEAD + b"{}", b""]


async def test_an_informational_head_is_sent_at_once() -> None:
    """``100 Continue`` is not held: the client waits for it before sending its body."""
    from hypercorn.events import RawData

    recorder = _Recorder()
    server = _connection(recorder)
    await server.protocol_send(RawData(data=b"HTTP/1.1 100 \r\n\r\n"))
    assert recorder.sent == [b"HTTP/1.1 100 \r\n\r\n"]


async def test_a_held_head_is_sent_before_the_connection_closes() -> None:
    """A head with nothing after it still reaches the client before the close."""
    from hypercorn.events import Closed, RawData

    recorder = _Recorder()
    server = _connection(recorder)
    await server.protocol_send(RawData(data=HEAD))
    await server.protocol_send(Closed())
    assert recorder.sent == [HEAD]
    assert recorder.closed


def _slow_app(seconds: float) -> Any:
    """An app whose POST / answers 201 ``ok`` after ``seconds`` (trio's clock)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def answer(request: Any) -> PlainTextResponse:
        await trio.sleep(seconds)
        return PlainTextResponse("ok", status_code=201)

    return Starlette(routes=[Route("/", answer, methods=["POST"])])


async def _ask(stream: trio.SocketStream) -> bytes:
    await stream.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    answered = b""
    while not answered.endswith(b"ok"):
        chunk = await stream.receive_some()
        assert chunk, "closed before the answer"
        answered += chunk
    return answered


async def test_an_idle_connection_is_closed_once_the_keep_alive_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Idle past KEEP_ALIVE_TIMEOUT (and only then), the server closes the connection."""
    import functools

    from conjure_actors.service.app import KEEP_ALIVE_TIMEOUT, serve_app

    with trio.fail_after(10 * KEEP_ALIVE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve_app, _slow_app(0), port=0))
            port = int(url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                for _ in range(3):  # idle for almost the timeout: still open
                    assert (await _ask(stream)).startswith(b"HTTP/1.1 201")
                    await trio.sleep(KEEP_ALIVE_TIMEOUT - 1)
                assert (await _ask(stream)).startswith(b"HTTP/1.1 201")
                idle_from = trio.current_time()
                assert await stream.receive_some() == b""
                assert (
                    KEEP_ALIVE_TIMEOUT <= trio.current_time() - idle_from <= KEEP_ALIVE_TIMEOUT + 1
                )
            nursery.cancel_scope.cancel()


async def test_a_request_longer_than_the_keep_alive_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The keep-alive times idle connections only: a slow answer is not cut."""
    import functools

    from conjure_actors.service.app import KEEP_ALIVE_TIMEOUT, serve_app

    with trio.fail_after(10 * KEEP_ALIVE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            app = _slow_app(3 * KEEP_ALIVE_TIMEOUT)
            url = await nursery.start(functools.partial(serve_app, app, port=0))
            port = int(url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                assert (await _ask(stream)).startswith(b"HTTP/1.1 201")
            nursery.cancel_scope.cancel()


def _task_names() -> list[str]:
    """The names of every task of this run."""
    names: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return names


async def test_a_connection_the_client_ends_is_done_with_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client's end of the connection ends the server's at once: no task of it waits for
    a keep-alive timer that can no longer matter (hypercorn's kept it until it passed)."""
    import functools

    from conjure_actors.service.app import serve_app

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve_app, _slow_app(0), port=0))
            port = int(url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                assert (await _ask(stream)).startswith(b"HTTP/1.1 201")
                assert any("_run_handler" in name for name in _task_names())
                await stream.send_eof()
                with trio.fail_after(1):
                    assert await stream.receive_some() == b""
                await trio.testing.wait_all_tasks_blocked()
                assert not any("_run_handler" in name for name in _task_names())
            nursery.cancel_scope.cancel()


async def test_an_idle_connection_is_closed_as_the_server_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Shutting down closes an idle kept-alive connection at once."""
    import functools

    from conjure_actors.service.app import serve_app

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            url = await nursery.start(
                functools.partial(serve_app, _slow_app(0), port=0, shutdown=stop)
            )
            port = int(url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                assert (await _ask(stream)).startswith(b"HTTP/1.1 201")
                stop.set()
                with trio.fail_after(1):
                    assert await stream.receive_some() == b""
