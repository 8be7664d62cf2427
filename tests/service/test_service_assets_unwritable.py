"""serve with a blob store that refuses writes (QA's H13/H13b): an upload is a 507 that says
what is wrong, nothing stored; health is ``degraded`` until the store takes a write again;
a job whose outputs could not be stored reads ``failed`` (``outputs_not_stored``), never
``succeeded`` with no outputs."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, sse_events, wait_for
from multipart_support import post_multipart
from test_service_blobs_unwritable import refuse_writes

from conjure_actors.actors.assets import STORE_ATTEMPTS, STORE_RETRY_DELAY
from conjure_actors.domain import state as st
from conjure_actors.service.v2_jobs import api_status

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def _form(data: bytes) -> dict[str, Any]:
    return {
        "files": {"file": ("x.png", data, "image/png")},
        "data": {"content_type": "image/png", "file_path": "x.png"},
    }


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
async def test_an_upload_to_an_unwritable_store_is_507_storage_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any, code: int
) -> None:
    """507 ``storage_not_writable`` with the cause and Retry-After; no asset, no file."""
    async with open_extras_service(tmp_path) as run:
        refuse_writes(monkeypatch, run.service.blobs.root, code)
        answer = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 1000))
        assert answer.status_code == 507, answer.text
        error = answer.json()["error"]
        assert error["code"] == "storage_not_writable"
        assert os.strerror(code) in error["message"]
        assert str(tmp_path) not in error["message"]
        assert answer.headers["retry-after"].isdigit()
        assert run.service.state.service.assets == {}
        assert list(run.service.blobs.root.iterdir()) == []


async def test_an_upload_to_a_full_store_is_507_insufficient_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The store's disk full (found by the blob's first write): the full disk's 507."""
    async with open_extras_service(tmp_path) as run:
        refuse_writes(monkeypatch, run.service.blobs.root, errno.ENOSPC)
        answer = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 1000))
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"]["code"] == "insufficient_storage"


async def test_health_is_degraded_while_the_store_refuses_and_recovers_without_an_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """A refused upload makes health ``degraded`` with the reason; once the folder takes
    writes again the probe says ``ok`` (it tries one itself), and uploads succeed."""
    async with open_extras_service(tmp_path) as run:
        refuse_writes(monkeypatch, run.service.blobs.root, errno.EROFS)
        await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 1000))
        await trio.sleep(5)
        health = (await run.client.get("/api/v2/health")).json()
        assert health["status"] == "degraded", health
        assert "asset store refuses writes (Read-only file system)" in health["reason"]
        monkeypatch.undo()
        await trio.sleep(5)
        health = (await run.client.get("/api/v2/health")).json()
        assert health["status"] == "ok", health
        answer = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 1000))
        assert answer.status_code == 201, answer.text


async def test_a_job_whose_outputs_the_store_refuses_reads_failed_with_where_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The job runs; its output cannot be stored: ``running`` while it is tried, then
    ``failed`` with ``outputs_not_stored``, the cause and where the files are (named, not
    spelled: no server path), and its event stream ends with that."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            refuse_writes(monkeypatch, run.service.blobs.root, errno.EPERM)
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == st.SUCCEEDED)
            polled = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
            assert polled["status"] == "running"
            got = await sse_events(run.app, f"/api/v2/jobs/{job_id}/events", within=600)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] == "failed", job
    assert job["outputs"] == []
    assert job["error"]["code"] == "outputs_not_stored"
    message = job["error"]["message"]
    assert "1 of its 1 outputs could not be stored" in message
    assert os.strerror(errno.EPERM) in message
    assert f"under {job_id}/" in message
    assert str(tmp_path) not in message
    assert job["completed_at"] is not None
    last = got[-1]
    assert (last[1], last[2]["status"]) == ("status", "failed"), got[-3:]
    assert last[0] >= (STORE_ATTEMPTS - 1) * STORE_RETRY_DELAY


