"""The simulated cloud over loopback sockets (hypercorn on trio, port 0), real time."""

from __future__ import annotations

import json
import random
from functools import partial

import httpx
import pytest
import trio
import trio_websocket

from conjure_actors.clients.ratelimit import TokenBucket
from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.sim.cloud import CloudTimings
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.serve import ServedCloud, ServedComfyUI, serve_cloud, serve_comfyui

FAST = CloudTimings(runcomfy=RunComfyTimings(ready_delay=0.05, deleting_delay=0.05, burst=50))


async def test_cloud_over_loopback() -> None:
    """Launch over real sockets: the machine's ComfyUI gets its own port, and stops with it."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            served: ServedCloud = await nursery.start(partial(serve_cloud, timings=FAST))
            assert served.base_url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient() as http:
                client = RunComfyClient(
                    served.base_url,
                    served.user_id,
                    served.token,
                    http=http,
                    bucket=TokenBucket(rate=50, burst=50),
                    rng=random.Random(0),
                )
                server = await client.launch("wv-1", "medium", 600)
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
