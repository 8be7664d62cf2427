"""A multipart POST whose body httpx does not stream from an async generator: a refusal
leaves the body unread, and httpx's own generator is then collected with a
ResourceWarning (which the suite turns into an error)."""

from __future__ import annotations

from typing import Any

import httpx


class _Unread(httpx.AsyncByteStream):
    """A request body in one chunk whose iterator is not an async generator: httpx's
    own are, and one the app left unread (a refusal) is collected with a ResourceWarning."""

    def __init__(self, data: bytes) -> None:
        self._chunks = [data]

    def __aiter__(self) -> _Unread:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop()


async def post_multipart(
    client: httpx.AsyncClient, path: str, data: dict[str, str], files: dict[str, Any]
) -> httpx.Response:
    built = httpx.Request("POST", "http://body.invalid/", data=data, files=files)  # the body
    body = built.read()
    headers = {"Content-Type": built.headers["content-type"], "Content-Length": str(len(body))}
    request = client.build_request("POST", path, headers=headers)
    request.stream = _Unread(body)
    return await client.send(request)


__all__ = ["post_multipart"]
