"""The simulated cloud in memory (MockClock): RunComfy machines with their own ComfyUIs."""

from __future__ import annotations

import json
import logging
import random
import uuid
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from conjure_actors.clients.comfyui import ComfyUIClient, PromptSucceeded
from conjure_actors.clients.errors import ClientError, ServerNotFoundError
from conjure_actors.clients.runcomfy import RunComfyClient, Server
from conjure_actors.sim.cloud import (
    CloudFaults,
    CloudTimings,
    SimulatedCloud,
    open_simulated_cloud,
)
from conjure_actors.sim.comfyui import ComfyFaults
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfyTimings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
TIMINGS = CloudTimings(runcomfy=RunComfyTimings(ready_delay=90.0))


def runcomfy(cloud: SimulatedCloud, http: httpx.AsyncClient) -> RunComfyClient:
    return RunComfyClient(
        cloud.base_url, cloud.user_id, cloud.token, http=http, rng=random.Random(0)
    )


async def ready_machine(client: RunComfyClient, duration: int = 3600) -> Server:
    server = await client.launch("wv-core-nodes-1", "medium", duration)
    return await client.wait_until_ready(server.server_id, interval=5)


async def test_machine_serves_its_own_comfyui(autojump_clock: trio.testing.MockClock) -> None:
    """A Ready machine's main_service_url reaches that machine's own ComfyUI simulator."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            client = runcomfy(cloud, http)
            a = await ready_machine(client)
            b = await ready_machine(client)
            assert a.url is not None
            assert b.url is not None
            stats = await http.get(a.url.reveal() + "/system_stats")
            assert stats.status_code == 200
            assert cloud.machine_sim(a.server_id) is not cloud.machine_sim(b.server_id)
            assert sorted(cloud.running()) == sorted([a.server_id, b.server_id])


async def test_websocket_to_a_machine(autojump_clock: trio.testing.MockClock) -> None:
    """ws_connect reaches the machine's ComfyUI in memory; the first frame is status + sid."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            server = await ready_machine(runcomfy(cloud, http))
            assert server.url is not None
            ws_url = server.url.reveal().replace("https://", "wss://") + "/ws?clientId=abc"
            async with cloud.ws_connect(ws_url) as ws:
                first = json.loads(await ws.get_message())
    assert first["type"] == "status"
    assert first["data"]["sid"] == "abc"


async def test_stopped_machine_stops_answering(autojump_clock: trio.testing.MockClock) -> None:
    """After stop, the machine's host refuses HTTP and WebSocket; its sim stays inspectable."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            client = runcomfy(cloud, http)
            server = await ready_machine(client)
            assert server.url is not None
            url = server.url.reveal()
            await client.stop(server.server_id)
            await trio.sleep(0.1)  # the teardown runs in the background
            with pytest.raises(httpx.ConnectError) as info:
                await http.get(url + "/system_stats")
            with pytest.raises(ConnectionRefusedError):
                async with cloud.ws_connect(url + "/ws"):
                    pass
            assert cloud.machine_sim(server.server_id).restarts == 1
            assert cloud.running() == []
    assert httpx.URL(url).host not in str(info.value)


async def test_lease_expiry_stops_machine_comfyui_and_bill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An unrenewed lease stops the machine by itself: its ComfyUI goes and its bill ends."""
    with trio.fail_after(7200):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            client = runcomfy(cloud, http)
            server = await ready_machine(client, duration=600)
            assert server.url is not None
            await trio.sleep(700)
            with pytest.raises(httpx.ConnectError):
                await http.get(server.url.reveal() + "/system_stats")
            with pytest.raises(ServerNotFoundError):
                await client.status(server.server_id)
            (record,) = cloud.billing()
    assert record.reason == "lease_expired"
    assert record.stopped_at == server.estimated_stopping_at
    assert record.billed_seconds in (600, 601)  # ceil of a float difference


async def test_standalone_comfyui(autojump_clock: trio.testing.MockClock) -> None:
    """The standalone ComfyUI answers over the cloud transport and is not a RunComfy machine."""
    with trio.fail_after(60):
        async with open_simulated_cloud() as cloud, cloud.http_client() as http:
            url, sim = cloud.standalone_comfyui()
            resp = await http.get(url + "/queue")
            assert resp.status_code == 200
            assert sim.prompts_run == []
            assert cloud.running() == []


async def test_unknown_host_is_unreachable(autojump_clock: trio.testing.MockClock) -> None:
    """A host the cloud does not serve fails like a dead host (ConnectError)."""
    with trio.fail_after(60):
        async with open_simulated_cloud() as cloud, cloud.http_client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("https://nobody-comfyui.sim.invalid/queue")


