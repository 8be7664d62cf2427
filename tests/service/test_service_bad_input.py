"""Bad input to ``serve``: each gets its status and error code, and nothing is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest
import trio
from service_helpers import serving, workflow

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.service.app import Settings

pytestmark = pytest.mark.slow

PNG = example_sketch_png()


def _nothing_stored(served: Any) -> None:
    svc = served.service.state.service
    assert not served.service.state.jobs
    assert not svc.api_jobs
    assert not svc.assets
    assert not svc.idempotency


async def _post_job(http: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    return await http.post(f"{url}/api/v2/jobs", **kwargs)


async def test_non_json_body_is_invalid_request(sim_config: Any, tmp_path: Path) -> None:
    """A body that is not JSON: 400 invalid_request."""
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        answer = await _post_job(http, served.url, content=b"{not json")
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_request"
        _nothing_stored(served)


async def test_ui_format_workflow_is_refused(sim_config: Any, tmp_path: Path) -> None:
    """A UI-format export (nodes/links): 422 workflow_format_ui."""
    ui = {"nodes": [{"id": 1, "type": "LoadImage"}], "links": []}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        answer = await _post_job(http, served.url, json={"workflow": ui})
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "workflow_format_ui"
        _nothing_stored(served)


async def test_unknown_node_is_invalid_workflow_with_node_details(
    sim_config: Any, tmp_path: Path
) -> None:
    """An unknown node class: 422 invalid_workflow naming the node."""
    graph = workflow("invert_save.json")
    graph["2"]["class_type"] = "NoSuchNode"
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        answer = await _post_job(http, served.url, json={"workflow": graph})
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "invalid_workflow"
        assert "2" in error["details"]["node_errors"]
        _nothing_stored(served)


async def test_missing_asset_reference_is_refused(sim_config: Any, tmp_path: Path) -> None:
    """A core/ASSET reference to no asset: 422 missing_asset."""
    graph = workflow("load_scale_blur_save.json")
    graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": "nope"}}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        answer = await _post_job(http, served.url, json={"workflow": graph})
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "missing_asset"
        _nothing_stored(served)


async def test_unknown_plain_filename_is_missing_asset(sim_config: Any, tmp_path: Path) -> None:
    """A LoadImage filename no asset carries: 422 missing_asset."""
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        answer = await _post_job(
            http, served.url, json={"workflow": workflow("load_scale_blur_save.json")}
        )
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "missing_asset"
        _nothing_stored(served)


async def test_oversized_upload_is_refused(sim_config: Any, tmp_path: Path) -> None:
    """An upload past the limit: 413 payload_too_large, no blob kept."""
    settings = Settings(max_upload_bytes=1024)
    async with (
        serving(sim_config, tmp_path, settings=settings) as served,
        httpx.AsyncClient() as http,
    ):
        answer = await http.post(
            f"{served.url}/api/v2/assets",
            files={"file": ("big.bin", b"x" * 4096, "application/octet-stream")},
            data={"content_type": "application/octet-stream", "file_path": "big.bin"},
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "payload_too_large"
        _nothing_stored(served)
        blobs = tmp_path / "serve.log.blobs" / "blobs"
        assert not list(blobs.iterdir())


async def test_hash_mismatch_is_refused(sim_config: Any, tmp_path: Path) -> None:
    """An expected_hash that is not the bytes' blake3: 409 hash_mismatch, nothing minted."""
    wrong = "blake3:" + blake3.blake3(b"other bytes").hexdigest()
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        answer = await http.post(
            f"{served.url}/api/v2/assets",
            files={"file": ("a.png", PNG, "image/png")},
            data={"content_type": "image/png", "file_path": "a.png", "expected_hash": wrong},
        )
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "hash_mismatch"
        _nothing_stored(served)
        assert not list((tmp_path / "serve.log.blobs" / "blobs").iterdir())


async def test_a_field_of_a_newer_client_is_left_out_not_refused(
    sim_config: Any, tmp_path: Path
) -> None:
    """The contract's body is open ("additive changes only within v2"): an optional field a
    newer client sends is ignored (was 400 unknown fields); a reserved one is still refused."""
    body = {"workflow": workflow("invert_save.json"), "priority": 5}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        newer = await _post_job(http, served.url, json=body)
        reserved = await _post_job(http, served.url, json={**body, "webhook_url": "http://x"})
    assert newer.status_code == 201, newer.text
    assert reserved.status_code == 400
    assert "webhook_url" in reserved.json()["error"]["message"]


async def test_reused_idempotency_key_is_refused(sim_config: Any, tmp_path: Path) -> None:
    """The same Idempotency-Key twice: the second is 422 idempotency_key_reuse, one job."""
    body = {"workflow": workflow("invert_save.json")}
    headers = {"Idempotency-Key": "key-1"}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        first = await _post_job(http, served.url, json=body, headers=headers)
        second = await _post_job(http, served.url, json=body, headers=headers)
        assert first.status_code == 201
        assert second.status_code == 422
        assert second.json()["error"]["code"] == "idempotency_key_reuse"
        assert len(served.service.state.jobs) == 1


