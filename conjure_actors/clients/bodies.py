"""Reading HTTP answers with a bound, and quoting them safely in an error message.

:func:`send_capped` sends a request and reads its answer's body up to a limit: a server that
answers a body that never ends (or a huge one) costs at most the limit in memory, and the
caller's ``too_large`` error is raised instead of reading on. :func:`excerpt` gives a short,
one-line, printable piece of a body for an error message, with every URL taken out (a
RunComfy machine's URL is a secret; the caller scrubs its own host names too).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import httpx
import trio

__all__ = ["abandon", "excerpt", "send_capped"]

_URL_RE: Final = re.compile(r"(?:https?|wss?)://[^\s\"'<>]+", re.IGNORECASE)
_ABANDON_CHUNKS: Final = 1024
# Headers that describe the body on the wire, not the bytes we hand on.
_WIRE_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})


async def abandon(chunks: AsyncIterator[bytes]) -> None:
    """Stop reading an httpx body early without leaving its generators suspended.

    ``aiter_bytes`` is a chain of nested async generators (httpx, then httpcore); closing
    the outer one leaves the inner ones suspended until garbage collection, which trio
    reports as a ResourceWarning. Resumed under a cancelled scope, the chain raises
    ``Cancelled`` at its next read, and that exception unwinds (so finishes) every one of
    them; httpcore then drops the connection. A stream that keeps yielding without a
    checkpoint is left to ``Response.aclose`` after a bounded number of chunks.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        with contextlib.suppress(StopAsyncIteration, httpx.RequestError):
            for _ in range(_ABANDON_CHUNKS):
                await anext(chunks)


async def send_capped(
    http: httpx.AsyncClient,
    method: str,
    url: httpx.URL | str,
    *,
    limit: int,
    too_large: Callable[[], Exception],
    **kwargs: Any,
) -> httpx.Response:
    """``http.request(method, url, **kwargs)`` with its body read up to ``limit`` bytes.

    Returns a response whose ``content`` is the (decoded) body; raises ``too_large()`` as
    soon as the body goes over the limit. httpx's own errors propagate unchanged.
    """
    request = http.build_request(method, url, **kwargs)
    response = await http.send(request, stream=True)
    try:
        # The common case: a plain body whose length is declared and within the limit
        # (the HTTP/1.1 parser never reads past Content-Length) is read as it is.
        declared = response.headers.get("content-length", "")
        identity = response.headers.get("content-encoding", "identity") == "identity"
        if identity and declared.isdecimal() and int(declared) <= limit:
            await response.aread()
            return response
        parts: list[bytes] = []
        size = 0
        chunks = response.aiter_bytes()
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                await abandon(chunks)
                raise too_large()
            parts.append(chunk)
    finally:
        # A body read to its end is closed already (httpx closes it): no shielded scope.
        if not response.is_closed:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await response.aclose()
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in _WIRE_HEADERS]
    return httpx.Response(
        response.status_code, headers=headers, content=b"".join(parts), request=request
    )


def _identity(text: str) -> str:
    return text


def excerpt(body: bytes | str, limit: int = 120, scrub: Callable[[str], str] = _identity) -> str:
    """A short, printable, one-line piece of ``body``: ``scrub`` (the caller's secrets) and
    the URL filter run on a generous prefix first, so that a cut never splits a secret."""
    text = body[:4096].decode("utf-8", "replace") if isinstance(body, bytes) else body[:4096]
    text = _URL_RE.sub("<url>", scrub(text))
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    if not text:
        return "(empty body)"
    return text if len(text) <= limit else text[:limit] + "..."
