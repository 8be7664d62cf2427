"""The trace recorder and replayer (``conjure_actors.testing.trace``): a job replayed from a
recorded trace ends as the live run against the simulator did."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import msgspec
import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clients.comfyui_wire import parse_binary_frame
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import State
from conjure_actors.testing import HarnessSettings, open_simulated_conjure
from conjure_actors.testing.harness import seeded_ids
from conjure_actors.testing.trace import (
    Answer,
    Trace,
    _swap_binary,
    job_outcome,
    open_trace_cloud,
    record_trace,
)

LIGHT: dict[str, Any] = json.loads(bundled_workflow("invert_save.json"))
PID = "00000000-0000-4000-8000-000000000001"


async def _run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args)


@pytest.fixture(autouse=True)
def _no_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the autojump clock a task waiting on a worker thread counts as idle (mock time
    would leap to the stall timer while an output is fsynced): file work runs inline."""
    monkeypatch.setattr(trio.to_thread, "run_sync", _run_inline)


async def _replay(
    trace: Trace, out: Path, jobs: int = 1, **submit: Any
) -> tuple[State, list[str], int, eventlog.MemoryLog[Any]]:
    """``jobs`` jobs of the submitted workflow through the actors against ``trace``:
    (final state, job ids, frames handed out, the log)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, sync="none")
    async with open_trace_cloud([trace], wall=wall.now) as cloud:
        config = HarnessSettings(seed=1, max_machines=1).config(cloud)
        async with open_simulated_conjure(
            cloud, log, config, wall=wall, out_dir=out, seed=1, ids=seeded_ids(9)
        ) as conjure:
            ids = [await conjure.submit(submit.pop("graph", LIGHT), **submit) for _ in range(jobs)]
            await conjure.wait_until_idle()
            state = conjure.state
            await conjure.shutdown()
    return state, ids, cloud.delivered, log


async def test_a_replayed_job_ends_as_the_live_run_did(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Replayed from its trace, a job's final state (nodes, outputs...) equals the live one."""
    with trio.fail_after(600):
        trace, live = await record_trace(LIGHT, out_dir=tmp_path / "live", sets=["1.color=3"])
        state, ids, _, _ = await _replay(trace, tmp_path / "replay", sets=["1.color=3"])
    assert job_outcome(state, ids[0]) == job_outcome(live, next(iter(live.jobs)))
    assert state.jobs[ids[0]].status == "succeeded"


async def test_every_recorded_frame_is_handed_out_once_per_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Two replayed jobs on one machine take the hello frames once (one socket) and the
    trace's frames twice."""
    with trio.fail_after(600):
        trace, _ = await record_trace(LIGHT, out_dir=tmp_path / "live")
        _, ids, delivered, _ = await _replay(trace, tmp_path / "replay", jobs=2)
    assert len(ids) == 2
    assert delivered == len(trace.hello) + 2 * len(trace.frames)