async def test_a_reused_job_key_is_refused_naming_the_job_it_made(
    sim_config: Any, tmp_path: Path
) -> None:
    """A submission sent again with its key (its answer was lost) is refused (single use, no
    replay) with the job the first one made in the details, which the client then polls."""
    body = {"workflow": workflow("invert_save.json")}
    headers = {"Idempotency-Key": "key-lost-answer"}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        first = await _post_job(http, served.url, json=body, headers=headers)
        second = await _post_job(http, served.url, json=body, headers=headers)
        assert first.status_code == 201, first.text
        details = second.json()["error"]["details"]
        polled = await http.get(served.url + details["url"])
    assert second.status_code == 422
    assert details["job_id"] == first.json()["id"]
    assert polled.status_code == 200
    assert polled.json()["id"] == first.json()["id"]


async def test_key_of_a_refused_submission_stays_free(sim_config: Any, tmp_path: Path) -> None:
    """A submission refused by validation does not claim its key: a fixed retry proceeds."""
    bad = workflow("invert_save.json")
    bad["2"]["class_type"] = "NoSuchNode"
    headers = {"Idempotency-Key": "key-2"}
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        refused = await _post_job(http, served.url, json={"workflow": bad}, headers=headers)
        fixed = await _post_job(
            http, served.url, json={"workflow": workflow("invert_save.json")}, headers=headers
        )
        assert refused.status_code == 422
        assert fixed.status_code == 201


async def test_unknown_job_and_asset_are_not_found(sim_config: Any, tmp_path: Path) -> None:
    """Unknown ids and unknown routes answer 404 not_found in the envelope."""
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:
        for path in ("/api/v2/jobs/nope", "/api/v2/assets/nope", "/api/v2/nowhere"):
            answer = await http.get(served.url + path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["code"] == "not_found"


async def test_full_queue_answers_429_with_retry_after(sim_config: Any, tmp_path: Path) -> None:
    """Past max_queue active jobs: 429 queue_full with Retry-After."""
    body = {"workflow": workflow("slow_blur_chain.json")}
    async with (
        serving(sim_config, tmp_path, settings=Settings(max_queue=1)) as served,
        httpx.AsyncClient() as http,
    ):
        with trio.fail_after(30):
            first = await _post_job(http, served.url, json=body)
            second = await _post_job(http, served.url, json=body)
        assert first.status_code == 201
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "queue_full"
        assert int(second.headers["retry-after"]) > 0


async def test_event_streams_past_the_cap_are_refused_and_slots_come_back(
    sim_config: Any, tmp_path: Path
) -> None:
    """With max_streams=1 a second stream is 429 too_many_streams; once the first ends,
    a new one is served."""
    body = {"workflow": workflow("invert_save.json")}
    async with (
        serving(sim_config, tmp_path, settings=Settings(max_streams=1)) as served,
        httpx.AsyncClient(timeout=60) as http,
    ):
        job = (await _post_job(http, served.url, json=body)).json()
        events = f"{served.url}{job['urls']['events']}"
        with trio.fail_after(60):
            async with http.stream("GET", events) as first:
                assert first.status_code == 200
                second = await http.get(events)
                async for _ in first.aiter_lines():
                    pass
            third = await http.get(events)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_streams"
    assert third.status_code == 200
    assert served.service.open_streams == 0


async def test_concurrent_duplicates_of_a_key_create_one_job(
    sim_config: Any, tmp_path: Path
) -> None:
    """20 concurrent submissions with one Idempotency-Key: one 201, nineteen 422, one job."""
    body = {"workflow": workflow("invert_save.json")}
    codes: list[int] = []
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient(timeout=60) as http:

        async def submit() -> None:
            answer = await _post_job(http, served.url, json=body, headers={"Idempotency-Key": "k"})
            codes.append(answer.status_code)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(submit)
        jobs = len(served.service.state.jobs)
    assert sorted(codes) == [201] + [422] * 19
    assert jobs == 1


async def test_reused_upload_key_is_refused_and_mints_nothing(
    sim_config: Any, tmp_path: Path
) -> None:
    """An upload's Idempotency-Key is single use: the second is 422, one asset, one blob."""
    async with serving(sim_config, tmp_path) as served, httpx.AsyncClient() as http:

        async def upload(data: bytes) -> httpx.Response:
            return await http.post(
                f"{served.url}/api/v2/assets",
                files={"file": ("a.bin", data, "application/octet-stream")},
                data={"content_type": "application/octet-stream", "file_path": "a.bin"},
                headers={"Idempotency-Key": "upload-1"},
            )

        first = await upload(b"first bytes")
        second = await upload(b"other bytes")
        assets = len(served.service.state.service.assets)
    assert first.status_code == 201
    assert second.status_code == 422
    assert second.json()["error"]["code"] == "idempotency_key_reuse"
    assert assets == 1
    assert len(list((tmp_path / "serve.log.blobs" / "blobs").iterdir())) == 1
