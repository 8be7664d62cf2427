"""A ComfyUI a reverse proxy serves under a path (``https://host/comfy``): every route, the
WebSocket and ``/view`` are joined under that path, and a whole job runs through it."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import trio

from conjure_actors.clients.comfyui import (
    ComfyUIClient,
    PromptSucceeded,
    base_path,
    probe_problem,
)
from conjure_actors.clients.errors import ComfyUIError, ComfyUIResponseError, TransportError
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyUISim
from tests.clients.test_client_comfyui import BASE, Env, conjure_graph, run_job

PREFIX = "/comfy"

App = Callable[..., Awaitable[None]]


def under_prefix(app: App, seen: list[str]) -> App:
    """A reverse proxy: serves ``app`` under PREFIX (404 elsewhere), recording the paths."""

    async def proxy(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        path: str = scope.get("path", "")
        seen.append(path)
        if scope["type"] == "http" and not path.startswith(PREFIX + "/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not here"})
            return
        scope = {**scope, "path": path[len(PREFIX) :], "raw_path": None}
        await app(scope, receive, send)

    return proxy


async def test_a_job_runs_on_a_comfyui_under_a_path_prefix(autojump_clock: trio.abc.Clock) -> None:
    """Upload, submit, follow over the socket and download, all under ``/comfy``."""
    seen: list[str] = []
    sockets: list[str] = []
    sim = ComfyUISim(seed=0, wall=TrioWallClock().now)

    def ws_connect(url: str) -> AbstractAsyncContextManager[Any]:
        sockets.append(url)
        return sim.open_ws_in_memory(url.replace(PREFIX + "/ws", "/ws", 1))

    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=under_prefix(sim.asgi, seen))
        async with httpx.AsyncClient(transport=transport) as http:
            client = ComfyUIClient(
                BASE + PREFIX, http=http, ws_connect=ws_connect, rng=random.Random(0)
            )
            events = client.events()
            await nursery.start(events.run)
            env = Env(sim, client, events, nursery)
            assert (await client.system_stats())["system"]
            _, updates = await run_job(env, await conjure_graph(env))
            final = updates[-1]
            assert isinstance(final, PromptSucceeded)
            for output in final.outputs:
                download = await client.download(output)
                assert download.sha256 == hashlib.sha256(sim.produced[output.path]).hexdigest()
            nursery.cancel_scope.cancel()
    assert seen
    assert all(path.startswith(PREFIX + "/") for path in seen), seen
    assert sockets
    assert all(f"{PREFIX}/ws?" in url for url in sockets), sockets


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("http://h:1", ""),
        ("http://h:1/", ""),
        ("https://h/comfy/", "/comfy"),
        ("http://h/a/b", "/a/b"),
    ],
)
def test_base_path_is_the_prefix_routes_go_under(url: str, prefix: str) -> None:
    """The path a probe's message names is the one the client requests under."""
    assert base_path(url) == prefix


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (ComfyUIError("GET /system_stats answered HTTP 404", status=404), "HTTP 404"),
        (TransportError("connect failed"), "no connection"),
        (ComfyUIResponseError("html", status=200), "not a ComfyUI's"),
    ],
)
def test_a_failed_probe_is_said_in_words(exc: Exception, says: str) -> None:
    """The status or the failure in words, never an exception class name."""
    text = probe_problem(exc)
    assert says in text
    assert "Error" not in text
