"""``serve_app`` on a real socket (127.0.0.1): what reaches the terminal besides answers."""

from __future__ import annotations

import functools
import logging

import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conjure_actors.service.app import serve_app
from conjure_actors.service.errors import EXCEPTION_HANDLERS


def _form_app() -> Starlette:
    async def fields(request: Request) -> JSONResponse:
        async with request.form() as form:
            return JSONResponse({"fields": sorted(form)})

    return Starlette(
        routes=[Route("/form", fields, methods=["POST"])],
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )


GARBAGE = (
    b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n"
    b"Content-Length: 7\r\nConnection: close\r\n\r\ngarbage"
)


class _Recorder(logging.Handler):
    """A handler on the root logger: what a terminal's handler (or Python's last resort)
    would be handed. Not caplog's: pytest also attaches that to non-propagating loggers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelno, record.getMessage()))


async def test_the_multipart_parser_s_log_line_goes_to_debug_not_the_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A malformed multipart body: python-multipart's WARNING ("Expected boundary
    character ...") reaches no handler of the root logger (it was printed on serve's
    stderr); the service's logger has it at DEBUG, for --debug."""
    caplog.set_level(logging.DEBUG, logger="conjure_actors.service")
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    answer = b""
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(functools.partial(serve_app, _form_app(), port=0))
                port = int(url.rsplit(":", 1)[1])
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(GARBAGE)
                    while chunk := await stream.receive_some():
                        answer += chunk
                nursery.cancel_scope.cancel()
    finally:
        logging.getLogger().removeHandler(recorder)
    assert answer.startswith(b"HTTP/1.1 400")
    seen = recorder.seen
    assert not [s for s in seen if s[0].startswith("python_multipart")], seen
    assert any(
        name == "conjure_actors.service" and level == logging.DEBUG and "boundary" in text
        for name, level, text in seen
    ), seen
