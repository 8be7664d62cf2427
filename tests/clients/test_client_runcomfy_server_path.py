"""A server id is one segment of the URL path, quoted: an id from a command line
(``machine down --server-id``) cannot reach another route of the account (QA11 F4: ``a/b``
was a 405, ``../servers`` and "" GETs of the account's list, one DELETE away from it)."""

from __future__ import annotations

import random

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients.errors import RunComfyError, ServerNotFoundError
from conjure_actors.clients.runcomfy import RunComfyClient
from tests.clients.test_client_runcomfy import BASE, TOKEN, USER


@pytest.mark.parametrize(
    ("server_id", "segment"),
    [("a/b", b"a%2Fb"), ("x?y", b"x%3Fy"), ("x#y", b"x%23y"), ("a b", b"a%20b"), ("..x", b"..x")],
)
async def test_an_id_is_one_quoted_segment(
    autojump_clock: trio.testing.MockClock, server_id: str, segment: bytes
) -> None:
    """The DELETE goes to ``/servers/<the id, quoted>``, nothing else: RunComfy's 404 is
    then "not found", not another route's answer."""
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.method.encode() + b" " + request.url.raw_path)
        return httpx.Response(404, json={"message": "not found"}, request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = RunComfyClient(BASE, USER, TOKEN, http=http, rng=random.Random(1))
        with trio.fail_after(60), pytest.raises(ServerNotFoundError):
            await client.stop(server_id)
    assert seen
    assert all(line.endswith(b"/servers/" + segment) for line in seen), seen
    assert all(line.startswith(b"DELETE ") for line in seen), seen


@pytest.mark.parametrize("server_id", ["", ".", ".."])
async def test_an_id_that_is_no_segment_is_refused_before_any_request(
    autojump_clock: trio.testing.MockClock, server_id: str
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[], request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = RunComfyClient(BASE, USER, TOKEN, http=http, rng=random.Random(1))
        for call in (client.status, client.stop):
            with pytest.raises(RunComfyError, match="not a RunComfy server id"):
                await call(server_id)
        with pytest.raises(RunComfyError, match="not a RunComfy server id"):
            await client.extend(server_id, 60)
    assert seen == []
