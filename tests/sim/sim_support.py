"""Helpers shared by the simulator's tests: a WebSocket frame reduced to what must match a
capture."""

from __future__ import annotations

import json
import re
from typing import Any

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
