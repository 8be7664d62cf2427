"""The v2 error envelope of Starlette's own refusals (``service/errors.py``), on a small app
with the service's exception handlers."""

from __future__ import annotations

import httpx
from multipart_support import post_multipart
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


async def _post_form(data: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_form_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await post_multipart(client, "/form", data, {"f": ("f.bin", b"x")})


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
