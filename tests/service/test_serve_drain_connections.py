"""serve's stop (SIGTERM: the drain, then HTTP closes) loses no request a client sends on a
connection it kept alive (QA10 F9): an event stream ended by the stop, and every answer given
once the drain began, say ``Connection: close``, so the client's next request goes on a new
connection, answered or refused, never dropped unanswered ("Server disconnected without
sending a response": comfy-sdk's ``job.events()`` raised it at every deploy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import serve_args
from service_helpers import fast_cloud, in_thread, workflow

from conjure_actors.commands import serve
from conjure_actors.service.app import Settings

FOLLOW = "/api/conjure/events?metadata[app]=drain"  # open until serving stops


@asynccontextmanager
async def serving(config: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """``serve`` as its command builds it (the front end's routes too) on loopback."""
    args = serve_args()
    async with serve.open_serve(
        config,
        log_path=tmp_path / "serve.log",
        out_dir=tmp_path / "out",
        settings=Settings(),
        app_factory=lambda service: serve.build_app(service, args),
        cloud=fast_cloud,
    ) as served:
        yield served


def _follow_then_poll(url: str, opened: trio.Event, token: Any) -> dict[str, Any]:
    """As comfy-sdk's loop (sync httpx, one client): read the stream to its end, then at
    once GET on the same client; what the stream's head and the GET got."""
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("GET", FOLLOW) as stream:
            seen["stream"] = stream.headers.get("connection")
            trio.from_thread.run_sync(opened.set, trio_token=token)
            for _ in stream.iter_lines():
                pass
        try:
            seen["next"] = client.get("/api/v2/health").status_code
        except httpx.ConnectError:
            seen["next"] = "refused"
        except httpx.TransportError as exc:
            seen["next"] = f"{type(exc).__name__}: {exc}"
    return seen


@pytest.mark.slow
async def test_a_stream_ended_by_the_stop_closes_its_connection(
    sim_config: Any, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    opened = trio.Event()
    token = trio.lowlevel.current_trio_token()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, serving(sim_config, tmp_path) as served:

            async def client() -> None:
                seen.update(await in_thread(lambda: _follow_then_poll(served.url, opened, token)))

            nursery.start_soon(client)
            await opened.wait()
            serve._stop_accepting(served.service)
            await serve._drain(served.service)
            # leaving serving: the streams end, HTTP stops
    assert seen["next"] in (503, "refused"), seen["next"]  # answered or refused, not dropped
    assert seen["stream"] == "close"


@pytest.mark.slow
async def test_an_answer_given_during_the_drain_closes_its_connection(
    sim_config: Any, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with (
            serving(sim_config, tmp_path) as served,
            httpx.AsyncClient(base_url=served.url, timeout=10) as client,
        ):
            before = await client.get("/api/v2/health")
            assert before.status_code == 200
            assert before.headers.get("connection") != "close"  # kept alive
            serve._stop_accepting(served.service)
            during = await client.get("/api/v2/health")
            assert during.status_code == 503
            assert during.headers["connection"] == "close"
            refused = await client.post(
                "/api/v2/jobs", json={"workflow": workflow("slow_blur_chain.json")}
            )
            assert refused.status_code == 503
            assert refused.headers["connection"] == "close"
            served.stop_http.set()
            try:
                after = (await client.get("/api/v2/health")).status_code
            except httpx.ConnectError:
                after = "refused"
            assert after in (503, "refused")
