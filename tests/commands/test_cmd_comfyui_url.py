"""``run --comfyui-url`` and ``status --comfyui-url`` as subprocesses against a ComfyUI
simulator the test serves on loopback: a ComfyUI the user runs, no machines, no cost."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import eventlog
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.serve import ServedComfyUI, serve_comfyui

pytestmark = pytest.mark.slow


@asynccontextmanager
async def served_comfyui() -> AsyncIterator[ServedComfyUI]:
    async with trio.open_nursery() as nursery:
        served: ServedComfyUI = await nursery.start(serve_comfyui, ComfyUISim())
        yield served
        nursery.cancel_scope.cancel()


def _env() -> dict[str, str]:
    """No RunComfy credentials and no config from the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}


async def _cli(cwd: Path, *args: str) -> Any:
    return await trio.run_process(
        [sys.executable, "-m", "conjure_actors", *args],
        cwd=cwd,
        env=_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_run_on_a_users_comfyui(tmp_path: Path) -> None:
    """The example job runs on the given ComfyUI: both outputs, no machine launched, no
    cost, and the prompt ran exactly once on that ComfyUI."""
    async with served_comfyui() as comfy:
        with trio.fail_after(120):
            proc = await _cli(
                tmp_path, "run", "--json", "--comfyui-url", comfy.url, "--log", "r.log"
            )
        ran = list(comfy.sim.prompts_run)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "jobs: 1 (1 succeeded" in err
    assert "cost: $0.00" in err
    files = sorted(p.suffix for p in (tmp_path / "out").glob("job-*/**/*") if p.is_file())
    assert files == [".glb", ".png"]
    state = eventlog.fold(eventlog.read(tmp_path / "r.log", Event), apply, initial_state())
    assert [(m.kind, m.cost_micros) for m in state.machines.values()] == [("comfyui", 0)]
    assert state.launch_requests == {}
    assert len(ran) == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not any(line.get("type", "").startswith("machine.launch") for line in lines)


async def test_run_with_an_unreachable_comfyui_is_one_line(tmp_path: Path) -> None:
    """A ComfyUI that does not answer: one line naming the problem, non-zero exit."""
    url = _closed_port_url()
    with trio.fail_after(120):
        proc = await _cli(tmp_path, "run", "--comfyui-url", url, "--log", "r.log")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: the ComfyUI at {url} does not answer GET /system_stats (no connection):"
        " is it running?"
    )
    assert not (tmp_path / "r.log").exists()  # nothing to resume: the retry is not refused


async def test_run_with_a_query_in_the_comfyui_url_is_one_line_that_hides_it(
    tmp_path: Path,
) -> None:
    """``?token=...``: refused in one line before anything starts; the token is not shown."""
    url = _closed_port_url()
    with trio.fail_after(120):
        proc = await _cli(
            tmp_path, "run", "--comfyui-url", url + "/?token=s3cr3t", "--log", "r.log"
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.startswith("error: --comfyui-url: a query"), err
    assert err.count("\n") == 1, err
    assert "s3cr3t" not in err + proc.stdout.decode()


async def test_run_on_a_wrong_path_names_the_status_and_the_path(tmp_path: Path) -> None:
    """A ComfyUI that answers 404 under the given path prefix: the line names the status
    and the path it asked for (not a class name, not "is it running?")."""
    async with served_comfyui() as comfy:
        with trio.fail_after(120):
            proc = await _cli(
                tmp_path, "run", "--comfyui-url", comfy.url + "/comfy", "--log", "r.log"
            )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"error: the ComfyUI at {comfy.url} answered GET /comfy/system_stats with HTTP 404:"
    ), err
    assert "Error" not in last


async def test_status_of_a_users_comfyui(tmp_path: Path) -> None:
    """``status --comfyui-url``: its version, devices and an empty queue."""
    async with served_comfyui() as comfy:
        with trio.fail_after(60):
            proc = await _cli(tmp_path, "status", "--comfyui-url", comfy.url)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("ComfyUI ")
    assert "device " in out
    assert "queue: 0 running, 0 pending" in out


