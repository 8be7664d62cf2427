"""Signed URLs in ``serve`` (G10): with --token, the content URLs the API returns and a
job's ``urls.events`` open without the Authorization header (an ``<img src>``, an
``EventSource``) until ``url_expires_at``; then, or under another token, 401. Without a
token the URLs are the plain endpoints."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from extras_support import open_extras_service, sse_events, wait_for

from conjure_actors.domain import state as st
from conjure_actors.service import v2_assets
from conjure_actors.service.security import UrlSigner

TOKEN = "tok-9a7c1e5b3d2f4608"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def _upload(client: Any, data: bytes = b"\x89PNG not really", **kw: Any) -> Any:
    r = await client.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "in.png"},
        files={"file": ("in.png", data, "image/png")},
        **kw,
    )
    assert r.status_code == 201, r.text
    return r.json()


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


async def test_a_signed_asset_url_is_served_without_the_header_until_url_expires_at(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(v2_assets, "URL_TTL", 60.0)  # a minute of the simulated cloud, not an hour
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        asset = await _upload(run.client, headers=AUTH)
        url = asset["url"]
        query = parse_qs(urlsplit(url).query)
        assert urlsplit(url).path == f"/api/v2/assets/{asset['id']}/content"
        assert query["expires"] == [str(_epoch(asset["url_expires_at"]))]
        served = await run.client.get(url)
        assert (served.status_code, served.content) == (200, b"\x89PNG not really")
        await trio.sleep(_epoch(asset["url_expires_at"]) - run.service.conjure.ctx.now() + 1)
        expired = await run.client.get(url)
        fresh = (await run.client.get(f"/api/v2/assets/{asset['id']}", headers=AUTH)).json()
        again = await run.client.get(fresh["url"])
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    assert again.status_code == 200


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_signed_url_stays_the_same_across_polls(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A page polling its asset within one URL_GRID gets one URL (its <img> cache works:
    QA10 F2, a new ?expires= every second fetched the file again on every poll), valid
    URL_TTL at least from each answer."""
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        asset = await _upload(run.client, headers=AUTH)
        path = f"/api/v2/assets/{asset['id']}"
        start = run.service.conjure.ctx.now()
        await trio.sleep(v2_assets.URL_GRID - (start + v2_assets.URL_TTL) % v2_assets.URL_GRID)
        seen = []
        for _ in range(5):
            await trio.sleep(v2_assets.URL_GRID / 6)
            now = run.service.conjure.ctx.now()
            got = (await run.client.get(path, headers=AUTH)).json()
            seen.append(got["url"])
            assert _epoch(got["url_expires_at"]) >= now + v2_assets.URL_TTL
    assert len(set(seen)) == 1, seen


async def test_a_signed_url_does_not_open_another_asset(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        one = await _upload(run.client, b"one", headers=AUTH)
        two = await _upload(run.client, b"two", headers=AUTH)
        path, query = urlsplit(one["url"]).path, urlsplit(one["url"]).query
        r = await run.client.get(f"{path.replace(one['id'], two['id'])}?{query}")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")


async def test_a_url_signed_under_another_token_is_401(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_extras_service(tmp_path, token=TOKEN) as run:
        asset = await _upload(run.client, headers=AUTH)
        path = f"/api/v2/assets/{asset['id']}/content"
        expires = int(parse_qs(urlsplit(asset["url"]).query)["expires"][0])
        r = await run.client.get(UrlSigner.from_token("an-older-token").sign(path, expires))
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")


async def test_without_a_token_the_urls_are_the_plain_endpoints(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with open_extras_service(tmp_path) as run:
        asset = await _upload(run.client)
        graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
        job = (await run.client.post("/api/v2/jobs", json={"workflow": graph})).json()
    assert urlsplit(asset["url"]).path == f"/api/v2/assets/{asset['id']}/content"
    assert urlsplit(asset["url"]).query == ""
    assert job["urls"]["events"] == f"/api/v2/jobs/{job['id']}/events"


async def test_a_jobs_events_and_outputs_open_as_a_browser_asks_them(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The job's signed ``urls.events`` streams to an EventSource (GET, no header) to the
    terminal status, whose outputs' signed URLs an <img> loads; no signature is logged."""
    caplog.set_level(logging.DEBUG)
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, token=TOKEN) as run:
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph}, headers=AUTH)
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            events = answer.json()["urls"]["events"]
            assert urlsplit(events).path == f"/api/v2/jobs/{job_id}/events"
            await wait_for(
                run.service,
                lambda s: (
                    s.jobs[job_id].status == st.SUCCEEDED and s.service.job_outputs.get(job_id)
                ),
            )
            got = await sse_events(run.app, events, within=600)
            plain = await run.client.get(f"/api/v2/jobs/{job_id}/events")
            statuses = [data for _, name, data in got if name == "status"]
            assert statuses[-1]["status"] == "succeeded", got
            outputs = statuses[-1]["outputs"]
            assert outputs
            images = [await run.client.get(o["url"]) for o in outputs]
    assert plain.status_code == 401
    assert [r.status_code for r in images] == [200] * len(images)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for url in [events, *(o["url"] for o in outputs)]:
        assert parse_qs(urlsplit(url).query)["sig"][0] not in logged
