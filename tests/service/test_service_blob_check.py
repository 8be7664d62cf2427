"""Damaged blobs are found without waiting for a client to read them (serve checks every
blob once as it starts, in the background) and ``GET /api/v2/health`` is ``degraded`` while
one is known, naming the assets (QA's H5: health stayed ``ok`` over a deleted, a cut and a
changed blob)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio.testing
from extras_support import open_extras_service, png

import eventlog
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def _upload(client: Any, data: bytes, *, file_path: str = "x.png") -> dict[str, Any]:
    made = await client.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": file_path},
        files={"file": (file_path, data, "application/octet-stream")},
    )
    assert made.status_code in (200, 201), made.text  # 200: deduped onto a live asset
    body: dict[str, Any] = made.json()
    return body


def _file(run: Any, hash_text: str) -> Path:
    path = run.service.blobs.path_of(hash_text)
    assert path is not None
    return Path(path)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


async def test_a_blob_changed_while_serve_was_stopped_is_found_as_it_starts(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A bit flipped between two runs: once the next start's check ran, before any read,
    health is ``degraded`` naming the asset, and one line was logged."""
    log = eventlog.MemoryLog(Event)
    async with open_extras_service(tmp_path, log=log) as run:
        changed = await _upload(run.client, os.urandom(3000))
        intact = await _upload(run.client, os.urandom(3000))
        path = _file(run, changed["hash"])
    _flip(path, 1234)
    with caplog.at_level(logging.WARNING, "conjure_actors.service"):
        async with open_extras_service(tmp_path, log=log) as run:
            await trio.testing.wait_all_tasks_blocked()
            health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "degraded"
    assert changed["id"] in health["reason"]
    assert intact["id"] not in health["reason"]
    assert "upload the same bytes again" in health["reason"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1
    assert changed["id"] in lines[0]
    assert "found at start-up" in lines[0]


async def test_health_is_ok_again_once_the_same_bytes_are_uploaded(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A cut blob found by a read: ``degraded``; the same bytes uploaded again: ``ok``,
    and the first asset's content is whole again."""
    data = os.urandom(5000)
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, data)
        os.truncate(_file(run, made["hash"]), 100)
        assert (await run.client.get(f"/api/v2/assets/{made['id']}/content")).status_code == 500
        degraded = (await run.client.get("/api/v2/health")).json()
        await _upload(run.client, data)
        ok = (await run.client.get("/api/v2/health")).json()
        again = await run.client.get(f"/api/v2/assets/{made['id']}/content")
    assert degraded["status"] == "degraded"
    assert made["id"] in degraded["reason"]
    assert ok["status"] == "ok"
    assert (again.status_code, again.content) == (200, data)


async def test_a_damaged_blob_no_asset_refers_to_any_more_is_not_reported(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The asset over a damaged blob deleted: its blob goes, and health is ``ok``."""
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, b"\x89PNG some bytes")
        os.unlink(_file(run, made["hash"]))
        await run.client.get(f"/api/v2/assets/{made['id']}/content")
        assert (await run.client.get("/api/v2/health")).json()["status"] == "degraded"
        assert (await run.client.delete(f"/api/v2/assets/{made['id']}")).status_code == 204
        health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "ok"


async def test_a_job_input_refused_as_a_cut_image_is_taken_once_uploaded_again(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A cut input image is refused (422, it does not decode); uploaded again, its blob is
    whole and the same submission is taken (the refusal was remembered for the bytes'
    hash until serve restarted, so "upload it again" did not help)."""
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, png(), file_path="heldout_input.png")
        path = _file(run, made["hash"])
        os.truncate(path, path.stat().st_size // 2)
        refused = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        await _upload(run.client, png(), file_path="heldout_input.png")
        taken = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert refused.status_code == 422, refused.text
    assert taken.status_code == 201, taken.text


async def test_a_job_whose_input_bytes_were_cut_is_refused_as_missing_asset(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Refused before it takes a machine, saying the server's copy is damaged and how to
    repair it (its image check said the workflow's image "does not decode")."""
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, png(), file_path="heldout_input.png")
        path = _file(run, made["hash"])
        os.truncate(path, path.stat().st_size // 2)
        refused = await run.client.post("/api/v2/jobs", json={"workflow": graph})
        jobs = dict(run.service.state.jobs)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "missing_asset"
    assert made["id"] in error["message"]
    assert "upload the same file again" in error["message"]
    assert jobs == {}


async def test_a_job_whose_input_bytes_a_read_found_changed_is_refused(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A flipped byte a stat cannot see, once a read found it: the job would run (and be
    paid for) on the wrong bytes."""
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    async with open_extras_service(tmp_path) as run:
        made = await _upload(run.client, png(), file_path="heldout_input.png")
        _flip(_file(run, made["hash"]), 40)
        read = await run.client.get(f"/api/v2/assets/{made['id']}/content")
        refused = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert read.status_code == 500, read.text
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "missing_asset"
