"""A save node's ``filename_prefix`` outside the output folder is 422 ``invalid_workflow`` at
submission, naming the node and input (QA F9: it was a 201, a whole paid run, then
``unsafe_output_name``), on the v2 API and on the front end's call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio.testing
from extras_support import open_extras_service, png

from conjure_actors.actors.example import bundled_workflow

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_a_v2_job_saving_outside_the_output_folder_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    save = next(n for n, node in graph.items() if node["class_type"] == "SaveImage")
    graph[save]["inputs"]["filename_prefix"] = "../x"
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        jobs = len(run.service.state.jobs)
    assert r.status_code == 422, r.text
    error: Any = r.json()["error"]
    assert error["code"] == "invalid_workflow"
    (found,) = error["details"]["node_errors"][save]
    assert found["field"] == "filename_prefix"
    assert jobs == 0


async def test_the_front_end_s_set_saving_outside_the_output_folder_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    graph = json.loads(bundled_workflow())
    save = next(n for n, node in graph.items() if node["class_type"] == "SaveImage")
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("sketch.png", png(), "image/png")},
            data={"prompt": "a fox", "set": [f"{save}.filename_prefix=ok/../../x"]},
        )
        jobs = len(run.service.state.jobs)
    assert r.status_code == 422, r.text
    assert "filename_prefix" in json.dumps(r.json()["error"]["details"])
    assert jobs == 0