async def test_status_of_an_unreachable_comfyui_is_one_line(tmp_path: Path) -> None:
    """``status`` of a ComfyUI that does not answer: one line, non-zero exit."""
    url = _closed_port_url()
    with trio.fail_after(60):
        proc = await _cli(tmp_path, "status", "--comfyui-url", url)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"error: the ComfyUI at {url} does not answer GET /system_stats (no connection):"
        " is it running?"
    ]


WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


async def test_an_interrupt_from_the_web_ui_cancels_the_job(tmp_path: Path) -> None:
    """Someone else interrupts the running prompt (the web UI's POST /interrupt): the job
    ends cancelled, the summary says so, the prompt is not submitted again; exit 1."""
    import subprocess

    import httpx

    from conjure_actors.sim.comfyui import ComfyTimings

    sim = ComfyUISim(timings=ComfyTimings(scale=5.0))
    async with trio.open_nursery() as nursery:
        comfy: ServedComfyUI = await nursery.start(serve_comfyui, sim)
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "conjure_actors", "run", "--json", "--comfyui-url", comfy.url],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        out = b""
        err = b""

        async def drain_stderr() -> None:
            nonlocal err
            assert proc.stderr is not None
            async for chunk in proc.stderr:
                err += chunk

        nursery.start_soon(drain_stderr)
        with trio.fail_after(120):
            async for chunk in proc.stdout:  # the run says when the prompt runs
                out += chunk
                if b'"type":"exec.started"' in out:
                    break
            async with httpx.AsyncClient() as web_ui:
                response = await web_ui.post(comfy.url + "/interrupt", content=b"")
            assert response.status_code == 200
            async for chunk in proc.stdout:
                out += chunk
            code = await proc.wait()
        nursery.cancel_scope.cancel()
    text = err.decode()
    assert code == 1, text
    assert "Traceback" not in text
    assert "jobs: 1 (0 succeeded, 0 failed, 1 cancelled)" in text
    assert "cancelled: interrupted on the server" in text
    assert "not by this run" in text
    assert len(sim.prompts_run) == 1
    errors = [r for r in map(json.loads, out.decode().splitlines()) if r["type"] == "run.error"]
    assert [e["status"] for e in errors] == ["cancelled"]


async def test_save_image_websocket_images_are_saved(tmp_path: Path) -> None:
    """A workflow whose output is a SaveImageWebsocket node: its images (binary frames) are
    saved under OUT/<job>/websocket/ and counted; exit 0."""
    async with served_comfyui() as comfy:
        with trio.fail_after(120):
            proc = await _cli(
                tmp_path,
                "run",
                "--json",
                "--comfyui-url",
                comfy.url,
                "--log",
                "r.log",
                str(WORKFLOWS / "ws_preview.json"),
            )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "outputs: 2 files" in err
    saved = sorted((tmp_path / "out").glob("job-*/websocket/*.png"))
    assert [p.name for p in saved] == ["2_00000.png", "2_00001.png"]


async def test_outputs_dropped_by_node_errors_fail_the_run(tmp_path: Path) -> None:
    """ComfyUI answers 200 but lists a node error that drops one of two outputs: the job
    fails with ComfyUI's reason instead of succeeding with one file; exit 1."""
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "heldout_broken.png"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "b"}},
    }
    (tmp_path / "two.json").write_text(json.dumps(graph))
    async with served_comfyui() as comfy:
        with trio.fail_after(120):
            proc = await _cli(
                tmp_path, "run", "--json", "--comfyui-url", comfy.url, "--log", "r.log", "two.json"
            )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if " failed: " in x)
    assert "NodeErrors" in line
    assert "node 3 (LoadImage)" in line
    assert "Invalid image file: heldout_broken.png" in line
