"""A submission's ``extra_data`` goes with that job's prompt to ComfyUI and nowhere else: not
the log, not a log line, not a response (it may carry a live credential)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from extras_support import open_extras_service, wait_idle

import eventlog
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SECRET = "comfyui-key-never-logged-5f2c9a"


class _Recording(httpx.AsyncBaseTransport):
    """The cloud's transport, keeping the body of every ``POST /prompt``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.prompts: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/prompt":
            self.prompts.append(json.loads(await request.aread()))
        return await self.inner.handle_async_request(request)


def _invert() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WORKFLOWS / "invert_save.json").read_text())
    return data


def _every_byte_under(root: Path) -> bytes:
    """Every file the service wrote (blobs, outputs), concatenated."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@contextmanager
def _all_log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)
    yield lines
    lines.extend(record.getMessage() for record in caplog.records)
    lines.extend(caplog.text.splitlines())


async def test_extra_data_reaches_comfyui_with_that_jobs_prompt_only(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The job submitted with extra_data posts its prompt with it; the other job without."""
    recording: list[_Recording] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        recording.append(_Recording(inner))
        return recording[0]

    async with open_extras_service(tmp_path, wrap_http=wrap) as run:
        extra = {"api_key_comfy_org": SECRET}
        with_key = await run.client.post(
            "/api/v2/jobs", json={"workflow": _invert(), "extra_data": extra}
        )
        without = await run.client.post("/api/v2/jobs", json={"workflow": _invert()})
        assert (with_key.status_code, without.status_code) == (201, 201)
        await wait_idle(run.service)
        jobs = run.service.state.jobs
        prompt_of = {jobs[r.json()["id"]].prompt_id: r.json()["id"] for r in (with_key, without)}
        assert all(j.status == st.SUCCEEDED for j in jobs.values())
        assert run.service.conjure.side.extra_data == {}  # dropped once the job ended
    sent = {prompt_of[p["prompt_id"]]: p.get("extra_data") for p in recording[0].prompts}
    assert sent == {with_key.json()["id"]: extra, without.json()["id"]: None}


async def test_extra_data_never_reaches_the_log_a_log_line_or_a_response(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG, the key is in no log line, no response, no logged event
    and no file (the same Idempotency-Key with another key is still refused)."""
    journal = eventlog.MemoryLog(Event)
    answers: list[str] = []
    with _all_log_lines(caplog) as lines:
        async with open_extras_service(tmp_path, log=journal) as run:
            body = {"workflow": _invert(), "extra_data": {"api_key_comfy_org": SECRET}}
            headers = {"Idempotency-Key": "k-1"}
            first = await run.client.post("/api/v2/jobs", json=body, headers=headers)
            assert first.status_code == 201, first.text
            await wait_idle(run.service)
            job_id = first.json()["id"]
            other = {"workflow": _invert(), "extra_data": {"api_key_comfy_org": "another"}}
            again = await run.client.post("/api/v2/jobs", json=other, headers=headers)
            bad = {"workflow": _invert(), "extra_data": {"api_key_comfy_org": SECRET, "x": 1}}
            refused = await run.client.post("/api/v2/jobs", json=bad)
            reads = [
                await run.client.get(f"/api/v2/jobs/{job_id}"),
                await run.client.get("/api/v2/jobs"),
                await run.client.get(f"/api/v2/jobs/{job_id}/workflow"),
            ]
            answers.extend(r.text for r in (first, again, refused, *reads))
    assert again.status_code == 422
    assert refused.status_code == 400
    assert lines
    assert not [line for line in lines if SECRET in line]
    assert not [a for a in answers if SECRET in a]
    logged = b"\n".join(msgspec.json.encode(r.event) for r in journal.records())
    assert b"job.succeeded" in logged
    assert SECRET.encode() not in logged
    assert SECRET.encode() not in _every_byte_under(tmp_path)
