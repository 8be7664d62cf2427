"""Reading an SSE stream that may stay open (``GET /api/conjure/events?metadata[...]``)."""

from __future__ import annotations

import json
from typing import Any

import trio


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
    sent: list[tuple[float, bytes]] = []
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
        if message["type"] == "http.response.body":
            sent.append((trio.current_time(), message.get("body", b"")))
            if opened is not None:
                opened.set()
            if not message.get("more_body", False):
                done.set()

    path, _, query = path.partition("?")
    scope = {
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
    with trio.fail_after(within):
        await app(scope, receive, send)
    out: list[tuple[float, str, Any]] = []
    for at, chunk in sent:
        for block in chunk.decode().replace("\r\n", "\n").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                out.append((at, fields["event"], json.loads(fields.get("data", "null"))))
    return out


def by_job(frames: list[tuple[float, str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """The frames of a many-jobs stream per job (``job_id``), in order."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for _, name, data in frames:
        out.setdefault(data["job_id"], []).append((name, data))
    return out
