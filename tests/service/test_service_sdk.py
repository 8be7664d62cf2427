"""comfy-sdk end to end against ``serve`` on the embedded simulated cloud: every v2 endpoint
as a user's program drives it (the SDK refuses responses that do not match the spec)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import in_thread, serving, workflow

from conjure_actors.actors.example import example_sketch_png

pytestmark = pytest.mark.slow

PNG = example_sketch_png()


async def test_submit_runs_the_job_and_its_output_downloads(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """A submitted workflow ends succeeded with its labels; its output is a blake3 asset."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[Any, bytes, dict[str, str]]:
            with sdk(served.url) as client:
                wf = client.workflows.from_json(workflow("invert_save.json"))
                job = client.submit(wf, metadata={"client": "tests"})
                job.result()
                out = job.outputs[0]
                return job, out.to_bytes(), job.metadata

        with trio.fail_after(60):
            job, data, labels = await in_thread(use)
    assert job.status == "succeeded"
    assert labels == {"client": "tests"}
    assert data.startswith(b"\x89PNG")
    assert job.outputs[0].job_id == job.id
    assert job.outputs[0].node_id == "3"


async def test_uploaded_asset_feeds_load_image(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """A core/ASSET reference in LoadImage is resolved and its bytes reach the machine."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[Any, str]:
            with sdk(served.url) as client:
                image = client.assets.from_bytes(PNG, filename="sketch.png")
                wf = client.workflows.from_json(workflow("load_scale_blur_save.json"))
                wf.set_input("10", "image", image)
                job = client.submit(wf)
                job.result()
                return job, image.hash

        with trio.fail_after(60):
            job, digest = await in_thread(use)
        record = served.service.state.jobs[job.id]
        assert record.inputs, "the input image was uploaded to the machine"
    assert job.status == "succeeded"
    assert digest.startswith("blake3:")


async def test_plain_filename_in_load_image_resolves_to_the_asset(
    sim_config: Any, tmp_path: Path
) -> None:
    """A LoadImage input naming an uploaded asset's file_path runs with that asset."""
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        up = await http.post(
            f"{served.url}/api/v2/assets",
            files={"file": ("in.png", PNG, "image/png")},
            data={"content_type": "image/png", "file_path": "heldout_input.png"},
        )
        assert up.status_code == 201
        answer = await http.post(
            f"{served.url}/api/v2/jobs", json={"workflow": workflow("load_scale_blur_save.json")}
        )
        assert answer.status_code == 201
        job_id = answer.json()["id"]
        assert served.service.state.service.api_jobs[job_id].input_assets == {
            "10.image": up.json()["id"]
        }


async def test_upload_dedups_and_from_hash_mints_over_the_blob(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """The same bytes twice: 201 then 200 over one blob; from-hash and HEAD by-hash agree."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[Any, Any, bool, Any, bool]:
            with sdk(served.url) as client:
                low = client._low
                first = low.post_assets(_stream(PNG), "image/png", "a.png")
                second = low.post_assets(_stream(PNG), "image/png", "b.png")
                present = low.head_asset_by_hash(first.hash)
                minted = low.asset_from_hash(first.hash, file_path="c.png")
                absent = low.head_asset_by_hash("blake3:" + "0" * 64)
                return first, second, present, minted, absent

        with trio.fail_after(30):
            first, second, present, minted, absent = await in_thread(use)
        blobs = list((tmp_path / "serve.log.blobs" / "blobs").iterdir())
    assert first.created_new is True
    assert second.created_new is False
    assert first.hash == second.hash == minted.hash
    assert len({first.id, second.id, minted.id}) == 3
    assert present is True
    assert absent is False
    assert len([b for b in blobs if not b.name.startswith(".")]) == 1


async def test_asset_content_serves_ranges(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """Content: whole (200), a range (206), an unsatisfiable range (416)."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[Any, bytes, bytes]:
            with sdk(served.url) as client:
                asset = client._low.post_assets(_stream(PNG), "image/png", "a.png")
                with client._low.get_asset_content(asset.id) as whole:
                    full = whole.read()
                with client._low.get_asset_content(asset.id, range=(1, 3)) as part:
                    assert part.status_code == 206
                    piece = part.read()
                return asset, full, piece

        with trio.fail_after(30):
            asset, full, piece = await in_thread(use)
        async with httpx.AsyncClient() as http:
            bad = await http.get(
                f"{served.url}/api/v2/assets/{asset.id}/content",
                headers={"Range": f"bytes={len(PNG) + 10}-"},
            )
    assert full == PNG
    assert piece == PNG[1:4]
    assert bad.status_code == 416


async def test_deleted_asset_is_gone(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """Delete answers 204; the asset then reads 404 (not_found), and so does a second delete."""
    from comfy_sdk.exceptions import NotFound

    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[Any, bool, bool]:
            with sdk(served.url) as client:
                asset = client._low.post_assets(_stream(PNG), "image/png", "a.png")
                fetched = client.assets.get(asset.id)
                client.assets.delete(asset.id)
                with pytest.raises(NotFound):
                    client.assets.get(asset.id)
                with pytest.raises(NotFound):
                    client.assets.delete(asset.id)
                return fetched, True, True

        with trio.fail_after(30):
            fetched, _, _ = await in_thread(use)
        assert not served.service.state.service.assets
    assert fetched.id is not None


async def test_list_filters_by_label_and_honours_limit(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """list_jobs keeps the jobs whose labels match, newest first, paging by limit."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[list[str], list[str], list[str]]:
            with sdk(served.url) as client:
                wf = client.workflows.from_json(workflow("invert_save.json"))
                ids = [
                    client.submit(wf, metadata={"batch": "a" if i < 3 else "b"}).id
                    for i in range(5)
                ]
                a = [s.id for s in client.list_jobs(metadata={"batch": "a"}, limit=2)]
                everything = [s.id for s in client.list_jobs()]
                return ids, a, everything

        with trio.fail_after(60):
            ids, a, everything = await in_thread(use)
    assert a == list(reversed(ids[:3]))
    assert everything == list(reversed(ids))


async def test_job_workflow_is_the_api_graph(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """GET .../workflow answers format api with the graph that was submitted."""
    graph = workflow("invert_save.json")
    async with serving(sim_config, tmp_path) as served:

        def use() -> Any:
            with sdk(served.url) as client:
                job = client.submit(client.workflows.from_json(graph))
                return job.get_workflow()

        with trio.fail_after(30):
            got = await in_thread(use)
    assert got.format == "api"
    assert {nid: node["class_type"] for nid, node in got.graph.items()} == {
        nid: node["class_type"] for nid, node in graph.items()
    }


async def test_cancel_is_idempotent_and_ends_canceled(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """Cancel answers canceling (or canceled); the job ends canceled; again is a no-op."""
    async with serving(sim_config, tmp_path) as served:

        def use() -> tuple[str, str, str]:
            with sdk(served.url) as client:
                job = client.submit(client.workflows.from_json(workflow("slow_blur_chain.json")))
                first = job.cancel().status
                job.wait(timeout=30)
                again = job.cancel().status
                return first, job.status, again

        with trio.fail_after(60):
            first, final, again = await in_thread(use)
    assert first in ("canceling", "canceled")
    assert final == "canceled"
    assert again == "canceled"


async def test_events_stream_status_then_terminal_status(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """The SSE stream starts with a status snapshot and ends after the terminal status."""
    from comfy_sdk.events import OutputReady, StatusChange

    async with serving(sim_config, tmp_path) as served:

        def use() -> list[Any]:
            with sdk(served.url) as client:
                job = client.submit(client.workflows.from_json(workflow("invert_save.json")))
                return list(job.events())

        with trio.fail_after(60):
            seen = await in_thread(use)
    assert isinstance(seen[0], StatusChange)
    assert isinstance(seen[-1], StatusChange)
    assert seen[-1].status == "succeeded"
    assert any(isinstance(e, OutputReady) for e in seen)


def _stream(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


async def test_failed_job_carries_the_node_error(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """A job that fails at run time ends failed with error {code, message, node_id,
    class_type}; result() raises JobFailed. (ImageToMask asked for the "alpha" of an RGB
    image: a valid choice the pre-flight passes, an IndexError in ComfyUI's node.)"""
    from comfy_sdk.exceptions import JobFailed

    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    async with serving(sim_config, tmp_path) as served:

        def use() -> Any:
            with sdk(served.url) as client:
                job = client.submit(client.workflows.from_json(graph))
                with pytest.raises(JobFailed):
                    job.result()
                return job

        with trio.fail_after(60):
            job = await in_thread(use)
    assert job.status == "failed"
    assert job.error.node_id == "2"
    assert job.error.class_type == "ImageToMask"
    assert job.error.code == "node_execution_error"
    assert job.error.message


async def test_several_load_image_inputs_each_reach_the_machine(
    sim_config: Any, tmp_path: Path, sdk: Callable[[str], Any]
) -> None:
    """Two LoadImage nodes, each with its own asset: both files are uploaded before the
    prompt, bound into their node, and the job's two outputs come back."""
    from conjure_actors.sim.media import write_png

    other = write_png(48, 32, b"second input")
    graph = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "a"}},
        "20": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "b"}},
    }
    async with serving(sim_config, tmp_path) as served:

        def use() -> Any:
            with sdk(served.url) as client:
                wf = client.workflows.from_json(graph)
                wf.set_input("10", "image", client.assets.from_bytes(PNG, filename="a.png"))
                wf.set_input("20", "image", client.assets.from_bytes(other, filename="b.png"))
                job = client.submit(wf)
                job.result()
                return job, {o.node_id: o.to_bytes()[16:24] for o in job.outputs}

        with trio.fail_after(60):
            job, sizes = await in_thread(use)
        record = served.service.state.jobs[job.id]
    assert job.status == "succeeded"
    assert sorted(i.node_id for i in record.inputs) == ["10", "20"]
    assert sorted(sizes) == ["11", "21"]
    assert sizes["11"] != sizes["21"], "each LoadImage got its own file (their PNG sizes)"
