"""A job or asset past its ``expires_at`` reads 404 at once, whenever the AssetActor's sweep
(every ``SWEEP_INTERVAL``) logs its expiry; a content URL is never announced valid past
what it points to (QA: both stayed readable up to 30 s after ``expires_at``, and an
output's ``url_expires_at`` was an hour past its job's ``expires_at``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, png, wait_for, wait_idle

from conjure_actors.actors import assets as assets_actor
from conjure_actors.actors.assets import Retention
from conjure_actors.service.app import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SETTINGS = Settings(retention=Retention(jobs=60.0, assets=60.0))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep never comes during the test: what reads see is their own check."""
    monkeypatch.setattr(assets_actor, "SWEEP_INTERVAL", 1e9)


async def _upload(client: Any) -> dict[str, Any]:
    made = await client.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "heldout_input.png"},
        files={"file": ("heldout_input.png", png(), "image/png")},
    )
    assert made.status_code == 201, made.text
    answer: dict[str, Any] = made.json()
    return answer


async def test_an_asset_past_its_expiry_reads_404_before_the_sweep(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """Past ``expires_at``: its record, content and hash are gone, and a job naming it is
    422 ``missing_asset``, though no ``AssetExpired`` is logged yet."""
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    async with open_extras_service(tmp_path, settings=SETTINGS) as run:
        asset = await _upload(run.client)
        await trio.sleep(61)
        assert asset["id"] in run.service.state.service.assets  # not swept
        got = await run.client.get(f"/api/v2/assets/{asset['id']}")
        content = await run.client.get(f"/api/v2/assets/{asset['id']}/content")
        by_hash = await run.client.head(f"/api/v2/assets/by-hash/{asset['hash']}")
        again = await run.client.post("/api/v2/assets/from-hash", json={"hash": asset["hash"]})
        job = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert [got.status_code, content.status_code, by_hash.status_code] == [404, 404, 404]
    assert again.status_code == 404
    assert job.status_code == 422, job.text
    assert job.json()["error"]["code"] == "missing_asset"


async def test_a_finished_job_past_its_expiry_reads_404_before_the_sweep(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """A finished job past ``expires_at``: GET, its workflow and the list no longer show
    it, though no ``ApiJobExpired`` is logged yet."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    async with open_extras_service(tmp_path, settings=SETTINGS) as run:
        job_id = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]
        await wait_idle(run.service)
        expires = _at((await run.client.get(f"/api/v2/jobs/{job_id}")).json()["expires_at"])
        now = datetime.fromtimestamp(run.service.conjure.ctx.now(), expires.tzinfo)
        await trio.sleep((expires - now).total_seconds() + 1)
        assert not run.service.state.service.api_jobs[job_id].expired  # not swept
        got = await run.client.get(f"/api/v2/jobs/{job_id}")
        flow = await run.client.get(f"/api/v2/jobs/{job_id}/workflow")
        listed = (await run.client.get("/api/v2/jobs")).json()["jobs"]
    assert [got.status_code, flow.status_code] == [404, 404]
    assert [j["id"] for j in listed] == []


async def test_no_content_url_is_announced_valid_past_what_it_points_to(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """An output's ``url_expires_at`` is at most its job's ``expires_at``; an uploaded
    asset's at most the asset's own."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    async with open_extras_service(tmp_path, settings=SETTINGS) as run:
        asset = await _upload(run.client)
        job_id = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()["id"]
        await wait_for(run.service, lambda s: bool(s.service.job_outputs.get(job_id)))
        job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["outputs"], job
    for output in job["outputs"]:
        assert _at(output["url_expires_at"]) <= _at(job["expires_at"]), output
    assert _at(asset["url_expires_at"]) <= _at(asset["expires_at"]), asset
