"""Reading an SSE stream that may stay open (``GET /api/conjure/events?metadata[...]``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from extras_support import sse_frames, sse_scope


async def _drive(
    app: Any,
    scope: dict[str, Any],
    leave: trio.Event | None,
    opened: trio.Event | None,
    within: float,
) -> tuple[int, list[tuple[float, bytes]]]:
    """Drive ``app`` with one request until its answer ends or the client leaves: the
    status and ``(trio time, body)`` of each body message."""
    sent: list[tuple[float, bytes]] = []
    status: list[int] = []
    done = trio.Event()
    asked: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not asked:
            asked.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        async with trio.open_nursery() as nursery:

            async def until(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until, done)
            if leave is not None:
                nursery.start_soon(until, leave)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        if message["type"] == "http.response.body":
            sent.append((trio.current_time(), message.get("body", b"")))
            if opened is not None:
                opened.set()
            if not message.get("more_body", False):
                done.set()

    with trio.fail_after(within):
        await app(scope, receive, send)
    return status[0], sent


async def read_stream(
    app: Any,
    path: str,
    *,
    leave: trio.Event | None = None,
    opened: trio.Event | None = None,
    within: float = 3600,
) -> list[tuple[float, str, Any]]:
    """Drive ``app`` with one SSE request to ``path`` until the stream ends or the client
    leaves (``leave`` is set: the request's ``http.disconnect``); returns ``(trio time the
    frame was sent, event name, decoded data)`` per event (pings skipped). ``opened`` is set
    once the response started (its first frames are sent)."""
    _, sent = await _drive(app, sse_scope(path), leave, opened, within)
    return sse_frames(sent)


async def read_blocks(
    app: Any,
    path: str,
    *,
    last_event_id: str | bytes | None = None,
    leave: trio.Event | None = None,
    opened: trio.Event | None = None,
    within: float = 3600,
) -> tuple[int, list[dict[str, str]]]:
    """As :func:`read_stream`, with ``Last-Event-ID: last_event_id`` sent (an
    ``EventSource``'s reconnect): the status and the fields of every block (an ``id``- or
    ``retry``-only one too; comments, the pings, skipped)."""
    scope = sse_scope(path)
    if last_event_id is not None:
        value = last_event_id if isinstance(last_event_id, bytes) else last_event_id.encode()
        scope["headers"] = [*scope["headers"], (b"last-event-id", value)]
    status, sent = await _drive(app, scope, leave, opened, within)
    blocks: list[dict[str, str]] = []
    for _, chunk in sent:
        for block in chunk.decode().replace("\r\n", "\n").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            fields.pop("", None)  # a comment (": ping")
            if fields:
                blocks.append(fields)
    return status, blocks


def seq_of(sse_id: str) -> int:
    """The journal seq of a stream id (``SEQ-TAG``, ``service.resume``)."""
    return int(sse_id.partition("-")[0])


def ids_of(blocks: Sequence[dict[str, str]]) -> list[int]:
    """The seq of the ``id`` of every block, in order (each must have one)."""
    return [seq_of(block["id"]) for block in blocks]


def events_of(blocks: Sequence[dict[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, decoded data)`` of the blocks that are events."""
    import json

    return [(b["event"], json.loads(b["data"])) for b in blocks if "event" in b]


def by_job(frames: list[tuple[float, str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """The frames of a many-jobs stream per job (``job_id``), in order."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for _, name, data in frames:
        out.setdefault(data["job_id"], []).append((name, data))
    return out
