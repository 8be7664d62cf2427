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
from typing import Any, Final

import httpx
import trio
import trio_websocket

from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.media import write_png
from conjure_actors.sim.timings import ComfyTimings

__all__ = ["SCENARIOS", "run_scenario"]

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


async def run_scenario(name: str, timings: ComfyTimings, *, limit: float = 3600.0) -> float:
    """Seconds the simulator takes for the captured scenario ``name`` (a fresh server)."""
    sim = ComfyUISim(timings=timings)
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            transport = httpx.ASGITransport(app=sim.asgi)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://sim.invalid"
            ) as http:
                ws = await sim.connect_ws_in_memory(nursery, "/ws?clientId=fidelity")
                seconds = await SCENARIOS[name](sim, http, ws)
                await ws.aclose()
            nursery.cancel_scope.cancel()
    return seconds
