"""An API or a ComfyUI that cannot be reached is said in words, with a next step: never an
exception's class name ("cannot connect (ConnectError)"), never the API token, the user id
(in the API's path) or a query the base URL carries."""

from __future__ import annotations

import random
import socket

import httpx
import pytest

from conjure_actors.clients.errors import OutcomeUnknownError, TransportError
from conjure_actors.clients.retry import RetryPolicy, send_with_retry
from conjure_actors.clients.runcomfy import RunComfyClient

USER = "u-unreachable-42"
TOKEN = "tok-unreachable-SECRET"


def _refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("all attempts to connect to 10.9.8.7:443 failed", request=request)


def _unresolvable(request: httpx.Request) -> httpx.Response:
    try:
        raise socket.gaierror(-2, "Name or service not known")
    except socket.gaierror as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc


async def _list_servers_error(handler: object, base: str) -> str:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:  # type: ignore[arg-type]
        client = RunComfyClient(base, USER, TOKEN, http=http, rng=random.Random(1))
        with pytest.raises(TransportError) as info:
            await client.list_servers()
    return str(info.value)


async def test_runcomfy_that_refuses_says_where_and_what_to_check(autojump_clock: object) -> None:
    """The API's scheme, host and port (no path: the user id; no query), then what to check."""
    message = await _list_servers_error(_refusing, "https://api.example.test:8443/base?sig=abc")
    assert message == (
        "RunComfy list servers failed after 5 attempts: cannot connect to"
        " https://api.example.test:8443: check the network, and RUNCOMFY_API_BASE_URL"
        " (runcomfy.base_url)"
    )


async def test_runcomfy_whose_host_does_not_resolve_says_so(autojump_clock: object) -> None:
    """A host name that does not resolve is said so, with no class name, token or user id."""
    message = await _list_servers_error(_unresolvable, "https://api.example.test")
    assert "cannot connect to https://api.example.test (the host name does not resolve)" in message
    assert "Error" not in message  # no exception class name
    for secret in (TOKEN, USER):
        assert secret not in message


async def test_runcomfy_that_loses_the_connection_names_no_exception_class(
    autojump_clock: object,
) -> None:
    """A connection lost is said in words, with what to do (not a class name)."""

    def lost(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    message = await _list_servers_error(lost, "https://api.example.test")
    assert message == (
        "RunComfy list servers failed after 5 attempts: connection lost (Server disconnected"
        " without sending a response.): RunComfy may be down or slow; try again later"
    )


async def test_a_comfyui_post_whose_connection_is_lost_says_so_once(autojump_clock: object) -> None:
    """It said "connection lost before an answer (ReadError: ...)": a class name, and
    "connection lost" would have come twice in the new words."""

    async def attempt() -> httpx.Response:
        raise httpx.ReadError("peer reset")

    with pytest.raises(OutcomeUnknownError) as info:
        await send_with_retry(
            attempt,
            policy=RetryPolicy(),
            rng=random.Random(1),
            what="POST /prompt on machine s1",
            idempotent=False,
        )
    assert str(info.value) == (
        "POST /prompt on machine s1: sent, but connection lost (peer reset); look the request"
        " up before sending it again"
    )


async def test_a_comfyui_that_refuses_names_no_exception_class(autojump_clock: object) -> None:
    """ComfyUI's connect failure: no class name, and no host (a machine's URL is secret)."""

    async def attempt() -> httpx.Response:
        raise httpx.ConnectError("all attempts to connect to 10.9.8.7:8188 failed")

    with pytest.raises(TransportError) as info:
        await send_with_retry(
            attempt, policy=RetryPolicy(), rng=random.Random(1), what="GET /x on machine s1"
        )
    assert str(info.value) == "GET /x on machine s1 failed after 5 attempts: cannot connect"
    # (the machine's host is its secret URL's: not said)
    assert "10.9.8.7" not in str(info.value)
