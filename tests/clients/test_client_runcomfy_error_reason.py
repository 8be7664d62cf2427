"""An error answer of RunComfy is said by its short reason (its JSON ``message``), not its
raw JSON body (QA F9: serve's terminal showed ``{"error":"internal_error","message":...}``
on each retry of a stop)."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import RunComfyError
from conjure_actors.clients.runcomfy import RunComfyClient
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER

BODY = {"error": "internal_error", "message": "the service is temporarily unavailable"}


async def test_a_5xx_error_says_its_message_not_its_json_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every attempt answered 502 with a JSON body: the error names the HTTP code and the
    body's message, once, and no JSON."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=json.dumps(BODY).encode(), request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = RunComfyClient(BASE, USER, TOKEN, http=http, rng=random.Random(1))
        with trio.fail_after(3600), pytest.raises(RunComfyError) as caught:
            await client.list_servers()
    text = str(caught.value)
    assert text.endswith("answered HTTP 502: the service is temporarily unavailable"), text
    assert "{" not in text
    assert "internal_error" not in text
