"""Comfy API v2 assets when requests race, and what holds them: an asset is recorded only
over bytes still stored (only the AssetActor removes a blob, and it re-checks the blob as it
records), so a 2xx always means the bytes can be read; a job's output goes with its job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for, wait_idle
from hypothesis import example, given
from hypothesis import strategies as hs
from multipart_support import post_multipart

import eventlog
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.service.v2_assets import _byte_range, _range_spec

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def _hold_deletes(service: Any) -> trio.Event:
    """Hold the append of an AssetDeleted (a slow fsync) until the event is set."""
    release = trio.Event()
    journal: Any = service.journal
    append = journal.append

    async def held(event: Any) -> Any:
        if isinstance(event, se.AssetDeleted):
            await release.wait()
        return await append(event)

    journal.append = held
    return release


async def _upload(client: Any, data: bytes, name: str) -> Any:
    return await client.post(
        "/api/v2/assets",
        data={"content_type": "application/octet-stream", "file_path": name},
        files={"file": (name, data, "application/octet-stream")},
    )


async def _race(run: Any, second: Any) -> tuple[Any, Any]:
    data = b"the only copy of these bytes"
    first = await _upload(run.client, data, "a.bin")
    assert first.status_code == 201, first.text
    asset_a, hash_text = first.json()["id"], first.json()["hash"]
    release = _hold_deletes(run.service)
    answers: dict[str, Any] = {}

    async def delete() -> None:
        answers["delete"] = await run.client.delete(f"/api/v2/assets/{asset_a}")

    async def other() -> None:
        answers["other"] = await second(run.client, data, hash_text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(delete)
        await trio.sleep(0.01)  # the DELETE's append is in flight
        nursery.start_soon(other)
        await trio.sleep(0.01)
        release.set()
    assert answers["delete"].status_code == 204
    return answers["other"], hash_text


async def _check_new_asset(run: Any, answer: Any, hash_text: str) -> None:
    asset_id = answer.json()["id"]
    head = await run.client.head(f"/api/v2/assets/by-hash/{hash_text}")
    content = None
    try:
        content = await run.client.get(f"/api/v2/assets/{asset_id}/content")
    except Exception as exc:  # the app raised mid-body
        content = exc
    assert head.status_code == 200
    # The promise of the 2xx: the asset's bytes are stored.
    assert run.service.blobs.has(hash_text), (
        f"{answer.status_code} for asset {asset_id} but its blob is gone; content -> {content!r}"
    )


async def test_from_hash_racing_the_delete_of_the_last_asset(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async def from_hash(client: Any, data: bytes, hash_text: str) -> Any:
        return await client.post("/api/v2/assets/from-hash", json={"hash": hash_text})

    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer, hash_text = await _race(run, from_hash)
            # The delete won: 404 blob_not_found; or a 201 whose bytes are stored.
            if answer.status_code != 404:
                assert answer.status_code == 201, answer.text
                await _check_new_asset(run, answer, hash_text)


async def test_dedup_upload_racing_the_delete_of_the_last_asset(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async def upload(client: Any, data: bytes, hash_text: str) -> Any:
        return await _upload(client, data, "b.bin")

    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer, hash_text = await _race(run, upload)
            assert answer.status_code in (200, 201), answer.text
            await _check_new_asset(run, answer, hash_text)


async def test_delete_racing_a_download(tmp_path: Path, autojump_clock: Any) -> None:
    """GET content checks the record, answers 200 with its Content-Length, and opens the blob
    only as the body starts; a DELETE whose append lands in between removes the blob: the
    client gets a 200 head and then a broken body (the app raises FileNotFoundError)."""
    data = b"x" * 5000
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            first = await _upload(run.client, data, "a.bin")
            asset_id = first.json()["id"]
            release = _hold_deletes(run.service)
            sent: list[dict[str, Any]] = []
            raised: list[BaseException] = []

            asked: list[bool] = []
            finished = trio.Event()

            async def receive() -> dict[str, Any]:
                if not asked:
                    asked.append(True)
                    return {"type": "http.request", "body": b"", "more_body": False}
                await finished.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    finished.set()
                if message["type"] == "http.response.start":
                    release.set()  # the DELETE's fsync ends while the head goes out
                    await trio.sleep(0.01)

            path = f"/api/v2/assets/{asset_id}/content"
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"127.0.0.1:8189")],
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8189),
                "state": {},
            }
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.client.delete, f"/api/v2/assets/{asset_id}")
                await trio.sleep(0.001)  # the DELETE's append is in flight
                try:
                    await run.app(scope, receive, send)
                except Exception as exc:
                    raised.append(exc)
                finished.set()
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    # Either the asset is gone (404) or the client gets every byte the head announced.
    assert start["status"] == 404 or body == data, (start["status"], len(body), raised)


async def test_a_refused_upload_removes_the_blob_a_concurrent_upload_is_recorded_over(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Upload B (a reused Idempotency-Key: 422) created blob X; upload C of the same bytes
    found X stored (created False) and is recorded right after B's refusal. B's handler
    removes X ('created and not in blob_refs') before C's AssetRecorded is applied: C is
    answered 201 over a blob that is gone. (The same removal runs on a hash_mismatch 409.)"""
    data = b"bytes B and C both upload"
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            client = run.client
            first = await client.post(
                "/api/v2/assets",
                data={"content_type": "application/octet-stream", "file_path": "e.bin"},
                files={"file": ("e.bin", b"other bytes", "application/octet-stream")},
                headers={"Idempotency-Key": "K"},
            )
            assert first.status_code == 201
            dummy = (await _upload(client, b"dummy", "d.bin")).json()["id"]
            release = _hold_deletes(run.service)  # the actor is busy with a delete meanwhile
            answers: dict[str, Any] = {}

            async def b() -> None:
                answers["B"] = await client.post(
                    "/api/v2/assets",
                    data={"content_type": "application/octet-stream", "file_path": "b.bin"},
                    files={"file": ("b.bin", data, "application/octet-stream")},
                    headers={"Idempotency-Key": "K"},
                )

            async def c() -> None:
                answers["C"] = await _upload(client, data, "c.bin")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.delete, f"/api/v2/assets/{dummy}")
                await trio.sleep(0.01)
                nursery.start_soon(b)
                await trio.sleep(0.01)
                nursery.start_soon(c)
                await trio.sleep(0.01)
                release.set()
            assert answers["B"].status_code == 422
            assert answers["C"].status_code == 201, answers["C"].text
            await _check_new_asset(run, answers["C"], answers["C"].json()["hash"])


