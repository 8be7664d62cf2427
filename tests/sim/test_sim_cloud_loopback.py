"""The simulated cloud over loopback sockets (hypercorn on trio, port 0), real time."""

from __future__ import annotations

import json
import random
import uuid
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from conjure_actors.clients.comfyui import ComfyUIClient, PromptSucceeded
from conjure_actors.clients.ratelimit import TokenBucket
from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, ServedComfyUI, serve_cloud, serve_comfyui

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
_CUSTOM = "DepthAnythingV2Preprocessor"  # the CONJURE workflow's custom node
FAST = CloudTimings(runcomfy=RunComfyTimings(ready_delay=0.05, deleting_delay=0.05, burst=50))


def _client(served: ServedCloud, http: httpx.AsyncClient) -> RunComfyClient:
    """A RunComfy client of the served cloud's account (its rate limit raised for tests)."""
    return RunComfyClient(
        served.base_url,
        served.user_id,
        served.token,
        http=http,
        bucket=TokenBucket(rate=50, burst=50),
        rng=random.Random(0),
    )


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_cloud_over_loopback() -> None:
    """Launch over real sockets: the machine's ComfyUI gets its own port, and stops with it."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(partial(serve_cloud, timings=FAST))
            assert served.base_url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient() as http:
                client = _client(served, http)
                server = await client.launch("wv-core-nodes-1", "medium", 600)
                ready = await client.wait_until_ready(server.server_id, interval=0.05)
                assert ready.url is not None
                url = ready.url.reveal()
                assert url.startswith("http://127.0.0.1:")
                assert url != served.base_url
                stats = await http.get(url + "/system_stats")
                assert stats.status_code == 200
                ws_url = url.replace("http://", "ws://") + "/ws?clientId=loop"
                async with trio_websocket.open_websocket_url(ws_url) as ws:
                    first = json.loads(await ws.get_message())
                assert first["data"]["sid"] == "loop"
                await client.stop(server.server_id)
                await trio.sleep(0.2)
                with pytest.raises(httpx.ConnectError):
                    await http.get(url + "/system_stats")
                assert served.runcomfy.running() == []
                assert server.server_id in served.machines
            nursery.cancel_scope.cancel()


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_a_loopback_machine_has_its_versions_nodes() -> None:
    """``python -m conjure_actors sim``'s machines have their workflow version's nodes too: a
    core-nodes machine has no CONJURE custom node, a CONJURE one has it."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(partial(serve_cloud, timings=FAST))
            async with httpx.AsyncClient() as http:
                client = _client(served, http)
                found: dict[str, bool] = {}
                for version in ("wv-core-nodes-1", "wv-conjure-flux-mesh-1"):
                    server = await client.launch(version, "medium", 600)
                    ready = await client.wait_until_ready(server.server_id, interval=0.05)
                    assert ready.url is not None
                    answer = await http.get(ready.url.reveal() + "/object_info/" + _CUSTOM)
                    found[version] = _CUSTOM in answer.json()
                    await client.stop(server.server_id)
            nursery.cancel_scope.cancel()
    assert found == {"wv-core-nodes-1": False, "wv-conjure-flux-mesh-1": True}


async def test_bad_token_over_loopback() -> None:
    """The loopback RunComfy API answers 401 to a wrong token."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(serve_cloud)
            async with httpx.AsyncClient() as http:
                resp = await http.get(
                    f"{served.base_url}/prod/api/users/{served.user_id}/servers",
                    headers={"Authorization": "Bearer wrong"},
                )
            nursery.cancel_scope.cancel()
    assert resp.status_code == 401


async def test_standalone_comfyui_over_loopback() -> None:
    """serve_comfyui serves a ComfyUI simulator on a free port."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            served: ServedComfyUI = await nursery.start(serve_comfyui)
            async with httpx.AsyncClient() as http:
                resp = await http.get(served.url + "/queue")
            nursery.cancel_scope.cancel()
    assert resp.json() == {"queue_running": [], "queue_pending": []}


@pytest.mark.slow
async def test_prompt_on_a_rented_machine_over_loopback() -> None:
    """End to end over real sockets: launch, Ready, WebSocket + submit + follow, download."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(partial(serve_cloud, timings=FAST))
            async with httpx.AsyncClient() as http:
                client = _client(served, http)
                server = await client.launch("wv-core-nodes-1", "medium", 600)
                ready = await client.wait_until_ready(server.server_id, interval=0.05)
                assert ready.url is not None
                comfy = ComfyUIClient(
                    ready.url.reveal(), http=http, redact=f"server {server.server_id}"
                )
                events = comfy.events()
                events_scope = trio.CancelScope()

                async def follow_events(
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with events_scope:
                        await events.run(task_status=task_status)

                await nursery.start(follow_events)
                assert events.connected
                prompt_id = str(uuid.uuid4())
                await comfy.submit(graph, prompt_id, events.client_id)
                updates = [u async for u in comfy.follow(prompt_id, events=events)]
                done = updates[-1]
                assert isinstance(done, PromptSucceeded)
                download = await comfy.download(done.outputs[0])
                # Release the machine before stopping it, as the actors do. (A server-side
                # close of a trio-websocket 0.12 client leaks the client's socket: its
                # context exits on ConnectionClosed before the server's TCP FIN arrives.)
                events_scope.cancel()
                await client.stop(server.server_id)
            nursery.cancel_scope.cancel()
    assert download.data.startswith(b"\x89PNG")
    assert served.machines[server.server_id].prompts_run == [prompt_id]
