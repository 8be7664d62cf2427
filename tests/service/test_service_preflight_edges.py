"""Serve pre-flight edges: node ids with dots, colons or parentheses, an asset deleted
during the image check, images Pillow reads that our header check does not know."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service, png
from service_helpers import workflow

import conjure_actors.service.v2_jobs as v2_jobs


def _tiff() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, "TIFF")
    return out.getvalue()


async def _upload(client: Any, data: bytes, name: str, ctype: str = "image/png") -> dict[str, Any]:
    r = await client.post(
        "/api/v2/assets",
        data={"content_type": ctype, "file_path": name},
        files={"file": (name, data, ctype)},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_node_errors_keyed_by_a_subgraph_node_id(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """ComfyUI's frontend exports a subgraph's inner nodes with ids like "57:35". A bad
    literal in one must be reported under node_errors["57:35"] with its field."""
    graph = workflow("invert_save.json")
    node = graph.pop("1")
    node["inputs"]["width"] = "abc"
    graph["57:35"] = node
    graph["2"]["inputs"]["image"] = ["57:35", 0]
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        node_errors = r.json()["error"]["details"]["node_errors"]
        assert list(node_errors) == ["57:35"], node_errors
        assert [e.get("field") for e in node_errors["57:35"]] == ["width"]


async def test_node_errors_keyed_by_a_node_id_with_parentheses(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A plain printable id with spaces (claimed supported by ff00576) and parentheses."""
    graph = workflow("invert_save.json")
    node = graph.pop("1")
    node["inputs"]["width"] = "abc"
    graph["source (copy)"] = node
    graph["2"]["inputs"]["image"] = ["source (copy)", 0]
    async with open_extras_service(tmp_path) as run:
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 422, r.text
        node_errors = r.json()["error"]["details"]["node_errors"]
        assert list(node_errors) == ["source (copy)"], node_errors


async def test_v2_job_over_a_tiff_asset_is_accepted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """ComfyUI's LoadImage opens any image Pillow reads (TIFF included); before aefe740 the
    service accepted it. The pre-flight now refuses it (422)."""
    graph = workflow("load_scale_blur_save.json")
    async with open_extras_service(tmp_path) as run:
        asset = await _upload(run.client, _tiff(), "scan.tif", "image/tiff")
        graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 201, r.text


async def test_asset_deleted_during_the_image_check_is_missing_asset_not_500(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: Any
) -> None:
    """Two LoadImage assets; the second is deleted while the first one's header is read in
    a thread: the submission must be a typed 4xx (missing_asset), not a 500 KeyError."""
    graph = workflow("load_scale_blur_save.json")
    graph["20"] = {"class_type": "LoadImage", "inputs": {"image": "x"}}
    graph["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    reading = trio.Event()
    deleted = trio.Event()
    inline = trio.to_thread.run_sync  # tests run "threads" inline (tests/conftest.py)

    async def slow_run_sync(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn is v2_jobs._read_image_problem:  # the header read: slow disk
            reading.set()
            await deleted.wait()
        return await inline(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", slow_run_sync)
    async with open_extras_service(tmp_path) as run:
        first = await _upload(run.client, png(), "a.png")
        second = await _upload(run.client, png() + b"x", "b.png")  # other bytes: other hash
        graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": first["id"]}}
        graph["20"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": second["id"]}}
        answers: list[Any] = []

        async def submit() -> None:
            answers.append(await run.client.post("/api/v2/jobs", json={"workflow": graph}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await reading.wait()
            d = await run.client.delete(f"/api/v2/assets/{second['id']}")
            assert d.status_code == 204, d.text
            deleted.set()
        (r,) = answers
        assert r.status_code < 500, r.text


async def test_v2_job_with_a_dotted_node_id_holding_an_asset_is_not_500(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Node ids are any string in API format; a LoadImage with id "10.a" over an asset:
    bindings are "NODE.INPUT" split at the FIRST dot (_without, check_input_images)."""
    graph = workflow("load_scale_blur_save.json")
    node = graph.pop("10")
    graph["10.a"] = node
    for other in graph.values():
        for name, value in other["inputs"].items():
            if value == ["10", 0]:
                other["inputs"][name] = ["10.a", 0]
    async with open_extras_service(tmp_path) as run:
        asset = await _upload(run.client, png(), "a.png")
        node["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
        r = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        assert r.status_code == 201, r.text
