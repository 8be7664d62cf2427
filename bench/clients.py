"""Benchmark of the ComfyUI client (issue 5): throughput, client CPU and WebSocket parsing.

1. **Prompts through the client.** One ComfyUI simulator runs in a *separate process*
   (hypercorn on a loopback port, nodes take no simulated time), so this process's CPU time
   is the client's alone. 200 prompts are submitted concurrently through one
   :class:`ComfyUIClient` sharing one :class:`ComfyUIEvents` socket; each is followed to its
   end and its output downloaded and verified. Baseline in the same run: a naive client that
   POSTs ``/prompt`` and polls ``/history/{id}`` every 50 ms with plain httpx (no socket,
   no verification).
2. **WebSocket parsing.** A ~1 KiB ``progress_state`` frame decoded by the client's typed
   decoder (``parse_ws_message``), and an ``executed`` frame of about the same size through the
   client's full dispatch path (decode + route to the follower's channel), each beside a bare
   ``msgspec.json.decode`` of the same bytes. (The dispatch path drops ``progress_state``
   frames by their first bytes, since following reads nothing from them: timing their
   dispatch would time a skip, not a route.)

Run: ``python bench/clients.py`` (about a minute). Figures are medians of several repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conjure_actors.clients import ComfyUIClient, PromptSucceeded, RetryPolicy  # noqa: E402
from conjure_actors.clients.comfyui import new_prompt_id  # noqa: E402
from conjure_actors.clients.comfyui_wire import parse_ws_message  # noqa: E402

PROMPTS = 200
REPEATS = 3
PARSE_MESSAGES = 20_000
PARSE_REPEATS = 7
WORKFLOW = json.loads((ROOT / "conjure_actors/workflows/invert_save.json").read_text())


# ---------------------------------------------------------------------------- the server


def serve_sim() -> None:
    """Child process: the simulator on 127.0.0.1:<free port>; prints its URL, runs forever."""
    import hypercorn.config
    import hypercorn.trio

    from conjure_actors.sim.comfyui import ComfyTimings, ComfyUISim

    async def main() -> None:
        sim = ComfyUISim(timings=ComfyTimings(scale=0.0))
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            binds = await nursery.start(hypercorn.trio.serve, sim.asgi, config)
            print(binds[0], flush=True)

    trio.run(main)


# ---------------------------------------------------------------------------- scenarios


def graph(k: int) -> dict[str, object]:
    g = json.loads(json.dumps(WORKFLOW))
    g["1"]["inputs"]["color"] = k  # a different prompt every time: nothing is cached
    return g


async def through_client(url: str, offset: int) -> None:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:
        client = ComfyUIClient(url, http=http, policy=RetryPolicy(attempts=5, base_delay=0.05))
        async with trio.open_nursery() as nursery:
            events = client.events()
            await nursery.start(events.run)

            async def one(k: int) -> None:
                pid = new_prompt_id()
                await client.submit(graph(offset + k), pid, events.client_id)
                result = await client.wait(pid, events=events)
                assert isinstance(result, PromptSucceeded)
                for output in result.outputs:
                    await client.download(output)

            async with trio.open_nursery() as jobs:
                for k in range(PROMPTS):
                    jobs.start_soon(one, k)
            nursery.cancel_scope.cancel()


async def naive_polling(url: str, offset: int) -> None:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:

        async def one(k: int) -> None:
            pid = new_prompt_id()
            await http.post(f"{url}/prompt", json={"prompt": graph(offset + k), "prompt_id": pid})
            while True:
                body = (await http.get(f"{url}/history/{pid}")).json()
                if body:
                    return
                await trio.sleep(0.05)

        async with trio.open_nursery() as jobs:
            for k in range(PROMPTS):
                jobs.start_soon(one, k)


def measure(
    run: Callable[[str, int], Awaitable[None]], url: str, offset: int
) -> tuple[float, float]:
    """(prompts/s, client CPU ms per prompt) of one run of PROMPTS prompts."""
    wall, cpu = time.perf_counter(), time.process_time()
    trio.run(run, url, offset)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return PROMPTS / wall, cpu * 1000 / PROMPTS


def progress_state_frame() -> bytes:
    pid = "65779a96-7993-43b4-93f2-88ca7d57278b"
    nodes = {
        str(n): {
            "value": 1.0 if n < 4 else 0.0,
            "max": 1.0,
            "state": "finished" if n < 4 else "running",
            "node_id": str(n),
            "prompt_id": pid,
            "display_node_id": str(n),
            "parent_node_id": None,
            "real_node_id": str(n),
        }
        for n in range(1, 6)
    }
    return msgspec.json.encode(
        {"type": "progress_state", "data": {"prompt_id": pid, "nodes": nodes}}
    )


def executed_frame() -> bytes:
    """A routed frame of about the progress_state frame's size: a SaveImage node's
    ``executed`` with twelve images."""
    pid = "65779a96-7993-43b4-93f2-88ca7d57278b"
    images = [
        {"filename": f"ComfyUI_{i:05d}_.png", "subfolder": "conjure", "type": "output"}
        for i in range(12)
    ]
    return msgspec.json.encode(
        {
            "type": "executed",
            "data": {
                "node": "9",
                "display_node": "9",
                "output": {"images": images},
                "prompt_id": pid,
            },
        }
    )


def rate(fn: Callable[[str], object], text: str) -> float:
    start = time.perf_counter()
    for _ in range(PARSE_MESSAGES):
        fn(text)
    return PARSE_MESSAGES / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-sim", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sim:
        serve_sim()
        return 0

    frame = progress_state_frame()
    text = frame.decode()
    routed = executed_frame().decode()
    client = ComfyUIClient("http://127.0.0.1:1", http=httpx.AsyncClient())
    events = client.events()
    sub = events.subscribe("65779a96-7993-43b4-93f2-88ca7d57278b")

    def dispatch(message: str) -> None:
        events.dispatch(message)
        sub.receive.receive_nowait()

    parse_rows: dict[str, list[float]] = {
        "bare": [],
        "typed": [],
        "bare_routed": [],
        "dispatch": [],
    }
    for _ in range(PARSE_REPEATS):
        parse_rows["bare"].append(rate(msgspec.json.decode, text))
        parse_rows["typed"].append(rate(parse_ws_message, text))
        parse_rows["bare_routed"].append(rate(msgspec.json.decode, routed))
        parse_rows["dispatch"].append(rate(dispatch, routed))
    bare = statistics.median(parse_rows["bare"])
    bare_routed = statistics.median(parse_rows["bare_routed"])

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-sim"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        client_rows: list[tuple[float, float]] = []
        naive_rows: list[tuple[float, float]] = []
        for r in range(REPEATS):
            client_rows.append(measure(through_client, url, 10_000 * (2 * r)))
            naive_rows.append(measure(naive_polling, url, 10_000 * (2 * r + 1)))
    finally:
        server.terminate()
        server.wait(timeout=10)

    def med(rows: list[tuple[float, float]], i: int) -> float:
        return statistics.median(row[i] for row in rows)

    c_rate, c_cpu = med(client_rows, 0), med(client_rows, 1)
    n_rate, n_cpu = med(naive_rows, 0), med(naive_rows, 1)
    print(
        f"frames: progress_state, {len(frame)} bytes (decode); executed, {len(routed)} bytes "
        f"(dispatch); {PROMPTS} concurrent prompts; "
        f"medians of {REPEATS} (prompts) / {PARSE_REPEATS} (parsing) repeats"
    )
    print()
    print(f"{'figure':46} {'value':>12} {'baseline':>12} {'ratio':>7}")
    print(
        f"{'prompts/s, client (WS + poll + verified download)':46} {c_rate:12.1f} {n_rate:12.1f} "
        f"{c_rate / n_rate:7.2f}   baseline: naive POST + poll /history 50 ms"
    )
    print(
        f"{'client CPU ms per prompt':46} {c_cpu:12.2f} {n_cpu:12.2f} {c_cpu / n_cpu:7.2f}"
        "   (lower is better; baseline does no WS, no download)"
    )
    typed = statistics.median(parse_rows["typed"])
    full = statistics.median(parse_rows["dispatch"])
    print(
        f"{'WS msgs/s, typed decode (parse_ws_message)':46} {typed:12,.0f} {bare:12,.0f} "
        f"{typed / bare:7.2f}   baseline: bare msgspec.json.decode"
    )
    print(
        f"{'WS msgs/s, decode + route to follower':46} {full:12,.0f} {bare_routed:12,.0f} "
        f"{full / bare_routed:7.2f}   target >= 0.50 (executed frame; baseline: its bare decode)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
