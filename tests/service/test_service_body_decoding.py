"""What the msgspec body decoder must still take, or refuse cleanly: a UTF-8 BOM, deep
nesting (found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_body_with_a_utf8_bom_is_still_accepted(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A UTF-8 BOM before the JSON (Windows tools write one) was accepted by json.loads, as
    it still is by the other JSON endpoints (budget, estimate, assets); RFC 8259 lets a
    parser ignore it. Today: 400 invalid_request "the body is not JSON"."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    body = b"\xef\xbb\xbf" + json.dumps({"workflow": graph}).encode()
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await run.client.post(
                "/api/v2/jobs", content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 201, answer.text


async def test_a_deeply_nested_body_is_a_400_not_a_500(tmp_path: Path, autojump_clock: Any) -> None:
    """3000 nested arrays: the decoder's RecursionError escapes _json_body (500
    upstream_error, blaming the upstream) where it is the client's bad input."""
    body = b'{"workflow": {"1": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await run.client.post(
                "/api/v2/jobs", content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_request"
