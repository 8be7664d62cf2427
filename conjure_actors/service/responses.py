"""``JSONResponse``: Starlette's, encoded by msgspec (one C call per response instead of the
standard library's encoder; the same compact UTF-8 JSON, keys in the same order)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette import responses

__all__ = ["JSONResponse"]

_encode = msgspec.json.Encoder().encode


class JSONResponse(responses.JSONResponse):
    """A JSON body (``application/json``)."""

    def render(self, content: Any) -> bytes:
        return _encode(content)