async def test_an_upload_the_temporary_folder_refuses_is_507_naming_it_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: Any,
) -> None:
    """An upload past 1 MiB is spooled to the temporary folder: refused there, it is 507
    ``storage_not_writable`` naming that folder, and one ERROR line for two uploads."""

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    async with open_extras_service(tmp_path) as run:
        monkeypatch.setattr(tempfile, "TemporaryFile", refused)
        form = _form(b"\x89PNG" * 600_000)
        answers = [
            await post_multipart(run.client, "/api/v2/assets", form["data"], form["files"])
            for _ in range(2)
        ]
        monkeypatch.undo()
        for answer in answers:
            assert answer.status_code == 507, answer.text
            error = answer.json()["error"]
            assert error["code"] == "storage_not_writable"
            assert "temporary folder (Read-only file system)" in error["message"]
        assert run.service.state.service.assets == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "cannot write the temporary folder" in errors[0]


async def test_a_store_that_refuses_writes_from_the_start_is_degraded_before_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """serve starts on a read-only blobs folder: health says so before an upload or a job
    output tries it."""
    refuse_writes(monkeypatch, tmp_path / "blobs" / "blobs", errno.EROFS)
    async with open_extras_service(tmp_path) as run:
        await trio.sleep(1)
        health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "degraded", health
    assert "Read-only file system" in health["reason"]


async def test_a_store_fixed_while_an_output_is_tried_still_makes_the_job_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The output is refused as the job ends, and the folder is fixed 15 s later: the
    output is stored on a later try, and the job reads succeeded with it (decided within
    the tries, waited for: not a sleep as long as the tries, which a late record outlasts)."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            refuse_writes(monkeypatch, run.service.blobs.root, errno.EROFS)
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            job_id = answer.json()["id"]
            await wait_for(run.service, lambda s: s.jobs[job_id].status == st.SUCCEEDED)
            assert (await run.client.get(f"/api/v2/jobs/{job_id}")).json()["status"] == "running"
            await trio.sleep(15)
            monkeypatch.undo()
            await wait_for(
                run.service,
                lambda s: api_status(s.jobs[job_id], None, s.service) != "running",
                within=STORE_ATTEMPTS * STORE_RETRY_DELAY,
            )
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["status"] == "succeeded", job
    assert len(job["outputs"]) == 1


async def test_an_upload_of_known_bytes_is_taken_while_the_store_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Bytes stored already need no write: their upload is 200 (deduplicated) though the
    folder refuses writes."""
    async with open_extras_service(tmp_path) as run:
        first = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 1000))
        assert first.status_code == 201, first.text
        refuse_writes(monkeypatch, run.service.blobs.root, errno.EROFS)
        again = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 1000))
    assert again.status_code == 200, again.text
    assert again.json()["hash"] == first.json()["hash"]


async def test_health_sees_a_store_that_turned_unwritable_while_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """No upload, no job: a monitor polling health learns that the store refuses writes
    (it said ok until a job's outputs met the refusal and the job failed)."""
    async with open_extras_service(tmp_path) as run:
        await trio.sleep(30)  # the start-up's blob check (it tries a write) is over
        assert (await run.client.get("/api/v2/health")).json()["status"] == "ok"
        refuse_writes(monkeypatch, run.service.blobs.root, errno.EROFS)
        await trio.sleep(15)
        health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "degraded", health
    assert "asset store refuses writes (Read-only file system)" in health["reason"]


def _move_away(folder: Path) -> None:
    folder.rename(folder.with_name(folder.name + ".moved"))


async def test_a_store_whose_folder_went_reads_degraded_and_uploads_get_507(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """An operator's clean-up moved the store's folder: health says so (it read ok), and an
    upload is 507 storage_not_writable (it was a 500)."""
    async with open_extras_service(tmp_path) as run:
        await trio.sleep(30)  # the start-up's blob check is over
        _move_away(run.service.blobs.root)
        await trio.sleep(15)
        health = (await run.client.get("/api/v2/health")).json()
        upload = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 10))
    assert health["status"] == "degraded", health
    assert "No such file or directory" in health["reason"]
    assert (upload.status_code, upload.json()["error"]["code"]) == (507, "storage_not_writable")
