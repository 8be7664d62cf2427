"""The scenarios behind the real server's timings (``captures/timings.json``), run on the
simulator: what ``bench/sim_fidelity.py`` reports and ``tests/sim`` checks.

Each scenario is the captured client's sequence (the same graphs, the same requests):

- ``invert_save_first_run_s``: EmptyImage 64x64 -> ImageInvert -> SaveImage, cold cache,
  POST /prompt to ``executing null``;
- ``invert_save_cached_run_s``: the same prompt again (every node cached);
- ``load_scale_blur_save_s``: LoadImage 40x30 -> ImageScale 96x64 -> ImageBlur -> SaveImage,
  plus GetImageSize -> EmptyImage -> PreviewImage;
- ``interrupt_to_execution_interrupted_s``: EmptyImage 4x1024x1024 then four ImageBlur radius
  15; /interrupt 14.4 ms after ``executing`` of the first blur (as captured), until
  ``execution_interrupted``.

:func:`run_scenario` measures one with whatever clock the trio run has: under
``trio.testing.MockClock`` it gives the cost model's time exactly, under the real clock the
time the simulator really takes (the model's, or longer if computing took longer).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import httpx
import trio
import trio_websocket

from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.media import write_png
from conjure_actors.sim.timings import ComfyTimings

__all__ = ["SCENARIOS", "WORKER_SCENARIOS", "captured_worker_latencies", "run_scenario"]

_JSON = dict[str, Any]

INVERT_SAVE: Final[_JSON] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "heldout/invert"},
    },
}

LOAD_SCALE_BLUR_SAVE: Final[_JSON] = {
    "10": {"class_type": "LoadImage", "inputs": {"image": "heldout_input.png"}},
    "11": {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["10", 0],
            "upscale_method": "bilinear",
            "width": 96,
            "height": 64,
            "crop": "disabled",
        },
    },
    "12": {
        "class_type": "ImageBlur",
        "inputs": {"image": ["11", 0], "blur_radius": 3, "sigma": 1.5},
    },
    "13": {
        "class_type": "SaveImage",
        "inputs": {"images": ["12", 0], "filename_prefix": "heldout/loaded"},
    },
    "14": {"class_type": "GetImageSize", "inputs": {"image": ["10", 0]}},
    "15": {
        "class_type": "EmptyImage",
        "inputs": {"width": ["14", 0], "height": ["14", 1], "batch_size": 1, "color": 255},
    },
    "16": {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}},
}

SLOW_BLUR_CHAIN: Final[_JSON] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 1024, "height": 1024, "batch_size": 4, "color": 8421504},
    },
    **{
        str(k): {
            "class_type": "ImageBlur",
            "inputs": {"image": [str(k - 1), 0], "blur_radius": 15, "sigma": 5.0},
        }
        for k in range(2, 6)
    },
    "6": {
        "class_type": "SaveImage",
        "inputs": {"images": ["5", 0], "filename_prefix": "heldout/slow"},
    },
}

#: /interrupt was sent this long after ``executing`` of the first blur (captured).
INTERRUPT_AFTER: Final = 0.0144

_Ws = trio_websocket.WebSocketConnection


async def _frame(ws: _Ws) -> _JSON:
    while True:
        message = await ws.get_message()
        if isinstance(message, str):
            frame: _JSON = json.loads(message)
            return frame


async def _until(ws: _Ws, kind: str, **fields: Any) -> _JSON:
    while True:
        frame = await _frame(ws)
        data = frame.get("data") or {}
        if frame.get("type") == kind and all(data.get(k) == v for k, v in fields.items()):
            return frame


async def _post(http: httpx.AsyncClient, graph: _JSON, client_id: str) -> str:
    response = await http.post("/prompt", json={"prompt": graph, "client_id": client_id})
    response.raise_for_status()
    prompt_id: str = response.json()["prompt_id"]
    return prompt_id


async def _run(http: httpx.AsyncClient, ws: _Ws, graph: _JSON) -> float:
    start = trio.current_time()
    pid = await _post(http, copy.deepcopy(graph), "fidelity")
    await _until(ws, "executing", node=None, prompt_id=pid)
    return trio.current_time() - start


async def _invert_first(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    return await _run(http, ws, INVERT_SAVE)


async def _invert_cached(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    await _run(http, ws, INVERT_SAVE)
    return await _run(http, ws, INVERT_SAVE)


async def _load_scale_blur(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    sim.add_input("heldout_input.png", write_png(40, 30, b"heldout input"))
    return await _run(http, ws, LOAD_SCALE_BLUR_SAVE)


async def _interrupt(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    pid = await _post(http, copy.deepcopy(SLOW_BLUR_CHAIN), "fidelity")
    await _until(ws, "executing", node="2", prompt_id=pid)
    await trio.sleep(INTERRUPT_AFTER)
    start = trio.current_time()
    (await http.post("/interrupt", json={"prompt_id": pid})).raise_for_status()
    await _until(ws, "execution_interrupted", prompt_id=pid)
    return trio.current_time() - start


_Scenario = Callable[[ComfyUISim, httpx.AsyncClient, _Ws], Awaitable[float]]

SCENARIOS: Final[dict[str, _Scenario]] = {
    "invert_save_first_run_s": _invert_first,
    "invert_save_cached_run_s": _invert_cached,
    "load_scale_blur_save_s": _load_scale_blur,
    "interrupt_to_execution_interrupted_s": _interrupt,
}


async def _answer_to_start(http: httpx.AsyncClient, ws: _Ws, color: int = 0) -> float:
    """POST (answered) to ``execution_start`` of a new prompt, then wait for its end."""
    graph = copy.deepcopy(INVERT_SAVE)
    graph["1"]["inputs"]["color"] = color  # a graph of its own: nothing cached
    pid = await _post(http, graph, "fidelity")
    answered = trio.current_time()
    await _until(ws, "execution_start", prompt_id=pid)
    seconds = trio.current_time() - answered
    await _until(ws, "executing", node=None, prompt_id=pid)
    return seconds


async def _pickup(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    return await _answer_to_start(http, ws)


async def _pickup_paused(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    for color in range(2):  # queue numbers 0 and 1; the pause comes at 2
        await _answer_to_start(http, ws, color)
    return await _answer_to_start(http, ws, 2)


async def _start_to_cached(http: httpx.AsyncClient, ws: _Ws) -> float:
    pid = await _post(http, copy.deepcopy(INVERT_SAVE), "fidelity")
    await _until(ws, "execution_start", prompt_id=pid)
    start = trio.current_time()
    await _until(ws, "execution_cached", prompt_id=pid)
    seconds = trio.current_time() - start
    await _until(ws, "executing", node=None, prompt_id=pid)
    return seconds


async def _cached(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    return await _start_to_cached(http, ws)


async def _cached_after_interrupt(sim: ComfyUISim, http: httpx.AsyncClient, ws: _Ws) -> float:
    """As captured: a blur chain interrupted during its first blur leaves two 4x1024x1024
    batches cached, which the next prompt frees before ``execution_cached``."""
    await _interrupt(sim, http, ws)
    return await _start_to_cached(http, ws)


#: The worker's own latencies, in ms as the WebSocket captures show them (each measured on
#: the captures by bench/sim_fidelity.py): POST answered -> ``execution_start`` for a
#: prompt the worker takes at once, at a queue number where it pauses or not, and
#: ``execution_start`` -> ``execution_cached`` with nothing to free or after an interrupted
#: 4x1024x1024 blur chain.
WORKER_SCENARIOS: Final[dict[str, _Scenario]] = {
    "answer_to_execution_start": _pickup,
    "answer_to_execution_start_every_10th": _pickup_paused,
    "start_to_execution_cached": _cached,
    "start_to_execution_cached_after_interrupt": _cached_after_interrupt,
}


def captured_worker_latencies(folder: Path) -> dict[str, list[float]]:
    """Each WORKER_SCENARIOS figure (ms) for every prompt of the WebSocket captures.

    The captures come from one server, taken in the order of their queue numbers: a prompt
    frees the outputs the previous one left, wherever that one was captured."""
    timings = ComfyTimings.real()  # where the worker pauses (queue numbers ending in 2)
    found: dict[str, list[float]] = {name: [] for name in WORKER_SCENARIOS}
    logs = []
    for path in folder.glob("ws_*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line]
        posts = [
            line
            for line in lines
            if line.get("path") == "/prompt" and line["method"] == "POST" and line["status"] == 200
        ]
        if posts:
            logs.append((min(abs(p["response"]["number"]) for p in posts), posts, lines))
    left_big_outputs = False  # the last prompt to end was interrupted after running nodes
    for _, posts, lines in sorted(logs, key=lambda log: log[0]):
        answered = {
            p["response"]["prompt_id"]: (p["t_ms"], abs(int(p["response"]["number"])))
            for p in posts
        }
        frames = [ln for ln in lines if ln.get("dir") == "in" and "type" in ln["frame"]]
        starts = {
            ln["frame"]["data"]["prompt_id"]: ln["t_ms"]
            for ln in frames
            if ln["frame"]["type"] == "execution_start"
        }
        for line in frames:
            kind, data = line["frame"]["type"], line["frame"]["data"]
            if kind in ("execution_success", "execution_error", "execution_interrupted"):
                left_big_outputs = kind == "execution_interrupted" and bool(data["executed"])
            if kind == "execution_cached":
                pid = data["prompt_id"]
                after = "_after_interrupt" if left_big_outputs else ""
                found["start_to_execution_cached" + after].append(line["t_ms"] - starts[pid])
        for pid, t_start in starts.items():
            if pid not in answered:
                continue
            t_answer, number = answered[pid]
            if any(
                t_answer <= ln["t_ms"] < t_start
                and ln["frame"]["type"] in ("execution_start", "executing")
                and ln["frame"]["data"]["prompt_id"] != pid
                for ln in frames
            ):
                continue  # queued behind another prompt
            paused = "_every_10th" if timings.pause_seconds(number) > 0 else ""
            found["answer_to_execution_start" + paused].append(t_start - t_answer)
    return found


async def run_scenario(name: str, timings: ComfyTimings, *, limit: float = 3600.0) -> float:
    """Seconds the simulator takes for the captured scenario ``name`` (a fresh server), one
    of :data:`SCENARIOS` or :data:`WORKER_SCENARIOS`."""
    sim = ComfyUISim(timings=timings)
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            transport = httpx.ASGITransport(app=sim.asgi)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://sim.invalid"
            ) as http:
                ws = await sim.connect_ws_in_memory(nursery, "/ws?clientId=fidelity")
                seconds = await {**SCENARIOS, **WORKER_SCENARIOS}[name](sim, http, ws)
                await ws.aclose()
            nursery.cancel_scope.cancel()
    return seconds
