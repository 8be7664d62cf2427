"""``GET /api/v2/jobs/{id}/workflow`` answers what the job ran (QA6's F5): an input bound
to an asset keeps the ``core/ASSET`` reference to those bytes, so that a "run again" with
that workflow runs on them, not on whatever asset took the file name since; a
``/api/conjure/jobs`` job's image too (its graph held only the bundled placeholder)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from extras_support import open_extras_service, wait_idle
from PIL import Image
from service_helpers import in_thread, serving, workflow

from conjure_actors.domain import state as st


def _png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


RED, BLUE = _png("red"), _png("blue")


@pytest.mark.slow
async def test_a_run_again_from_a_jobs_workflow_runs_on_the_same_bytes(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """Red uploaded as same.png, a job on it, then blue uploaded as same.png: the job's
    workflow still names the red asset, and the job it makes again runs on red."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[Any, Any, Any, Any]:
            with sdk(served.url) as client:
                red = client.assets.from_bytes(RED, filename="same.png")
                wf = client.workflows.from_json(workflow("load_scale_blur_save.json"))
                wf.set_input("10", "image", red)
                first = client.submit(wf)
                first.result()
                client.assets.from_bytes(BLUE, filename="same.png")
                ran = first.get_workflow()
                again = client.submit(client.workflows.from_json(ran.graph))
                again.result()
                return red, first, ran, again

        with trio.fail_after(60):
            red, first, ran, again = await in_thread(use)
        jobs = served.service.state.jobs
        api_jobs = served.service.state.service.api_jobs
    assert ran.format == "api"
    assert ran.graph["10"]["inputs"]["image"] == {
        "__type": "core/ASSET",
        "info": {"id": red.id, "hash": red.hash, "file_path": "same.png"},
    }
    assert api_jobs[again.id].input_assets == {"10.image": red.id}
    assert again.status == "succeeded"
    sent = {f.sha256 for f in jobs[again.id].inputs}
    assert sent == {f.sha256 for f in jobs[first.id].inputs}  # the same bytes reached ComfyUI


async def test_a_run_again_after_its_input_asset_was_deleted_is_missing_asset(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The reference names the asset, not a file name: once it is gone, 422 missing_asset
    (honest), not a run on another upload of the same name."""

    async def upload(data: bytes) -> httpx.Response:
        return await run.client.post(
            "/api/v2/assets",
            files={"file": ("in.png", data, "image/png")},
            data={"content_type": "image/png", "file_path": "heldout_input.png"},
        )

    async with open_extras_service(tmp_path) as run:
        up = await upload(RED)
        graph = workflow("load_scale_blur_save.json")  # LoadImage names heldout_input.png
        job = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert job.status_code == 201, job.text
        await wait_idle(run.service)
        job_id = job.json()["id"]
        ran = (await run.client.get(f"/api/v2/jobs/{job_id}/workflow")).json()["workflow"]
        deleted = await run.client.delete(f"/api/v2/assets/{up.json()['id']}")
        await upload(BLUE)
        again = await run.client.post("/api/v2/jobs", json={"workflow": ran})
    assert ran["10"]["inputs"]["image"]["info"]["id"] == up.json()["id"]
    assert deleted.status_code == 204
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "missing_asset"


@pytest.mark.slow
async def test_a_conjure_jobs_workflow_names_the_image_it_ran_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """POST /api/conjure/jobs: the workflow's image input is the asset of the uploaded
    image (its content is those bytes), and submitting that workflow runs on them."""
    async with open_extras_service(tmp_path) as run:
        job = await run.client.post(
            "/api/conjure/jobs",
            files={"image": ("image.png", RED, "image/png")},
            data={"prompt": "a fox"},
        )
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        ran = (await run.client.get(f"/api/v2/jobs/{job_id}/workflow")).json()["workflow"]
        refs = {
            f"{nid}.{name}": value["info"]
            for nid, node in ran.items()
            for name, value in node["inputs"].items()
            if isinstance(value, dict) and value.get("__type") == "core/ASSET"
        }
        assert len(refs) == 1
        ((binding, info),) = refs.items()
        content = await run.client.get(f"/api/v2/assets/{info['id']}/content")
        again = await run.client.post("/api/v2/jobs", json={"workflow": ran})
        api_jobs = run.service.state.service.api_jobs
        assert again.status_code == 201, again.text
        await wait_idle(run.service)
        jobs = run.service.state.jobs
    assert content.content == RED
    assert content.headers["content-type"] == "image/png"
    assert api_jobs[job_id].input_assets == {binding: info["id"]}
    assert api_jobs[again.json()["id"]].input_assets == {binding: info["id"]}
    assert jobs[again.json()["id"]].status == st.SUCCEEDED
    assert jobs[again.json()["id"]].image_sha256 == jobs[job_id].image_sha256
