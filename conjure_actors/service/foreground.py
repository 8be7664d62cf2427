"""HTTP requests are the runtime's foreground: :class:`ForegroundMiddleware` holds the actor
system's :class:`~conjure_actors.runtime.PriorityGate` from a request's start until its
response's first body bytes are sent, so the job actors (background work: see
``actors/conjure.py``) wait (bounded) at their next message instead of filling every scheduler
pass the request's awaits go through. A long-lived response (an SSE stream, a download) holds
it only until it starts. :func:`yielding_http` makes the job actors' HTTP calls wait too
(``open_service`` gives the runtime that client). Nothing a request awaits
is gated (the AssetActor, Conjure's submit, the journal's committer and the MachineActor are
not background work), so a request never waits on the gate.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conjure_actors.clients.cookieless import CookielessClient
from conjure_actors.runtime import PriorityGate, background_checkpoint

__all__ = ["ForegroundMiddleware", "yielding_http"]


class ForegroundMiddleware:
    """Pure ASGI: ``gate.enter()`` as an HTTP request arrives, ``gate.leave()`` as its
    response's first body bytes are sent (the first body message is handed to the server: the
    head alone would leave the client waiting, through more scheduler passes, for the rest),
    or as the app ends without one; never a schedule point of its own. While the app waits
    for the request's body the gate is left: that is waiting on the client (a slow or
    stalled upload), not work to put first."""

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

        answered = False
        body_done = False

        async def gated_receive() -> Message:
            # Waiting on the client (a slow or stalled upload) is not foreground work; a
            # receive once the body is in (a streaming response's disconnect listener) is
            # not waiting on the body: the gate stays held until the first body bytes.
            nonlocal held, body_done
            if held and not body_done:
                held = False
                gate.leave()
            message = await receive()
            if message["type"] == "http.request":
                if not message.get("more_body", False):
                    body_done = True
                if not answered and not held:
                    held = True
                    gate.enter()
            return message

        async def started_send(message: Message) -> None:
            nonlocal held, answered
            if message["type"] == "http.response.body":
                # Left as the first body bytes are handed over, not once they are written:
                # a client that does not read would otherwise hold the job actors back for
                # as long as it stalls (QA F8).
                answered = True
                if held:
                    held = False
                    gate.leave()
            await send(message)

        try:
            await self.app(scope, gated_receive, started_send)
        finally:
            if held:
                held = False
                gate.leave()


async def _background_turn(request: httpx.Request) -> None:
    """httpx request hook: in background work, wait for its turn at the gate first."""
    await background_checkpoint()


def yielding_http(http: Any) -> httpx.AsyncClient:
    """The HTTP client the runtime gets (``open_conjure``'s ``http``): in background work (a
    job actor and its helpers) each request, redirects included, first waits for its turn
    at the gate (:func:`background_checkpoint`, an httpx request hook); the clients'
    ``send_with_retry`` waits again once the answer is read and its connection and limiter
    token are given back (not in a response hook, which would hold both while parked: a
    foreground call could then wait on the pool), so a job's calls to ComfyUI, and its
    work between them, do not run while a request is in flight; any other caller (a
    request, the MachineActor) goes straight through.
    ``http``: a transport (tests), or None for httpx's own, which keeps the environment's
    proxy settings (``HTTPS_PROXY``, ``NO_PROXY``) as ``run`` does: hooks, not a wrapping
    transport, because httpx ignores the environment for a client given a transport. The
    client it makes keeps no cookies (:class:`CookielessClient`: ComfyUI and RunComfy use
    none, and httpx's jar costs each response ~28 µs). A ready client gets the hooks
    added. The caller closes the client it did not pass in."""
    if isinstance(http, httpx.AsyncClient):
        hooks = http.event_hooks
        if _background_turn not in hooks["request"]:
            hooks["request"] = [*hooks["request"], _background_turn]
            http.event_hooks = hooks
        return http
    return CookielessClient(
        transport=http,
        timeout=httpx.Timeout(60.0),
        event_hooks={"request": [_background_turn]},
    )
