"""The v2 error envelope of Starlette's own refusals (``service/errors.py``), on a small app
with the service's exception handlers."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conjure_actors.service.errors import EXCEPTION_HANDLERS


def _form_app() -> Starlette:
    async def fields(request: Request) -> Response:
        async with request.form() as form:
            return JSONResponse({"fields": sorted(form)})

    return Starlette(
        routes=[Route("/form", fields, methods=["POST"])],
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )


class _Unread(httpx.AsyncByteStream):
    """A request body in one chunk whose iterator is not an async generator: httpx's
    own are, and one the app left unread (a refusal) is collected with a ResourceWarning."""

    def __init__(self, data: bytes) -> None:
        self._chunks = [data]

    def __aiter__(self) -> _Unread:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop()


async def _post_multipart(
    client: httpx.AsyncClient, path: str, data: dict[str, str], files: dict[str, Any]
) -> httpx.Response:
    built = httpx.Request("POST", "http://body.invalid/", data=data, files=files)  # the body
    body = built.read()
    headers = {"Content-Type": built.headers["content-type"], "Content-Length": str(len(body))}
    request = client.build_request("POST", path, headers=headers)
    request.stream = _Unread(body)
    return await client.send(request)


async def _post_form(data: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_form_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await _post_multipart(client, "/form", data, {"f": ("f.bin", b"x")})


async def test_a_text_form_field_over_starlette_s_limit_is_413_payload_too_large() -> None:
    """A multipart text field over 1 MB: 413 payload_too_large naming the limit (was 400
    invalid_request "Part exceeded maximum size of 1024KB.")."""
    answer = await _post_form({"prompt": "x" * (1024 * 1024 + 1)})
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == {
        "code": "payload_too_large",
        "message": "a text form field is larger than 1024 KB: shorten it",
        "details": {"limit_bytes": 1024 * 1024},
    }


async def test_a_text_form_field_within_the_limit_is_read() -> None:
    """A text field of exactly 1 MB is read as usual."""
    answer = await _post_form({"prompt": "x" * (1024 * 1024)})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"fields": ["f", "prompt"]}
