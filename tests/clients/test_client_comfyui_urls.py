"""ComfyUIClient's request URLs: a fixed route is parsed once per client, and every request
reaches its server's own path (a base URL with a path prefix included)."""

from __future__ import annotations

import httpx
import trio

from conjure_actors.clients import ComfyUIClient

BASE = "http://machine-7f3a.secret.invalid:8188/comfy/prefix"
GRAPH = {"1": {"class_type": "SaveImage", "inputs": {}}}


async def test_fixed_routes_are_parsed_once_and_per_prompt_routes_are_not_kept() -> None:
    """Three submits reuse one parsed /prompt URL; 50 /history/<id> calls keep none."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/prompt"):
            return httpx.Response(200, json={"prompt_id": "p", "number": 1, "node_errors": {}})
        return httpx.Response(200, json={})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ComfyUIClient(BASE, http=http)
        with trio.fail_after(10):
            for i in range(3):
                await client.submit(GRAPH, f"p{i}", None)
            for i in range(50):
                assert await client.history(f"id-{i}") is None
    assert seen[:3] == [f"{BASE}/prompt"] * 3
    assert seen[3:] == [f"{BASE}/history/id-{i}" for i in range(50)]
    assert set(client._urls) == {"/prompt"}
