"""Property: ``ComfyUIEvents.dispatch``, which drops ``progress_state`` frames by their first
bytes before decoding them, routes exactly what decoding every frame first routed (the
reference below decodes every frame, and gives a legacy binary frame to the prompt seen
running, none once it ended): same frames to the same prompts, in order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients import ComfyUIClient
from conjure_actors.clients import comfyui_wire as wire
from conjure_actors.clients.comfyui import ComfyUIEvents

# A long property suite: out of the inner loop (just test), run by just check and CI.
pytestmark = pytest.mark.slow

CAPTURES = Path(__file__).parents[1] / "data" / "captures"
FRAMES = [
    {k: v for k, v in line["frame"].items() if k != "kind"}
    for name in ("ws_normal_run.jsonl", "ws_execution_error.jsonl", "ws_cached_run.jsonl")
    for line in map(json.loads, (CAPTURES / name).read_text().splitlines())
    if line.get("dir") == "in" and line.get("frame", {}).get("kind") == "json"
]
PROMPTS = sorted({f["data"]["prompt_id"] for f in FRAMES if "prompt_id" in f.get("data", {})})
# The captures hold no sampler: progress frames as ComfyUI sends them, one per step.
FRAMES += [
    {"type": "progress", "data": {"value": v, "max": 3, "prompt_id": PROMPTS[0], "node": "3"}}
    for v in (1, 2, 3)
]


# A legacy (type 1) preview: no prompt id, it goes to the prompt running.
LEGACY = (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x89PNG\r\n\x1a\n"


def reference_dispatch(events: ComfyUIEvents, message: str | bytes) -> None:
    """The dispatch of text frames before the prefix test: decode, then drop or route; a
    binary frame goes to its prompt, or to the prompt running."""
    if isinstance(message, bytes):
        frame = wire.parse_binary_frame(message)
        events._route(frame.prompt_id or events._current_prompt, frame)
        return
    msg = wire.parse_ws_message(message)
    if isinstance(msg, wire.UnknownMessage):
        return
    if isinstance(msg, wire.StatusMsg | wire.FeatureFlagsMsg | wire.ProgressStateMsg):
        return
    prompt_id = msg.data.prompt_id
    # The prompt running (a legacy binary frame's owner): the last one seen starting or
    # progressing, none once it ended (executing null, success, error, interrupted).
    ends = isinstance(
        msg, wire.ExecutionSuccessMsg | wire.ExecutionErrorMsg | wire.ExecutionInterruptedMsg
    ) or (isinstance(msg, wire.ExecutingMsg) and msg.data.node is None)
    if ends:
        if prompt_id and prompt_id == events._current_prompt:
            events._current_prompt = None
    elif isinstance(msg, wire.ExecutingMsg | wire.ExecutionStartMsg | wire.ProgressMsg):
        events._current_prompt = prompt_id if prompt_id else events._current_prompt
    events._route(prompt_id, msg)


@st.composite
def frames(draw: st.DrawFn) -> str:
    """A captured frame (progress_state among them) with its prompt id, its data or its type
    changed at random, written compact or as ComfyUI's ``json.dumps`` does, maybe cut short."""
    frame: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(FRAMES))))
    data = frame.get("data")
    if isinstance(data, dict) and "prompt_id" in data and draw(st.booleans()):
        data["prompt_id"] = draw(st.sampled_from([*PROMPTS, "other", None, 3]))
    if draw(st.integers(0, 9)) == 0:
        frame["data"] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5)))
    if draw(st.integers(0, 9)) == 0:
        frame["type"] = draw(st.sampled_from(["progress_state", "progress_statex", "progress"]))
    compact = draw(st.booleans())
    text = json.dumps(frame, separators=(",", ":") if compact else None)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _routed(events: ComfyUIEvents) -> dict[str, list[Any]]:
    return {pid: list(queue) for pid, queue in events._orphans.items()}


@given(st.lists(st.one_of(frames(), st.just(LEGACY)), max_size=40))
def test_dispatch_routes_what_decoding_every_frame_routed(texts: list[str | bytes]) -> None:
    """Any sequence of text frames and legacy binary frames: the same frames buffered for the
    same prompts, in order."""
    client = ComfyUIClient("http://127.0.0.1:1", http=httpx.AsyncClient(), redact="s")
    new, old = client.events(), client.events()
    for text in texts:
        new.dispatch(text)
        reference_dispatch(old, text)
    assert _routed(new) == _routed(old)
    assert new._current_prompt == old._current_prompt
    assert new.frames == len(texts)
