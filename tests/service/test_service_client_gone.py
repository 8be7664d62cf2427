"""A client that leaves before its request body arrived (a half-sent submission or upload)
is no server error: no traceback on serve's stderr, no 500 in the metrics (QA's D3)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from extras_support import open_extras_service

from conjure_actors.service.app import serve_app

HALF_SENT = {
    "/api/v2/jobs": (b"application/json", b'{"workflow": {"1": '),
    "/api/v2/assets": (
        b"multipart/form-data; boundary=XyZ",
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG...",
    ),
}


async def _half_send(port: int, path: str) -> None:
    kind, part = HALF_SENT[path]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n".encode()
        + b"Content-Type: "
        + kind
        + b"\r\n\r\n"
    )
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(head + part)
        await trio.testing.wait_all_tasks_blocked()  # the server reads what came


@pytest.mark.parametrize("path", sorted(HALF_SENT))
async def test_a_client_that_leaves_mid_body_logs_no_error_and_counts_no_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A request whose client closed its connection mid-body: no ERROR record (hypercorn's
    "Error in ASGI Framework" traceback, "unexpected ClientDisconnect"), counted as 499."""
    ended = trio.Event()

    async with open_extras_service(tmp_path) as run:

        async def watched(scope: Any, receive: Any, send: Any) -> None:
            try:
                await run.app(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    ended.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(functools.partial(serve_app, watched, port=0))
                await _half_send(int(url.rsplit(":", 1)[1]), path)
                await ended.wait()
                await trio.testing.wait_all_tasks_blocked()  # hypercorn's handling of the end
                nursery.cancel_scope.cancel()
            metrics = (await run.client.get("/metrics")).text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    counted = [line for line in metrics.splitlines() if 'method="POST"' in line]
    assert counted, metrics
    assert not [line for line in counted if 'status="500"' in line], counted
    assert [line for line in counted if 'status="499"' in line], counted


async def test_an_unexpected_error_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A route that fails unexpectedly: its 500 and the handler's one line, not hypercorn's
    "Error in ASGI Framework" traceback after it (Starlette re-raises what it answered)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from conjure_actors.service.errors import EXCEPTION_HANDLERS

    async def boom(request: Any) -> Any:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/boom", boom)], exception_handlers=dict(EXCEPTION_HANDLERS))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve_app, app, port=0))
            async with await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1])) as s:
                await s.send_all(b"GET /boom HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := await s.receive_some():
                    answer += chunk
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 500")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["unexpected RuntimeError on GET /boom (answered 500 upstream_error)"]
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.INFO)
