"""CookielessClient: an httpx client that keeps no cookie (ComfyUI and RunComfy use none)."""

from __future__ import annotations

import httpx
import pytest

from conjure_actors.clients.cookieless import CookielessClient


async def test_a_set_cookie_answer_is_never_sent_back() -> None:
    sent: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, headers=[("set-cookie", "session=abc; Path=/")])

    async with CookielessClient(transport=httpx.MockTransport(answer)) as client:
        await client.get("http://comfy.invalid/queue")
        await client.get("http://comfy.invalid/queue")
        assert not client.cookies
    assert sent == [None, None]


def test_cookies_given_to_a_cookieless_client_are_refused() -> None:
    with pytest.raises(ValueError, match="no cookies"):
        CookielessClient(cookies={"session": "abc"})


async def test_a_cookieless_client_keeps_its_other_settings() -> None:
    async with CookielessClient(timeout=7.0) as client:
        assert client.timeout == httpx.Timeout(7.0)
        assert client.trust_env  # the environment's proxies, as httpx's own client


async def test_a_cookie_put_into_the_jar_by_update_is_not_sent() -> None:
    """``client.cookies.update(...)`` keeps nothing either: no Cookie header goes out."""
    sent: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200)

    async with CookielessClient(transport=httpx.MockTransport(answer)) as client:
        client.cookies.update({"session": "abc"})
        await client.get("http://comfy.invalid/queue")
    assert sent == [None]
