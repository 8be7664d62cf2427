"""An asset given where it cannot go is refused at submission, before any machine (QA F11):
an input whose name holds a dot was a 500, and an asset where only a link will do (a save
node's ``images``) took a machine, then failed on that machine's catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio.testing
from extras_support import open_extras_service, png

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def _submit_with(tmp_path: Path, change: Any) -> tuple[Any, int]:
    """POST load_scale_blur_save with ``change(graph, asset ref)`` applied; the answer and
    the jobs recorded."""
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    async with open_extras_service(tmp_path) as run:
        up = await run.client.post(
            "/api/v2/assets",
            data={"content_type": "image/png", "file_path": "in.png"},
            files={"file": ("in.png", png(), "image/png")},
        )
        assert up.status_code == 201, up.text
        ref = {"__type": "core/ASSET", "info": {"id": up.json()["id"]}}
        graph["10"]["inputs"]["image"] = ref
        change(graph, ref)
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        return r, len(run.service.state.jobs)


async def test_an_asset_in_an_input_whose_name_holds_a_dot_is_422(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    r, jobs = await _submit_with(tmp_path, lambda g, ref: g["10"]["inputs"].update({"x.y": ref}))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_workflow"), r.text
    assert "'x.y'" in r.json()["error"]["message"]
    assert jobs == 0


async def test_an_asset_where_only_a_link_will_do_is_422_before_a_machine(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def save_the_asset(graph: Any, ref: Any) -> None:
        graph["99"] = {"class_type": "SaveImage", "inputs": {"images": ref, "filename_prefix": "x"}}

    r, jobs = await _submit_with(tmp_path, save_the_asset)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_workflow"), r.text
    (found,) = r.json()["error"]["details"]["node_errors"]["99"]
    assert found["field"] == "images"
    assert jobs == 0