async def test_prompt_runs_on_a_rented_machine(autojump_clock: trio.testing.MockClock) -> None:
    """End to end in memory: launch, Ready, submit a workflow, follow it to success, stop."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            client = runcomfy(cloud, http)
            server = await ready_machine(client)
            assert server.url is not None
            comfy = ComfyUIClient(
                server.url.reveal(),
                http=http,
                ws_connect=cloud.ws_connect,
                redact=f"server {server.server_id}",
            )
            prompt_id = str(uuid.uuid4())
            await comfy.submit(graph, prompt_id, None)
            updates = [u async for u in comfy.follow(prompt_id, poll_interval=0.5)]
            await client.stop(server.server_id)
            ran = cloud.machine_sim(server.server_id).prompts_run
    assert isinstance(updates[-1], PromptSucceeded)
    assert ran == [prompt_id]


async def test_same_seed_same_cloud(autojump_clock: trio.testing.MockClock) -> None:
    """Two clouds with the same seed give the same token, server ids and times."""

    async def one() -> tuple[str, list[str], list[float | None]]:
        async with open_simulated_cloud(seed=5, timings=TIMINGS) as cloud:
            async with cloud.http_client() as http:
                client = runcomfy(cloud, http)
                servers = [await ready_machine(client) for _ in range(2)]
            return (
                cloud.token,
                [s.server_id for s in servers],
                [s.service_ready_at for s in servers],
            )

    with trio.fail_after(3600):
        first = await one()
        second = await one()
    assert first == second


async def test_vanishing_machine_secrets_never_leak(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine vanishing mid-job: no message, log record or repr shows the token or host."""
    caplog.set_level(logging.DEBUG)
    faults = CloudFaults(runcomfy=RunComfyFaults(vanish_rate=1.0, vanish_after=50.0))
    seen: list[str] = []
    with trio.fail_after(3600):
        async with open_simulated_cloud(faults=faults, timings=TIMINGS) as cloud:
            async with cloud.http_client() as http:
                client = runcomfy(cloud, http)
                server = await ready_machine(client)
                assert server.url is not None
                host = httpx.URL(server.url.reveal()).host
                comfy = ComfyUIClient(
                    server.url.reveal(),
                    http=http,
                    ws_connect=cloud.ws_connect,
                    redact=f"server {server.server_id}",
                )
                await trio.sleep(60)
                for call in (comfy.system_stats(), client.status(server.server_id)):
                    with pytest.raises(ClientError) as info:
                        await call
                    seen += [str(info.value), repr(info.value)]
                seen += [repr(server), repr(cloud), repr(client), repr(comfy)]
            token = cloud.token
    seen += [r.getMessage() for r in caplog.records]
    text = "\n".join(seen)
    assert token not in text
    assert host not in text


async def test_vanish_on_demand(autojump_clock: trio.testing.MockClock) -> None:
    """runcomfy.vanish(id) makes a Ready machine 404 at once, billed up to that moment."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            client = runcomfy(cloud, http)
            server = await ready_machine(client)
            await trio.sleep(42)
            vanished_at = cloud.wall()
            assert cloud.runcomfy.vanish(server.server_id)
            assert not cloud.runcomfy.vanish(server.server_id)
            with pytest.raises(ServerNotFoundError):
                await client.status(server.server_id)
            await trio.sleep(0.1)
            assert cloud.live_machines() == {}
            (record,) = cloud.billing()
    assert record.reason == "vanished"
    assert record.stopped_at == vanished_at
    assert server.service_ready_at is not None
    assert record.billed_seconds >= 42


async def test_set_faults_reaches_live_machines(autojump_clock: trio.testing.MockClock) -> None:
    """set_faults swaps the knobs of the RunComfy API and of every live machine's ComfyUI."""
    with trio.fail_after(3600):
        async with open_simulated_cloud(timings=TIMINGS) as cloud, cloud.http_client() as http:
            server = await ready_machine(runcomfy(cloud, http))
            faults = CloudFaults(
                runcomfy=RunComfyFaults(server_error_rate=1.0),
                comfyui=ComfyFaults(http_5xx_rate=1.0),
            )
            cloud.set_faults(faults)
            assert server.url is not None
            resp = await http.get(server.url.reveal() + "/queue")
            assert cloud.runcomfy.faults.server_error_rate == 1.0
    assert resp.status_code == 503
