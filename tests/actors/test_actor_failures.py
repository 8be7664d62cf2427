"""Issue 14, the WorkflowActor side: a retry that cannot help is not made, an interrupt from
another client ends the job cancelled, outputs dropped by node errors fail the job,
SaveImageWebsocket images are outputs; each against the simulated cloud under MockClock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings

GRAPH = json.loads(bundled_workflow())
WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


def _events(log: eventlog.MemoryLog[Any], name: str) -> list[Any]:
    return [r.event for r in log.records() if type(r.event).__name__ == name]


async def _run_one(tmp_path: Path, graph: dict[str, Any], **submit: Any) -> tuple[Any, Any]:
    """Run one job to its end; (its final state, the log)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(graph, **submit)
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        return conjure.state.jobs[job], log


async def test_a_deterministic_node_error_is_not_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """An input LoadImage cannot decode fails the job on its first attempt, naming the node."""
    job, log = await _run_one(tmp_path, GRAPH, image=b"not an image at all", prompt="x")
    assert job.status == "failed"
    assert job.attempt == 1
    assert _events(log, "JobRetrying") == []
    assert job.error.error_type == "ExecutionFailed"
    assert "node 16 (LoadImage)" in job.error.message
    assert "UnidentifiedImageError" in job.error.message


async def test_an_out_of_memory_node_error_is_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A node out of memory may pass on another attempt: it is retried."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    faults = ComfyFaults(node_error_classes=frozenset({"VAEDecode"}))
    async with (
        open_test_cloud(wall.now, comfy_faults=faults) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert state.status == "failed"
    assert len(_events(log, "JobRetrying")) >= 1
    assert state.error is not None
    assert state.error.error_type == "RetriesExhausted"


async def test_an_interrupt_from_another_client_cancels_the_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A POST /interrupt by someone else (the web UI) ends the job cancelled, saying so;
    the prompt is not submitted again."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with (
        open_test_cloud(wall.now, timings=ComfyTimings(scale=200.0)) as cloud,
        run_conjure(cloud, log, tmp_path, sim_config(cloud), wall) as conjure,
    ):
        job = await conjure.submit(GRAPH, image=example_sketch_png(), prompt="x")
        with trio.fail_after(3600):
            await wait_for(conjure, lambda s: s.jobs[job].execution == "started")
        sim = cloud.machine_sim(conjure.state.jobs[job].server_id)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sim.asgi), base_url="http://comfy"
        ) as web_ui:
            assert (await web_ui.post("/interrupt", content=b"")).status_code == 200
        with trio.fail_after(3600):
            await conjure.wait_until_idle()
        state = conjure.state.jobs[job]
    assert state.status == "cancelled"
    assert state.cancel_reason is not None
    assert "interrupted on the server" in state.cancel_reason
    assert "not by this run" in state.cancel_reason
    assert len(_events(log, "PromptSubmitting")) == 1
    assert _events(log, "JobRetrying") == []


async def test_outputs_dropped_by_node_errors_fail_the_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A 200 answer to /prompt that lists node errors (one output dropped) fails the job with
    ComfyUI's reason, at once, instead of succeeding with fewer outputs."""
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "not_uploaded.png"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "b"}},
    }
    job, log = await _run_one(tmp_path, graph)
    assert job.status == "failed"
    assert job.error.error_type == "NodeErrors"
    assert "node 3 (LoadImage)" in job.error.message
    assert "Invalid image file: not_uploaded.png" in job.error.message, job.error.message
    assert job.attempt == 1
    assert _events(log, "JobRetrying") == []
    assert job.outputs == []


async def test_save_image_websocket_frames_are_saved_as_outputs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The images a SaveImageWebsocket node sends as binary frames are saved as files under
    OUT/<job>/websocket/ and count as the job's outputs."""
    graph = json.loads((WORKFLOWS / "ws_preview.json").read_text())
    job, _ = await _run_one(tmp_path, graph)
    assert job.status == "succeeded", job.error
    assert len(job.outputs) == 2  # batch_size 2
    for output in job.outputs:
        path = Path(output.path)
        assert path.parent == tmp_path / job.job_id / "websocket"
        head = await trio.to_thread.run_sync(path.read_bytes)
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert output.node_id == "2"
