"""Each simulated machine has the nodes of its workflow version (a RunComfy workflow version is
a machine image): a ``wv-core-nodes-1`` machine is a bare ComfyUI, without the CONJURE custom
node and model files, and refuses a prompt using them as the real server refuses a prompt
naming a class it lacks (400 ``invalid_prompt``, capture ``prompt_400_bodies.json``)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.sim.catalog import CORE_OBJECT_INFO, OBJECT_INFO
from conjure_actors.sim.cloud import CloudTimings, SimulatedCloud, open_simulated_cloud
from conjure_actors.sim.runcomfy import RunComfyTimings

CORE = "wv-core-nodes-1"
CONJURE = "wv-conjure-flux-mesh-1"
CUSTOM = "DepthAnythingV2Preprocessor"  # the CONJURE workflow's custom node
TIMINGS = CloudTimings(runcomfy=RunComfyTimings(ready_delay=90.0))
CAPTURES = Path(__file__).parent.parent / "data" / "captures"

#: LoadImage -> the CONJURE custom node -> SaveImage.
DEPTH_PROMPT: dict[str, Any] = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {
        "class_type": CUSTOM,
        "inputs": {"image": ["1", 0], "ckpt_name": "depth_anything_v2_vitl.pth", "resolution": 512},
    },
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "d"}},
}


async def _machine_url(cloud: SimulatedCloud, http: httpx.AsyncClient, version: str) -> str:
    client = RunComfyClient(
        cloud.base_url, cloud.user_id, cloud.token, http=http, rng=random.Random(0)
    )
    server = await client.launch(version, "medium", 3600)
    server = await client.wait_until_ready(server.server_id, interval=5)
    assert server.url is not None
    return server.url.reveal()


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_a_core_nodes_machine_lacks_the_conjure_custom_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A core-nodes machine's /object_info has ComfyUI's own nodes only and no model file; a
    CONJURE machine's has the custom node and the model files."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            core = (await http.get(await _machine_url(cloud, http, CORE) + "/object_info")).json()
            full = (
                await http.get(await _machine_url(cloud, http, CONJURE) + "/object_info")
            ).json()
            one = await http.get(await _machine_url(cloud, http, CORE) + f"/object_info/{CUSTOM}")
    assert CUSTOM not in core
    assert CUSTOM in full
    assert set(core) == set(CORE_OBJECT_INFO) < set(OBJECT_INFO)
    assert {"KSampler", "SaveImage", "SaveImageWebsocket"} <= set(core)
    assert core["UNETLoader"]["input"]["required"]["unet_name"][0] == []
    assert full["UNETLoader"]["input"]["required"]["unet_name"][0] != []
    assert one.json() == {}


def test_the_core_catalogue_is_the_bare_servers_capture() -> None:
    """The core-nodes catalogue is exactly the classes the real bare ComfyUI answered."""
    real = json.loads(gzip.decompress((CAPTURES / "object_info_full.json.gz").read_bytes()))
    assert set(CORE_OBJECT_INFO) == set(real)
    modules = {info["python_module"] for info in CORE_OBJECT_INFO.values()}
    assert {m.split(".")[0] for m in modules} == {
        "nodes",
        "comfy_extras",
        "comfy_api_nodes",
        "custom_nodes",
    }
    # The one custom node of a bare install ships with ComfyUI itself.
    assert {m for m in modules if m.startswith("custom_nodes")} == {
        "custom_nodes.websocket_image_save"
    }


async def test_a_prompt_with_a_class_its_machine_lacks_is_refused_as_comfyui_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """POST /prompt naming the CONJURE custom node on a core-nodes machine: the real 400
    ``invalid_prompt`` body; the same prompt is accepted by a CONJURE machine."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            core = await _machine_url(cloud, http, CORE)
            full = await _machine_url(cloud, http, CONJURE)
            refused = await http.post(core + "/prompt", json={"prompt": DEPTH_PROMPT})
            accepted = await http.post(full + "/prompt", json={"prompt": DEPTH_PROMPT})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": {
            "type": "invalid_prompt",
            "message": f"Cannot execute because node {CUSTOM} does not exist.",
            "details": "Node ID '#2'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    assert accepted.status_code == 200, accepted.text