async def test_each_replayed_job_follows_its_own_prompt_id(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Each replayed job's node events carry the prompt id it submitted, not the recorded one."""
    with trio.fail_after(600):
        trace, _ = await record_trace(LIGHT, out_dir=tmp_path / "live")
        state, ids, _, log = await _replay(trace, tmp_path / "replay", jobs=2)
    prompts = {state.jobs[j].prompt_id for j in ids}
    started = {r.event.prompt_id for r in log.records() if isinstance(r.event, ev.NodeStarted)}
    assert len(prompts) == 2
    assert trace.prompt_id not in prompts
    assert started == prompts


@pytest.mark.slow
async def test_a_long_progress_trace_replays_every_progress_frame_as_an_event(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The CONJURE workflow with a 28-step sampler: each progress frame becomes a NodeProgress
    event, and the job ends as the live one."""
    submit: dict[str, Any] = {
        "sets": ["20.steps=28"],
        "image": example_sketch_png(),
        "prompt": "a fox",
    }
    graph = json.loads(bundled_workflow())
    with trio.fail_after(600):
        trace, live = await record_trace(graph, out_dir=tmp_path / "live", **submit)
        state, ids, _, log = await _replay(trace, tmp_path / "replay", graph=graph, **submit)
    progress = [r for r in log.records() if isinstance(r.event, ev.NodeProgress)]
    assert trace.count("progress") >= 28
    assert len(progress) == trace.count("progress")
    assert job_outcome(state, ids[0]) == job_outcome(live, next(iter(live.jobs)))


def _tiny_trace() -> Trace:
    frames: tuple[str | bytes, ...] = tuple(
        json.dumps({"type": kind, "data": {"prompt_id": PID, **extra}})
        for kind, extra in (
            ("execution_start", {}),
            ("executing", {"node": "1"}),
            ("execution_success", {}),
            ("executing", {"node": None}),
        )
    )
    json_type = (("content-type", "application/json"),)
    history = json.dumps({PID: {"outputs": {}, "status": {"status_str": "success"}}}).encode()
    return Trace(
        prompt_id=PID,
        frames=frames,
        answers={
            "POST /prompt": Answer(200, json_type, json.dumps({"prompt_id": PID}).encode()),
            "GET /history/{prompt_id}": Answer(200, json_type, history),
        },
        done_index=2,
    )


async def test_history_is_written_once_the_outcome_frame_is_taken() -> None:
    """``/history/{id}`` answers ``{}`` until the socket handed out the prompt's outcome frame,
    then the recorded entry under the submitted prompt id."""
    new = "11111111-1111-4111-8111-111111111111"
    with trio.fail_after(10):
        async with open_trace_cloud([_tiny_trace()]) as cloud:
            url = cloud.comfyui("m0")
            async with (
                httpx.AsyncClient(transport=cloud.http_transport(), base_url=url) as http,
                cloud.ws_connect(url.replace("https", "wss") + "/ws?clientId=c1") as ws,
            ):
                answer = await http.post("/prompt", json={"prompt_id": new, "client_id": "c1"})
                assert answer.json() == {"prompt_id": new}
                seen = []
                for _ in range(3):
                    assert (await http.get(f"/history/{new}")).json() == {}
                    seen.append(msgspec.json.decode(await ws.get_message()))
                entry = (await http.get(f"/history/{new}")).json()
    assert [f["type"] for f in seen] == ["execution_start", "executing", "execution_success"]
    assert all(f["data"]["prompt_id"] == new for f in seen)
    assert list(entry) == [new]


@given(
    payload=st.binary(max_size=64),
    extra=st.dictionaries(st.sampled_from(["node_id", "image_type"]), st.text(max_size=12)),
    new=st.uuids().map(str),
    old=st.uuids().map(str),
)
def test_a_binary_preview_frame_gets_the_new_prompt_id(
    payload: bytes, extra: dict[str, str], new: str, old: str
) -> None:
    """An event-4 preview frame's metadata names the new prompt id; its image is unchanged."""
    meta = json.dumps({"prompt_id": old, **extra}).encode()
    frame = (4).to_bytes(4, "big") + len(meta).to_bytes(4, "big") + meta + payload
    swapped = parse_binary_frame(_swap_binary(frame, old, new))
    assert swapped.prompt_id == new
    assert swapped.data == payload
    assert swapped.node_id == extra.get("node_id")


async def test_a_stopped_machine_closes_its_sockets_and_refuses_new_ones() -> None:
    """Once a replaying machine stops, its open socket ends (ConnectionClosed) and neither
    its WebSocket nor its HTTP host answers any more."""
    with trio.fail_after(10):
        async with open_trace_cloud([_tiny_trace()]) as cloud:
            url = await cloud.start_machine("s1", "wv-core-nodes-1")
            ws_url = url.replace("https", "wss") + "/ws?clientId=c1"
            async with cloud.ws_connect(ws_url) as ws:
                await cloud.stop_machine("s1")
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await ws.get_message()
            with pytest.raises(ConnectionRefusedError):
                async with cloud.ws_connect(ws_url):
                    pass
            async with httpx.AsyncClient(transport=cloud.http_transport()) as http:
                with pytest.raises(httpx.ConnectError):
                    await http.get(url + "/system_stats")


def _node_events_of(frames: tuple[str | bytes, ...]) -> list[tuple[str, Any]]:
    """What each text frame of a trace becomes in the log, in the frames' order."""
    out: list[tuple[str, Any]] = []
    for frame in frames:
        if not isinstance(frame, str):
            continue
        kind, data = json.loads(frame)["type"], json.loads(frame)["data"]
        if kind == "execution_start":
            out.append(("ExecutionStarted", None))
        elif kind == "execution_cached":
            out.append(("NodeCached", tuple(data["nodes"])))
        elif kind == "executing" and data.get("node") is not None:
            out.append(("NodeStarted", data["node"]))
        elif kind == "progress" and data.get("node") is not None:
            out.append(("NodeProgress", (data["node"], data["value"])))
        elif kind == "executed":
            out.append(("NodeExecuted", data["node"]))
    return out


def _node_events_in(log: eventlog.MemoryLog[Any], job_id: str) -> list[tuple[str, Any]]:
    what: dict[type, Callable[[Any], Any]] = {
        ev.ExecutionStarted: lambda e: None,
        ev.NodeCached: lambda e: tuple(e.nodes),
        ev.NodeStarted: lambda e: e.node_id,
        ev.NodeProgress: lambda e: (e.node_id, e.value),
        ev.NodeExecuted: lambda e: e.node_id,
    }
    return [
        (type(r.event).__name__, what[type(r.event)](r.event))
        for r in log.records()
        if type(r.event) in what and r.event.job_id == job_id
    ]


async def test_a_flood_of_progress_frames_is_logged_in_order_one_event_each(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """100 progress frames between a node's start and its end (the job's actor takes them in
    batches): one event each, in the frames' order, among the other node events."""
    with trio.fail_after(600):
        trace, _ = await record_trace(LIGHT, out_dir=tmp_path / "live")
        frames = list(trace.frames)
        at = next(
            i
            for i, f in enumerate(frames)
            if isinstance(f, str) and '"executing"' in f and '"node": null' not in f
        )
        node = json.loads(frames[at])["data"]["node"]
        flood = [
            json.dumps(
                {
                    "type": "progress",
                    "data": {"value": v, "max": 100, "prompt_id": trace.prompt_id, "node": node},
                }
            )
            for v in range(1, 101)
        ]
        frames[at + 1 : at + 1] = flood
        done = trace.done_index % len(trace.frames) + len(flood)
        flooded = attrs.evolve(trace, frames=tuple(frames), done_index=done)
        _, ids, _, log = await _replay(flooded, tmp_path / "replay")
    logged = _node_events_in(log, ids[0])
    assert logged == _node_events_of(flooded.frames)
    assert sum(kind == "NodeProgress" for kind, _ in logged) >= 100
