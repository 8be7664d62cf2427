"""Reading an SSE stream that may stay open (``GET /api/conjure/events?metadata[...]``)."""

from __future__ import annotations

from typing import Any

import trio
from extras_support import sse_frames, sse_scope


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

    with trio.fail_after(within):
        await app(sse_scope(path), receive, send)
    return sse_frames(sent)


def by_job(frames: list[tuple[float, str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """The frames of a many-jobs stream per job (``job_id``), in order."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for _, name, data in frames:
        out.setdefault(data["job_id"], []).append((name, data))
    return out
