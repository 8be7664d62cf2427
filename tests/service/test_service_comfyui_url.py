"""``serve --comfyui-url``: the job service in front of a ComfyUI (our simulator on
loopback), driven by comfy-sdk: no machines, the jobs run on that ComfyUI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import in_thread, serving, workflow

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.config import load_config
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.serve import ServedComfyUI, serve_comfyui

pytestmark = pytest.mark.slow


async def test_sdk_job_with_an_asset_runs_on_the_given_comfyui(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """An uploaded image and a workflow submitted with comfy-sdk run on the ComfyUI the
    service fronts; the input reached it and the output downloads."""
    async with trio.open_nursery() as nursery:
        comfy: ServedComfyUI = await nursery.start(serve_comfyui, ComfyUISim())
        config = load_config(config_file=None, flags={"comfyui_url": comfy.url})
        async with serving(config, tmp_path) as served:
            assert served.service.mode == "comfyui"

            def use() -> tuple[Any, bytes]:
                with sdk(served.url) as client:
                    image = client.assets.from_bytes(example_sketch_png(), filename="s.png")
                    wf = client.workflows.from_json(workflow("load_scale_blur_save.json"))
                    wf.set_input("10", "image", image)
                    job = client.submit(wf, metadata={"via": "comfyui"})
                    job.result()
                    return job, job.outputs[0].to_bytes()

            with trio.fail_after(60):
                job, data = await in_thread(use)
            machines = served.service.state.machines
        nursery.cancel_scope.cancel()
    assert job.status == "succeeded"
    assert data.startswith(b"\x89PNG")
    assert [m.kind for m in machines.values()] == ["comfyui"]
    assert len(comfy.sim.prompts_run) == 1


async def test_unknown_node_is_refused_from_the_comfyuis_catalog(
    sim_config: Any, tmp_path: Path
) -> None:
    """With --comfyui-url, submissions are checked against that ComfyUI's /object_info:
    an unknown class is 422 invalid_workflow before anything runs."""
    graph = workflow("invert_save.json")
    graph["2"]["class_type"] = "NotInThisComfyUI"
    async with trio.open_nursery() as nursery:
        comfy: ServedComfyUI = await nursery.start(serve_comfyui, ComfyUISim())
        config = load_config(config_file=None, flags={"comfyui_url": comfy.url})
        async with serving(config, tmp_path) as served, httpx.AsyncClient() as http:
            answer = await http.post(f"{served.url}/api/v2/jobs", json={"workflow": graph})
            jobs = dict(served.service.state.jobs)
        nursery.cancel_scope.cancel()
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_workflow"
    assert jobs == {}
    assert comfy.sim.prompts_run == []
