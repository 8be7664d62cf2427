"""A newer ComfyUI refuses a class it lacks as ``missing_node_type`` (node named in
``extra_info``, not ``node_errors``): the refusal names that node, and says no input fixes
it (QA G12)."""

from __future__ import annotations

import json

import httpx
import pytest

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clients.errors import PromptRejectedError

BASE = "https://m-1.invalid:8443"
ANSWER = {
    "error": {
        "type": "missing_node_type",
        "message": "Node 'Depth' not found. The custom node may not be installed.",
        "details": "Node ID '#17'",
        "extra_info": {
            "node_id": "17",
            "class_type": "DepthAnythingV2Preprocessor",
            "node_title": "Depth",
        },
    },
    "node_errors": {},
}


async def test_a_missing_node_type_refusal_names_its_node_and_class() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=json.dumps(ANSWER).encode())

    graph = {"17": {"class_type": "DepthAnythingV2Preprocessor", "inputs": {}}}
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ComfyUIClient(BASE, http=http, redact="server s-1")
        with pytest.raises(PromptRejectedError) as info:
            await client.submit(graph, "p-1", None)
    found = [(e.node_id, e.class_type) for e in info.value.node_errors]
    assert found == [("17", "DepthAnythingV2Preprocessor")]
    assert "workflow version whose machines have that node" in str(info.value)
