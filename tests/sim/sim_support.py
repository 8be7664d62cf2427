"""Helpers shared by the simulator's tests: a WebSocket frame reduced to what must match a
capture."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import trio

from conjure_actors.sim.comfyui import ComfyUISim

_TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")


def norm(frame: dict[str, Any]) -> tuple[Any, ...]:
    """The key fields of a frame: what must match the capture, in order."""
    if frame.get("kind") == "binary":
        return ("binary", frame["event"])
    kind, d = frame["type"], frame["data"]
    if kind == "status":
        return (kind, d["status"]["exec_info"]["queue_remaining"], "sid" in d)
    if kind == "execution_cached":
        return (kind, tuple(d["nodes"]))
    if kind == "progress_state":
        states = sorted(
            (k, v["state"], float(v["value"]), float(v["max"])) for k, v in d["nodes"].items()
        )
        return (kind, tuple(states))
    if kind == "executing":
        return (kind, d["node"], "prompt_id" in d)
    if kind == "executed":
        return (kind, d["node"], _TEMP_NAME.sub("ComfyUI_temp_", json.dumps(d["output"])))
    if kind == "progress":
        return (kind, d["node"], d["value"], d["max"])
    if kind == "execution_error":
        return (kind, d["node_id"], d["node_type"], d["exception_type"], tuple(d["executed"]))
    if kind == "execution_interrupted":
        return (kind, d["node_id"], d["node_type"], tuple(d["executed"]))
    return (kind,)


async def run_prompt(
    sim: ComfyUISim, http: httpx.AsyncClient, nursery: trio.Nursery, body: dict[str, Any]
) -> dict[str, Any]:
    """POST ``body`` with a client id of its own, wait for its ``executing null``; its
    /history entry."""
    client_id = uuid.uuid4().hex
    ws = await sim.connect_ws_in_memory(nursery, f"/ws?clientId={client_id}")
    response = await http.post("/prompt", json={**body, "client_id": client_id})
    assert response.status_code == 200, response.text
    pid = response.json()["prompt_id"]
    end = {"type": "executing", "data": {"node": None, "prompt_id": pid}}
    with trio.fail_after(600):  # simulated seconds under MockClock
        while True:
            message = await ws.get_message()
            if isinstance(message, str) and json.loads(message) == end:
                break
    await ws.aclose()
    entry: dict[str, Any] = (await http.get(f"/history/{pid}")).json()[pid]
    return entry
