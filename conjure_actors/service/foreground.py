"""HTTP requests are the runtime's foreground: :class:`ForegroundMiddleware` holds the actor
system's :class:`~conjure_actors.runtime.PriorityGate` from a request's start until its
response's first body bytes are sent, so the job actors (background work: see
``actors/conjure.py``) wait (bounded) at their next message instead of filling every scheduler
pass the request's awaits go through. A long-lived response (an SSE stream, a download) holds
it only until it starts. :class:`BackgroundYieldTransport` makes the job actors' HTTP calls
wait too (``open_service`` wraps the runtime's transport with it). Nothing a request awaits
is gated (the AssetActor, Conjure's submit, the journal's committer and the MachineActor are
not background work), so a request never waits on the gate.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conjure_actors.runtime import PriorityGate, background_checkpoint

__all__ = ["BackgroundYieldTransport", "ForegroundMiddleware", "yielding_http"]


class ForegroundMiddleware:
    """Pure ASGI: ``gate.enter()`` as an HTTP request arrives, ``gate.leave()`` once its
    response's first bytes are sent (the first body message is handed to the server: the
    head alone would leave the client waiting, through more scheduler passes, for the rest),
    or as the app ends without one; never a schedule point of its own."""

    def __init__(self, app: ASGIApp, *, gate: PriorityGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate = self.gate
        gate.enter()
        held = True

        async def started_send(message: Message) -> None:
            nonlocal held
            await send(message)
            if held and message["type"] == "http.response.body":
                held = False
                gate.leave()

        try:
            await self.app(scope, receive, started_send)
        finally:
            if held:
                held = False
                gate.leave()


class BackgroundYieldTransport(httpx.AsyncBaseTransport):
    """An httpx transport that, in background work (a job actor and its helpers), waits for
    its turn at the gate before each request (:func:`background_checkpoint`): a job's calls
    to ComfyUI (submit, history, downloads) do not run while a request is in flight. Any
    other caller (a request, the MachineActor) goes straight through."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await background_checkpoint()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def yielding_http(http: Any) -> Any:
    """The ``http`` the runtime gets (``open_conjure``'s): a transport, or None for httpx's
    default, wrapped in :class:`BackgroundYieldTransport`; a ready client as it is."""
    if isinstance(http, httpx.AsyncClient):
        return http
    return BackgroundYieldTransport(http if http is not None else httpx.AsyncHTTPTransport())
