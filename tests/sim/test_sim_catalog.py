"""The simulator's catalogue is the real server's ``/object_info``; its edge answers are real.

The real answer is ``tests/data/captures/object_info_full.json.gz`` (a gzipped copy of the
capture ``object_info_full.json``: ComfyUI 0.3.64, CPU, no model files). The edge cases
(UI-format graph, non-object node, non-JSON interrupt, ``/ws`` without an upgrade) are the
ones issue 15 measured on that server.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.workflow import catalog_from_object_info
from conjure_actors.sim.catalog import (
    LOADER_FOLDERS,
    MODEL_FILES,
    OBJECT_INFO,
    node_catalog,
    object_info,
)
from conjure_actors.sim.comfyui import ComfyUISim

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
REAL: dict[str, Any] = json.loads(
    gzip.decompress((CAPTURES / "object_info_full.json.gz").read_bytes())
)


@pytest.fixture
async def sim_http(nursery: trio.Nursery) -> AsyncIterator[tuple[ComfyUISim, httpx.AsyncClient]]:
    sim = ComfyUISim(wall=TrioWallClock().now)
    await nursery.start(sim.run)
    transport = httpx.ASGITransport(app=sim.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
        yield sim, http
    nursery.cancel_scope.cancel()


def _ours(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with what the simulator sets up differently put back to the capture's."""
    body = json.loads(json.dumps(body))
    body.pop("DepthAnythingV2Preprocessor")
    for cls, name in (("LoadImage", "image"), ("LoadImageMask", "image")):
        body[cls]["input"]["required"][name][0] = REAL[cls]["input"]["required"][name][0]
    for cls, name in LOADER_FOLDERS:
        body[cls]["input"]["required"][name][0] = REAL[cls]["input"]["required"][name][0]
    return body


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_object_info_is_the_real_answer(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """/object_info equals the real server's, apart from file lists and the custom node."""
    _, http = sim_http
    response = await http.get("/object_info")
    assert response.status_code == 200
    body = response.json()
    assert len(body) == len(REAL) + 1 == 479
    assert _ours(body) == REAL


async def test_object_info_shapes_are_the_real_ones(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """A bare type stays ``["IMAGE"]`` (no ``{}``), a V3 node keeps ``display_name: null``."""
    _, http = sim_http
    invert = (await http.get("/object_info/ImageInvert")).json()["ImageInvert"]
    assert invert["input"]["required"]["image"] == ["IMAGE"]
    blur = (await http.get("/object_info/ImageBlur")).json()["ImageBlur"]
    assert blur["display_name"] is None
    assert {"deprecated", "experimental", "api_node"} <= set(blur)


async def test_loader_lists_name_the_conjure_models(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """The loaders list the model folders' files; ``/models/{folder}`` answers the same."""
    _, http = sim_http
    unet = (await http.get("/object_info/UNETLoader")).json()["UNETLoader"]
    assert unet["input"]["required"]["unet_name"][0] == list(MODEL_FILES["diffusion_models"])
    vae = (await http.get("/object_info/VAELoader")).json()["VAELoader"]
    assert vae["input"]["required"]["vae_name"][0] == ["ae.safetensors", "pixel_space"]
    assert (await http.get("/models/vae")).json() == ["ae.safetensors"]


def test_ksampler_lists_every_real_sampler() -> None:
    """KSampler's sampler list is the real one (42 names, er_sde and sa_solver among them)."""
    samplers = OBJECT_INFO["KSampler"]["input"]["required"]["sampler_name"][0]
    assert samplers == REAL["KSampler"]["input"]["required"]["sampler_name"][0]
    assert len(samplers) == 42
    assert {"er_sde", "sa_solver", "dpmpp_2m_sde_gpu"} <= set(samplers)


def _flip_graph(method: str = "x-axis: vertically") -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageFlip", "inputs": {"image": ["1", 0], "flip_method": method}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
    }


async def test_a_graph_the_real_server_accepts_is_accepted(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """ImageFlip (not in the old 28-class catalogue) is queued, not refused."""
    _, http = sim_http
    response = await http.post("/prompt", json={"prompt": _flip_graph()})
    assert response.status_code == 200, response.text
    assert response.json()["node_errors"] == {}


async def test_a_v3_combo_is_checked_against_its_options(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """A ``COMBO`` input with a value outside ``options`` gets value_not_in_list."""
    _, http = sim_http
    graph = _flip_graph()
    graph["4"] = {
        "class_type": "ImageQuantize",
        "inputs": {"image": ["1", 0], "colors": 4, "dither": "bayer-3"},
    }
    graph["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    response = await http.post("/prompt", json={"prompt": graph})
    assert response.status_code == 200
    (error,) = response.json()["node_errors"]["4"]["errors"]
    assert error["type"] == "value_not_in_list"
    options = ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]
    assert error["details"] == f"dither: 'bayer-3' not in {options}"


UI_FORMAT = {
    "last_node_id": 3,
    "last_link_id": 2,
    "nodes": [{"id": 1, "type": "EmptyImage", "widgets_values": [64, 64, 1, 0]}],
    "links": [],
    "version": 0.4,
}


@pytest.mark.parametrize(
    "prompt",
    [UI_FORMAT, {"1": 5}, {"1": None}],
    ids=["ui-format graph", "number node", "null node"],
)
async def test_ui_format_graph_or_non_object_node_gets_500(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient],
    autojump_clock: trio.abc.Clock,
    prompt: dict[str, Any],
) -> None:
    """The real validator's ``'class_type' not in node`` raises on a number: 500 text."""
    _, http = sim_http
    response = await http.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 500
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_a_string_node_gets_400_invalid_prompt(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """A string node is searched, not refused: it lacks class_type (400 invalid_prompt)."""
    _, http = sim_http
    response = await http.post("/prompt", json={"prompt": {"1": "EmptyImage"}})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_prompt"


async def test_interrupt_with_a_body_that_is_not_json_is_a_global_interrupt(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock
) -> None:
    """/interrupt reads a non-JSON body as ``{}``: 200, empty, like the real handler."""
    _, http = sim_http
    response = await http.post("/interrupt", content=b"{not json")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("path", ["/ws", "/api/ws", "/ws?clientId=abc"])
async def test_ws_without_upgrade_is_400(
    sim_http: tuple[ComfyUISim, httpx.AsyncClient], autojump_clock: trio.abc.Clock, path: str
) -> None:
    """A plain GET on /ws is aiohttp's 400 'No WebSocket UPGRADE hdr', not a 404."""
    _, http = sim_http
    response = await http.get(path)
    assert response.status_code == 400
    assert response.text.startswith("400: No WebSocket UPGRADE hdr")


def test_node_catalog_is_the_parsed_object_info_built_once_and_read_only() -> None:
    """node_catalog() equals parsing /object_info (empty input folder), is one shared object,
    and cannot be changed by one of the clients sharing it."""
    catalog = node_catalog()
    assert dict(catalog) == catalog_from_object_info(object_info(()))
    assert node_catalog() is catalog
    with pytest.raises(TypeError):
        catalog["KSampler"] = catalog["VAEDecode"]  # type: ignore[index]
