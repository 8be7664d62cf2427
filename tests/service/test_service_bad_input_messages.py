"""Bad input gets a message that names what is wrong (QA): a ``core/ASSET`` reference
without ``info.id`` (it said "no asset None"), JSON nested too deeply (it said "not JSON",
and on from-hash and the budget it was a 500)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from extras_support import open_extras_service

DEEP = b"[" * 100_000 + b"]" * 100_000
"""Valid JSON, nested 100,000 levels."""


@pytest.mark.parametrize("info", [{}, {"id": None}, {"id": ""}, "x"])
async def test_an_asset_reference_without_an_id_says_so(
    tmp_path: Path, autojump_clock: Any, info: Any
) -> None:
    """422 ``missing_asset`` saying the reference has no ``info.id`` and its form."""
    graph = {
        "1": {
            "class_type": "LoadImage",
            "inputs": {"image": {"__type": "core/ASSET", "info": info}},
        }
    }
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert answer.json()["error"]["code"] == "missing_asset"
    assert "has no info.id" in message
    assert "None" not in message


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v2/jobs"),
        ("POST", "/api/v2/assets/from-hash"),
        ("PUT", "/api/conjure/budget"),
    ],
)
async def test_json_nested_too_deeply_is_400_saying_so(
    tmp_path: Path, autojump_clock: Any, method: str, path: str
) -> None:
    """400 ``invalid_request`` "nested too deeply", not "not JSON" nor a 500."""
    async with open_extras_service(tmp_path) as run:
        answer = await run.client.request(
            method, path, content=DEEP, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"
    assert "nested too deeply" in answer.json()["error"]["message"]
