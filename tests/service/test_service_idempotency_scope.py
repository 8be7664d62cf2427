"""An ``Idempotency-Key`` is single use across uploads and submissions: the contract's
"any later request with the same key is rejected 422 idempotency_key_reuse" (QA: a key
used for an upload was accepted again for a job)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from extras_support import open_extras_service, png

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def _upload(client: Any, key: str) -> Any:
    return await client.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "a.png"},
        files={"file": ("a.png", png(), "image/png")},
        headers={"Idempotency-Key": key},
    )


async def _submit(client: Any, key: str) -> Any:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    return await client.post(
        "/api/v2/jobs", json={"workflow": graph}, headers={"Idempotency-Key": key}
    )


async def test_a_key_used_by_an_upload_is_refused_for_a_submission(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Upload with K, then submit with K: 422, and no job."""
    async with open_extras_service(tmp_path) as run:
        assert (await _upload(run.client, "k-1")).status_code == 201
        answer = await _submit(run.client, "k-1")
        jobs = dict(run.service.state.jobs)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "idempotency_key_reuse"
    assert jobs == {}


async def test_a_key_used_by_a_submission_is_refused_for_an_upload(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Submit with K, then upload with K: 422, and no asset."""
    async with open_extras_service(tmp_path) as run:
        assert (await _submit(run.client, "k-2")).status_code == 201
        answer = await _upload(run.client, "k-2")
        uploads = [a for a in run.service.state.service.assets.values() if a.job_id is None]
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "idempotency_key_reuse"
    assert uploads == []
