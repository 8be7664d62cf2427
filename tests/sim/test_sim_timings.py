"""The per-class cost model: real timings reproduce the captured ones, the demo is faster by
what it says, ``sim`` uses real timings, and ``scale`` stretches everything."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import httpx
import pytest
import trio

from conjure_actors.cli import build_parser
from conjure_actors.commands import sim as sim_command
from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.fidelity import (
    SCENARIOS,
    WORKER_SCENARIOS,
    captured_worker_latencies,
    run_scenario,
)
from conjure_actors.sim.timings import DEMO_SPEEDUP, REAL_PAUSE, ComfyTimings

CAPTURED = json.loads((Path(__file__).parents[1] / "data/captures/timings.json").read_text())
WORKFLOW = json.loads(
    (Path(__file__).parents[2] / "conjure_actors/workflows/conjure_flux_mesh.json").read_text()
)


def test_every_captured_timing_has_a_scenario() -> None:
    """Each real timing in captures/timings.json is replayed by a scenario."""
    assert set(SCENARIOS) == set(CAPTURED)


@pytest.mark.parametrize("name", sorted(CAPTURED))
async def test_real_timings_reproduce_the_capture(
    autojump_clock: trio.abc.Clock, name: str
) -> None:
    """At real speed the cost model gives each captured time within 15%."""
    seconds = await run_scenario(name, ComfyTimings.real())
    assert seconds == pytest.approx(CAPTURED[name], rel=0.15)


@pytest.mark.parametrize("name", sorted(WORKER_SCENARIOS))
async def test_the_workers_own_latencies_reproduce_the_ws_captures(
    autojump_clock: trio.abc.Clock, name: str
) -> None:
    """Pickup and cache-freeing latencies: the captures' median within 25% or 0.2 ms."""
    captured = captured_worker_latencies(Path(__file__).parents[1] / "data/captures")[name]
    want = statistics.median(captured)
    got = await run_scenario(name, ComfyTimings.real()) * 1000
    assert got == pytest.approx(want, rel=0.25, abs=0.2)


async def _conjure_seconds(timings: ComfyTimings) -> float:
    """POST to ``executing null`` of the CONJURE workflow (simulated seconds)."""
    sim = ComfyUISim(timings=timings)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
            ws = await sim.connect_ws_in_memory(nursery, "/ws?clientId=t")
            start = trio.current_time()
            body = {"prompt": copy.deepcopy(WORKFLOW), "client_id": "t"}
            pid = (await http.post("/prompt", json=body)).json()["prompt_id"]
            with trio.fail_after(10_000):
                while True:
                    message = await ws.get_message()
                    frame = json.loads(message) if isinstance(message, str) else {}
                    if frame.get("type") == "executing" and frame["data"] == {
                        "node": None,
                        "prompt_id": pid,
                    }:
                        break
            seconds = trio.current_time() - start
            await ws.aclose()
        nursery.cancel_scope.cancel()
    return seconds


async def test_real_conjure_workflow_takes_what_the_seeds_say(
    autojump_clock: trio.abc.Clock,
) -> None:
    """At real speed the FLUX + mesh workflow takes 100-500 s, the seeds' range."""
    assert 100.0 <= await _conjure_seconds(ComfyTimings.real()) <= 500.0


async def test_demo_timings_are_faster_by_their_speedup(autojump_clock: trio.abc.Clock) -> None:
    """ComfyTimings() runs the workflow DEMO_SPEEDUP times faster than real, and says so."""
    demo, real = ComfyTimings(), ComfyTimings.real()
    assert (demo.speedup, real.speedup) == (DEMO_SPEEDUP, 1.0)
    ratio = await _conjure_seconds(real) / await _conjure_seconds(demo)
    assert ratio == pytest.approx(DEMO_SPEEDUP, rel=0.01)