async def _submit_over_lost_bytes(tmp_path: Path, lie: bool) -> Any:
    """Upload a PNG, lose its blob, submit a job loading it. ``lie``: the store says the
    blob is there (it went between a check and the read)."""
    from conjure_actors.actors.example import example_sketch_png

    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            asset = (await _upload(run.client, example_sketch_png(), "in.png")).json()
            blobs = run.service.blobs
            path = blobs.path_of(asset["hash"])
            assert path is not None
            path.unlink()  # a disk cleaned by hand, or a removal after the graph resolved
            if lie:
                blobs.has = lambda hash_text: True
                blobs.holds = lambda hash_text, size: True
            graph["10"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset["id"]}}
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            assert not run.service.state.jobs
            return answer


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_job_over_an_asset_whose_bytes_are_gone_is_missing_asset(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """422 missing_asset, naming the input; no path of the server in the answer."""
    answer = await _submit_over_lost_bytes(tmp_path, lie=False)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "missing_asset"
    assert answer.json()["error"]["details"] == {"node_id": "10", "input": "image"}
    assert str(tmp_path) not in answer.text
    assert "/blobs" not in answer.text


async def test_a_refused_input_never_names_a_path_of_the_server(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The runtime's refusal (it names the file it could not read) reaches the client with
    the asset named instead of the blob's path."""
    answer = await _submit_over_lost_bytes(tmp_path, lie=True)
    assert answer.status_code == 400, answer.text
    assert str(tmp_path) not in answer.text
    assert "/blobs" not in answer.text


async def test_a_job_s_output_cannot_be_deleted_alone_and_a_restart_answers_the_same(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """DELETE of a job's output asset: 409 asset_in_use (it goes with its job). A deletion
    turned the succeeded job back to running (an output not an asset), and the next start's
    catch-up recorded the output again under a new id."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    log = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            job_id = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]
            await wait_for(run.service, lambda s: bool(s.service.job_outputs.get(job_id)))
            before = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
            assert before["status"] == "succeeded"
            output_id = before["outputs"][0]["id"]
            deleted = await run.client.delete(f"/api/v2/assets/{output_id}")
            assert deleted.status_code == 409, deleted.text
            assert deleted.json()["error"]["code"] == "asset_in_use"
            assert (await run.client.get(f"/api/v2/jobs/{job_id}")).json() == before
            assert (await run.client.get(f"/api/v2/assets/{output_id}")).status_code == 200
        async with open_extras_service(tmp_path, log=log) as run:
            await wait_idle(run.service)
            after = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert after["status"] == "succeeded"
    assert [o["id"] for o in after["outputs"]] == [output_id]


async def test_concurrent_uploads_of_the_same_bytes_store_once_and_say_so(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Two uploads of the same new bytes, the second while the first one's record is being
    journaled: one 201 created_new (it stored the bytes), one 200 deduped (the spec's
    split). Both were 201 created_new: the handler decided from blob_refs before the
    first record was applied; the AssetActor decides as it records now."""
    data = b"same new bytes"
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            release = trio.Event()
            journal: Any = run.service.journal
            append = journal.append

            async def held(event: Any) -> Any:  # a slow fsync of the first AssetRecorded
                if isinstance(event, se.AssetRecorded):
                    await release.wait()
                return await append(event)

            journal.append = held
            answers: list[Any] = []

            async def upload(name: str) -> None:
                answers.append(
                    await run.client.post(
                        "/api/v2/assets",
                        data={"content_type": "application/octet-stream", "file_path": name},
                        files={"file": (name, data, "application/octet-stream")},
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload, "a.bin")
                await trio.sleep(0.01)
                nursery.start_soon(upload, "b.bin")
                await trio.sleep(0.01)
                release.set()
    got = sorted((a.status_code, a.json()["created_new"]) for a in answers)
    assert got == [(200, False), (201, True)], got


async def test_a_suffix_range_of_an_empty_asset_is_416(tmp_path: Path, autojump_clock: Any) -> None:
    """RFC 9110 14.1.1: a suffix range of a zero-length representation is unsatisfiable:
    416 with 'bytes */0' (was 206 with the invalid 'bytes 0--1/0')."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            up = await _upload(run.client, b"", "e.bin")
            assert up.status_code == 201, up.text
            r = await run.client.get(
                f"/api/v2/assets/{up.json()['id']}/content", headers={"Range": "bytes=-5"}
            )
    assert (r.status_code, r.headers.get("content-range")) == (416, "bytes */0")


@given(
    header=hs.one_of(
        hs.builds(
            "bytes={}-{}".format,
            hs.one_of(hs.just(""), hs.integers(0, 40).map(str)),
            hs.one_of(hs.just(""), hs.integers(0, 40).map(str)),
        ),
        hs.text(max_size=12),
    ),
    size=hs.integers(0, 30),
)
@example(header="bytes=-5", size=0)
def test_a_satisfiable_range_lies_within_the_bytes(header: str, size: int) -> None:
    """Any answered range is a non-empty span of the representation's bytes."""
    spec = _range_spec(header)
    span = _byte_range(spec, size) if spec is not None else None
    if span is not None:
        start, end = span
        assert 0 <= start <= end < size


@pytest.mark.parametrize(
    "header",
    ["items=0-5", "bytes=abc", "bytes=10-5", "bytes=-", "bytes=0-1,3-4", "bytes 0-5"],
)
async def test_a_range_of_another_unit_or_invalid_is_ignored(
    tmp_path: Path, autojump_clock: Any, header: str
) -> None:
    """RFC 9110 14.2: a Range of a unit the server does not know is ignored (MUST), so is
    an invalid or multi-range one (MAY): 200 with the whole body (was 416)."""
    data = b"0123456789abcdef"
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            up = await _upload(run.client, data, "r.bin")
            r = await run.client.get(
                f"/api/v2/assets/{up.json()['id']}/content", headers={"Range": header}
            )
    assert (r.status_code, r.content, r.headers.get("content-range")) == (200, data, None)


@pytest.mark.parametrize("header", ["bytes=16-", "bytes=20-30", f"bytes={'9' * 5000}-"])
async def test_a_valid_range_past_the_end_is_416(
    tmp_path: Path, autojump_clock: Any, header: str
) -> None:
    """A well-formed bytes range starting past the end is unsatisfiable: 416 with
    ``bytes */size`` (a first-pos of thousands of digits too: it was a 500)."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            up = await _upload(run.client, b"0123456789abcdef", "r.bin")
            r = await run.client.get(
                f"/api/v2/assets/{up.json()['id']}/content", headers={"Range": header}
            )
    assert (r.status_code, r.headers.get("content-range")) == (416, "bytes */16")


async def test_an_upload_the_actor_never_recorded_leaves_no_blob(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AssetActor stops before recording an upload (503, retry is safe): the blob the
    upload created is dropped, not left behind unreferenced."""
    from conjure_actors.actors.assets import RecordAsset
    from conjure_actors.runtime import ActorStoppedError

    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            ref = run.service.assets

            class Stopping:
                """The actor's ref, but it stops before any RecordAsset."""

                def __getattr__(self, name: str) -> Any:
                    return getattr(ref, name)

                async def ask(self, msg: Any, **kwargs: Any) -> Any:
                    if isinstance(msg, RecordAsset):
                        raise ActorStoppedError("the asset actor stopped")
                    return await ref.ask(msg, **kwargs)

            monkeypatch.setattr(run.service, "assets", Stopping())
            answer = await _upload(run.client, b"bytes nobody recorded", "n.bin")
            assert answer.status_code == 503, answer.text
            await trio.sleep(1)  # the actor handles the drop
            assert list((tmp_path / "blobs" / "blobs").iterdir()) == []


async def _upload_with_key(client: Any, key: str) -> Any:
    return await client.post(
        "/api/v2/assets",
        data={"content_type": "application/octet-stream", "file_path": "k.bin"},
        files={"file": ("k.bin", b"bytes uploaded with a key", "application/octet-stream")},
        headers={"Idempotency-Key": key},
    )


async def test_an_upload_retried_with_its_key_is_refused_naming_the_asset_it_made(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The client never saw its upload's answer (a lost connection, a 5xx) and sends it
    again with the same Idempotency-Key: single use (no replay), so 422
    idempotency_key_reuse, whose details name the asset the first upload made, before and
    after a restart: the client gets it instead of being left without it."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(600):
        async with open_extras_service(tmp_path, log=log) as run:
            first = await _upload_with_key(run.client, "K")
            assert first.status_code == 201, first.text
            again = await _upload_with_key(run.client, "K")
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            after = await _upload_with_key(run.client, "K")
            fetched = await run.client.get(after.json()["error"]["details"]["url"])
    made = first.json()["id"]
    for answer in (again, after):
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "idempotency_key_reuse"
        assert error["details"]["asset_id"] == made
    assert fetched.status_code == 200
    assert fetched.json()["id"] == made


async def test_an_upload_s_too_long_file_path_is_refused_naming_the_limit(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A file_path over 1024 characters: 400 invalid_request saying it is too long and
    what the limit is (was "'content_type' and 'file_path' must be non-empty")."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await _upload(run.client, b"bytes", "a" * 1025)
            assets = dict(run.service.state.service.assets)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == (
        "'file_path' is too long (1025 characters): send at most 1024, e.g. photo.png"
    )
    assert assets == {}


async def test_from_hash_with_a_too_long_file_path_is_refused_naming_the_limit(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """from-hash holds file_path to the upload's limit: 400 naming it, no asset made."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            up = await _upload(run.client, b"bytes", "a.bin")
            answer = await run.client.post(
                "/api/v2/assets/from-hash",
                json={"hash": up.json()["hash"], "file_path": "a" * 1025},
            )
            count = len(run.service.state.service.assets)
    assert answer.status_code == 400, answer.text
    assert "send at most 1024" in answer.json()["error"]["message"]
    assert count == 1


async def test_an_upload_with_a_text_field_over_1_mb_is_413(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A text field of an upload over Starlette's 1 MB per field: 413 payload_too_large
    (was 400 "malformed multipart body: Part exceeded maximum size of 1024KB."), no asset."""
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            answer = await post_multipart(
                run.client,
                "/api/v2/assets",
                {"content_type": "text/plain", "file_path": "a" * (1024 * 1024 + 1)},
                {"file": ("a.txt", b"bytes", "text/plain")},
            )
            assets = dict(run.service.state.service.assets)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert assets == {}
