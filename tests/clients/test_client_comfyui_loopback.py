"""The ComfyUI client against the simulator served by hypercorn on loopback (real sockets)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio

from conjure_actors.clients import (
    ComfyUIClient,
    ComfyUIEvents,
    FollowUpdate,
    PreviewImage,
    PromptSucceeded,
    RetryPolicy,
    new_prompt_id,
)
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings, ComfyUISim
from conjure_actors.sim.media import write_png

pytestmark = pytest.mark.slow

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


@attrs.define
class Loopback:
    sim: ComfyUISim
    client: ComfyUIClient
    events: ComfyUIEvents
    url: str


@asynccontextmanager
async def serve_sim(
    faults: ComfyFaults | None = None, keepalive: float = 1.0
) -> AsyncIterator[Loopback]:
    """The simulator on 127.0.0.1:<free port>, a real httpx client and real WebSockets."""
    sim = ComfyUISim(faults=faults, timings=ComfyTimings(scale=0.02))
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        binds = await nursery.start(hypercorn.trio.serve, sim.asgi, config)
        url = binds[0]
        async with httpx.AsyncClient(timeout=10) as http:
            client = ComfyUIClient(
                url,
                http=http,
                policy=RetryPolicy(attempts=6, base_delay=0.01, request_timeout=5),
                rng=random.Random(0),
            )
            events = client.events(keepalive=keepalive)
            await nursery.start(events.run)
            yield Loopback(sim, client, events, url)
            nursery.cancel_scope.cancel()


async def run_job(
    lb: Loopback, graph: dict[str, Any], poll_interval: float = 0.2
) -> list[FollowUpdate]:
    pid = new_prompt_id()
    await lb.client.submit(graph, pid, lb.events.client_id)
    follow = lb.client.follow(pid, events=lb.events, poll_interval=poll_interval)
    async with aclosing(follow) as stream:
        return [update async for update in stream]


async def test_conjure_job_over_loopback() -> None:
    """Upload, submit, follow over a real WebSocket, download the PNG and GLB."""
    with trio.fail_after(30):
        async with serve_sim() as lb:
            assert lb.events.connected
            graph = workflow("conjure_flux_mesh")
            uploaded = await lb.client.upload_image(write_png(16, 16, b"x"), "in.png")
            graph["16"]["inputs"]["image"] = uploaded.reference
            updates = await run_job(lb, graph)
            final = updates[-1]
            assert isinstance(final, PromptSucceeded)
            for output in final.outputs:
                download = await lb.client.download(output)
                assert download.data == lb.sim.produced[output.path]


async def test_keepalive_pings_leave_the_global_random_state_alone() -> None:
    """The WebSocket keep-alive's pings do not draw from the global ``random`` (trio-websocket
    does for a ping without payload): a hypothesis test drawing in a worker thread while the
    service pings took that for randomness in its strategy (fuzz of test_schemathesis:
    HypothesisDeprecationWarning, then FlakyFailure)."""
    with trio.fail_after(30):
        async with serve_sim(keepalive=0.02) as lb:
            assert lb.events.connected
            before = random.getstate()
            await trio.sleep(0.3)  # ~15 pings, each answered
            assert lb.events.connected
            assert random.getstate() == before


async def test_frame_over_one_mib_over_loopback() -> None:
    """A ~3 MB binary frame arrives whole over a real socket (64 MiB limit, not 1 MiB)."""
    with trio.fail_after(30):
        async with serve_sim() as lb:
            # Poll late: the frames, not a lucky early poll, must finish this job.
            updates = await run_job(lb, workflow("ws_big_frame"), poll_interval=20)
            previews = [u for u in updates if isinstance(u, PreviewImage)]
            assert len(previews[0].data) > 1024 * 1024
            assert lb.events.generation == 1


async def test_truncated_download_over_loopback_is_retried() -> None:
    """A /view body cut short on the wire is retried until it verifies."""
    with trio.fail_after(30):
        async with serve_sim(ComfyFaults(truncated_download_rate=0.5)) as lb:
            updates = await run_job(lb, workflow("invert_save"))
            final = updates[-1]
            assert isinstance(final, PromptSucceeded)
            download = await lb.client.download(final.outputs[0])
            assert download.data == lb.sim.produced[final.outputs[0].path]


async def test_dropped_sockets_over_loopback_reconnect() -> None:
    """The server drops each socket after 8 frames: the client reconnects and finishes."""
    with trio.fail_after(30):
        async with serve_sim(ComfyFaults(ws_drop_after=8)) as lb:
            first = lb.events.client_id
            updates = await run_job(lb, workflow("invert_save"))
            assert isinstance(updates[-1], PromptSucceeded)
            assert lb.events.client_id != first