async def test_scale_multiplies_every_duration(autojump_clock: trio.abc.Clock) -> None:
    """scale=3 takes three times as long as scale=1."""
    one = await _conjure_seconds(ComfyTimings.real())
    three = await _conjure_seconds(ComfyTimings.real(scale=3.0))
    assert three == pytest.approx(3 * one, rel=0.01)


def test_sim_command_uses_real_timings_by_default() -> None:
    """`sim` serves real-speed nodes; --node-scale multiplies them."""
    _, timings = sim_command._configure(build_parser().parse_args(["sim"]))
    assert timings.comfyui == ComfyTimings.real()
    _, scaled = sim_command._configure(build_parser().parse_args(["sim", "--node-scale", "0.01"]))
    assert scaled.comfyui == ComfyTimings.real(scale=0.01)


def test_model_nodes_cost_more_than_model_free_ones() -> None:
    """A class the table lacks: milliseconds if it is image work, seconds if it needs a model."""
    real = ComfyTimings.real()
    assert real.node_seconds("ImageStitch", 0, "image/transform") == pytest.approx(0.001)
    assert real.node_seconds("CheckpointLoaderSimple") >= 10.0
    assert real.node_seconds("HypernetworkLoader", 0, "loaders") >= 1.0
    blur = real.node_seconds("ImageBlur", 4 * 1024 * 1024, "image/postprocessing")
    assert blur == pytest.approx(0.74, rel=0.02)


async def test_embedded_cloud_says_how_much_faster_than_real_it_runs(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The default simulated cloud (run's) is DEMO_SPEEDUP times faster; scale divides it."""
    async with open_simulated_cloud() as cloud:
        assert cloud.speedup == DEMO_SPEEDUP
    timings = CloudTimings(comfyui=ComfyTimings(scale=4.0))
    async with open_simulated_cloud(timings=timings) as cloud:
        assert cloud.speedup == DEMO_SPEEDUP / 4


def test_the_worker_pause_comes_every_tenth_queue_number_and_scales() -> None:
    """Numbers ending in 2 (as captured: 62, 82, 392) pause REAL_PAUSE; scale multiplies it."""
    real = ComfyTimings.real()
    assert [n for n in range(100) if real.pause_seconds(n)] == list(range(2, 100, 10))
    assert real.pause_seconds(82) == REAL_PAUSE
    assert real.pause_seconds(None) == 0.0  # the client chose the number
    assert ComfyTimings.real(scale=0.01).pause_seconds(392) == pytest.approx(REAL_PAUSE / 100)
    assert ComfyTimings().pause_seconds(62) == pytest.approx(REAL_PAUSE / DEMO_SPEEDUP)


async def _start_delays(sim: ComfyUISim, count: int) -> list[float]:
    """POST ``count`` small prompts one after another: each one's POST to execution_start."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    delays = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
            ws = await sim.connect_ws_in_memory(nursery, "/ws?clientId=t")
            for n in range(count):
                graph = copy.deepcopy(prompt)
                graph["1"]["inputs"]["color"] = n  # nothing cached
                posted = trio.current_time()
                body = {"prompt": graph, "client_id": "t"}
                pid = (await http.post("/prompt", json=body)).json()["prompt_id"]
                end = {"type": "executing", "data": {"node": None, "prompt_id": pid}}
                with trio.fail_after(10):
                    while (frame := json.loads(await ws.get_message()))["type"] != (
                        "execution_start"
                    ):
                        pass
                    delays.append(trio.current_time() - posted)
                    while frame != end:
                        frame = json.loads(await ws.get_message())
            await ws.aclose()
        nursery.cancel_scope.cancel()
    return delays


async def test_the_prompt_numbered_2_starts_a_pause_later(autojump_clock: trio.abc.Clock) -> None:
    """From POST to execution_start, the third prompt (number 2) takes REAL_PAUSE longer."""
    first, second, third, fourth = await _start_delays(ComfyUISim(timings=ComfyTimings.real()), 4)
    assert first == pytest.approx(second) == pytest.approx(fourth)
    assert third - first == pytest.approx(REAL_PAUSE)
