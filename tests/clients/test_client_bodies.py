"""Bounded answers: a JSON answer that never ends is refused at the cap; excerpts are safe."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients import ComfyUIClient, RetryPolicy
from conjure_actors.clients.bodies import excerpt
from conjure_actors.clients.comfyui import MAX_ANSWER_BYTES
from conjure_actors.clients.errors import ComfyUIResponseError, RunComfyResponseError
from conjure_actors.clients.runcomfy import RunComfyClient, RunComfyPolicy

SECRET_BASE = "https://m-77aa.secret.invalid:8443"


class Endless(httpx.AsyncByteStream):
    """``[`` then commas forever: a JSON answer that never ends."""

    def __init__(self) -> None:
        self._gen = self._generate()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _generate(self) -> AsyncGenerator[bytes, None]:
        yield b"["
        while True:
            await trio.lowlevel.checkpoint()
            yield b"0," * 32768


def endless(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=Endless())


async def test_an_endless_json_answer_is_refused_at_the_cap() -> None:
    """GET /queue answering forever: ComfyUIResponseError once the cap is passed, and the
    memory held stays within the cap."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(endless)) as http:
        client = ComfyUIClient(SECRET_BASE, http=http, redact="server s-1")
        tracemalloc.start()
        try:
            with trio.fail_after(60), pytest.raises(ComfyUIResponseError, match="more than"):
                await client.queue()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1.5 * MAX_ANSWER_BYTES, peak


async def test_an_endless_runcomfy_answer_is_refused_at_the_cap() -> None:
    """GET /servers answering forever: RunComfyResponseError, not read on."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(endless)) as http:
        client = RunComfyClient(
            "https://api.invalid",
            "u",
            "tok",
            http=http,
            policy=RunComfyPolicy(retry=RetryPolicy(attempts=1)),
            rng=random.Random(0),
        )
        with trio.fail_after(60), pytest.raises(RunComfyResponseError, match="more than"):
            await client.list_servers()


async def test_a_non_json_answer_is_a_typed_error_with_a_scrubbed_excerpt() -> None:
    """/history answering an HTML page that names the machine: the error quotes it without
    the URL or host."""
    page = f"<html>proxy error for {SECRET_BASE}/history and m-77aa.secret.invalid</html>"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=page)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ComfyUIClient(SECRET_BASE, http=http, redact="server s-1")
        with pytest.raises(ComfyUIResponseError) as info:
            await client.history("p-1")
    message = str(info.value)
    assert "proxy error" in message
    assert "m-77aa" not in message


def test_excerpt_is_short_printable_one_line_and_without_urls() -> None:
    """excerpt: URLs become <url>, controls become '?', one line, cut at the limit."""
    text = excerpt(b"a\x00b\n\tc https://x.invalid/p?q=1 " + b"z" * 500, limit=40)
    assert text.startswith("a?b c <url> zz")
    assert text.endswith("...")
    assert len(text) == 43
    assert excerpt(b"") == "(empty body)"
