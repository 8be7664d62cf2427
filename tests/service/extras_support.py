"""A job service on the embedded simulated cloud, in memory, for the extras' tests.

``open_extras_service`` yields the :class:`~conjure_actors.service.app.Service`, the ASGI app
``serve`` would run (with the extras, metrics and security wired as ``build_app`` wires them)
and an httpx client over it (httpx's ASGI transport: no socket).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.commands.serve import build_app
from conjure_actors.config import Config, Secret
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.service.app import Service, Settings, open_service
from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.timings import ComfyTimings

SIM_VERSION = "wv-conjure-flux-mesh-1"


def serve_args(**overrides: Any) -> argparse.Namespace:
    """The ``serve`` flags ``build_app`` reads, with their defaults."""
    from conjure_actors.cli import build_parser

    args = build_parser("serve").parse_args(["serve"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@attrs.define
class Running:
    service: Any
    app: Any
    client: httpx.AsyncClient
    cloud: Any
    wall: TrioWallClock


@asynccontextmanager
async def open_extras_service(
    tmp_path: Path,
    *,
    log: Any = None,
    settings: Settings | None = None,
    config: Config | None = None,
    wrap_http: Any = None,
    comfy: ComfyTimings | None = None,
    catalog: Any = None,
    hold_resumed: Any = None,
    hold_full_disk: float | None = None,
    ready_delay: float = 1.0,
    attached: bool = False,
    poll_interval: float = 0.2,
    wall: TrioWallClock | None = None,
    **flags: Any,
) -> AsyncIterator[Running]:
    """The service on a simulated cloud (wall time follows trio's clock: use autojump).
    ``wrap_http``: ``transport -> transport`` around the cloud's (to record requests);
    ``comfy``: the simulated nodes' timings; ``catalog``: the node catalogue submissions
    are checked against (default: the simulator's); ``hold_resumed``: open_conjure's;
    ``hold_full_disk``: the journal's (``serve --disk-full-patience``); ``ready_delay``: the
    seconds a simulated machine boots; ``attached``: ``--comfyui-url`` mode, on the
    simulated cloud's standalone ComfyUI; ``poll_interval``: the pool's; ``wall``: the
    wall clock (one passed to each service of a restart goes on, not back to its epoch)."""
    wall = wall if wall is not None else TrioWallClock()
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=ready_delay, deleting_delay=0.5),
        comfyui=comfy or ComfyTimings(),
    )
    log = log if log is not None else eventlog.MemoryLog(Event)
    async with open_simulated_cloud(seed=7, wall=wall.now, timings=timings) as cloud:
        base = config or Config()
        config = attrs.evolve(
            base,
            runcomfy=attrs.evolve(
                base.runcomfy,
                user_id=cloud.user_id,
                api_token=Secret(cloud.token),
                base_url=cloud.base_url,
                workflow_version=SIM_VERSION,
            ),
            pool=attrs.evolve(base.pool, poll_interval=poll_interval),
        )
        if attached:
            config = attrs.evolve(config, comfyui_url=cloud.standalone_comfyui()[0])
        async with (
            eventlog.open_journal(
                log,
                Event,
                apply=apply,
                initial=initial_state(),
                clock=wall.now,
                hold_full_disk=hold_full_disk,
            ) as journal,
            open_service(
                config,
                journal=journal,
                data_dir=tmp_path / "blobs",
                settings=settings,
                catalog=catalog,
                history=log.records if isinstance(log, eventlog.MemoryLog) else None,
                http=wrap_http(cloud.http_transport()) if wrap_http else cloud.http_transport(),
                ws_connect=cloud.ws_connect,
                wall=wall,
                out_dir=tmp_path / "out",
                mode="comfyui" if attached else "simulated",
                seed=3,
                hold_resumed=hold_resumed,
            ) as service,
            trio.open_nursery() as nursery,
        ):
            app = build_app(service, serve_args(**flags))
            nursery.start_soon(app.state.metrics.watch_journal, service.journal)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8189"
            ) as client:
                yield Running(service, app, client, cloud, wall)
            nursery.cancel_scope.cancel()


async def wait_idle(service: Any, within: float = 900) -> None:
    """Wait (on trio's clock) until every job is terminal."""
    with trio.fail_after(within):
        await service.conjure.wait_until_idle()


async def wait_for(service: Any, predicate: Any, within: float = 900) -> None:
    """Wait (on trio's clock) until ``predicate(state)`` holds, re-checked on each event."""
    import math

    with trio.fail_after(within):
        async with service.journal.subscribe(max_buffer=math.inf) as records:
            while not predicate(service.state):
                await records.receive()


def png() -> bytes:
    """A small valid PNG (the example sketch)."""
    from conjure_actors.actors.example import example_sketch_png

    return example_sketch_png()


async def sse_events(app: Any, path: str, within: float = 900) -> list[tuple[float, str, Any]]:
    """Drive ``app`` with one SSE request to ``path`` until the stream ends; returns
    ``(trio time the frame was sent, event name, decoded data)`` per event (pings skipped).
    ``path`` may carry a query (a signed ``urls.events``); no Authorization is sent, as
    an ``EventSource`` sends none. httpx's ASGI transport hands the body over only once
    it is complete: this keeps when each frame left."""

    sent: list[tuple[float, bytes]] = []
    done = trio.Event()
    asked: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not asked:
            asked.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append((trio.current_time(), message.get("body", b"")))
            if not message.get("more_body", False):
                done.set()

    with trio.fail_after(within):
        await app(sse_scope(path), receive, send)
    return sse_frames(sent)


def sse_scope(path: str) -> dict[str, Any]:
    """The ASGI scope of a browser's ``EventSource`` GET of ``path`` (a query allowed)."""
    path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8189"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8189),
        "state": {},
    }


def sse_frames(sent: list[tuple[float, bytes]]) -> list[tuple[float, str, Any]]:
    """``(when sent, event name, decoded data)`` of each SSE frame in the bodies ``sent``
    (pings and comments skipped)."""
    import json

    out: list[tuple[float, str, Any]] = []
    for at, chunk in sent:
        for block in chunk.decode().replace("\r\n", "\n").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                out.append((at, fields["event"], json.loads(fields.get("data", "null"))))
    return out


def hold_submissions(service: Service) -> trio.Event:
    """Hold every submission's append until the returned event is set (a stalled disk)."""
    release = trio.Event()
    journal: Any = service.journal
    append_many = journal.append_many

    async def held(events: Any) -> Any:
        events = list(events)
        if any(isinstance(e, se.ApiJobAccepted) for e in events):
            await release.wait()
        return await append_many(events)

    journal.append_many = held
    return release
