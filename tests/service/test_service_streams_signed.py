"""The many-jobs stream opens from a browser's ``EventSource`` (no Authorization header) on
a token-protected serve: ``GET /api/conjure/events/url`` (with the token) gives its URL
signed, the query included (a URL for some jobs opens no other's); it needed a fetch-based
reader before (QA of the many-jobs stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
from extras_support import open_extras_service, sse_events, wait_for

from conjure_actors.domain import state as st
from conjure_actors.service.security import UrlSigner

TOKEN = "tok-5e1f9a0c7b3d2468"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
GRAPH = json.loads((WORKFLOWS / "invert_save.json").read_text())


async def test_a_signed_many_jobs_url_streams_to_an_event_source(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, token=TOKEN) as run:
            ids = []
            for _ in range(2):
                r = await run.client.post("/api/v2/jobs", json={"workflow": GRAPH}, headers=AUTH)
                ids.append(r.json()["id"])
            minted = await run.client.get(
                "/api/conjure/events/url", params=[("job", i) for i in ids], headers=AUTH
            )
            url = minted.json()["url"]
            await wait_for(
                run.service, lambda s: all(s.jobs[i].status == st.SUCCEEDED for i in ids)
            )
            got = await sse_events(run.app, url, within=600)
            unsigned = await run.client.get(urlsplit(url).path, params=[("job", ids[0])])
    assert minted.status_code == 200, minted.text
    assert minted.json()["expires_at"] is not None
    ended = {d["job_id"] for _, n, d in got if n == "status" and d["status"] == "succeeded"}
    assert ended == set(ids)
    assert unsigned.status_code == 401


async def test_a_signed_url_does_not_open_other_jobs(tmp_path: Path, autojump_clock: Any) -> None:
    """The query is signed: the same signature with another job id (or a label) is 401."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, token=TOKEN) as run:
            r = await run.client.post("/api/v2/jobs", json={"workflow": GRAPH}, headers=AUTH)
            mine = r.json()["id"]
            minted = await run.client.get(
                "/api/conjure/events/url", params={"job": mine}, headers=AUTH
            )
            url = minted.json()["url"]
            other = await run.client.get(url.replace(f"job={mine}", "job=someone-else"))
            label = await run.client.get(url.replace(f"job={mine}", "metadata%5Bt%5D=x"))
    assert (other.status_code, label.status_code) == (401, 401)


async def test_without_a_token_the_url_is_plain(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_extras_service(tmp_path) as run:
        minted = await run.client.get("/api/conjure/events/url", params={"metadata[tab]": "3"})
    assert minted.json() == {"url": "/api/conjure/events?metadata%5Btab%5D=3", "expires_at": None}


def test_the_signature_covers_the_query_in_any_order() -> None:
    signer = UrlSigner.from_token(TOKEN)
    url = signer.sign("/api/conjure/events", 2_000_000_000, [("job", "b"), ("job", "a")])
    path, _, query = url.partition("?")
    assert signer.refusal(path, query.encode(), 1_900_000_000.0) is None
    pairs = query.split("&")
    shuffled = "&".join([pairs[1], pairs[0], *pairs[2:]])
    assert signer.refusal(path, shuffled.encode(), 1_900_000_000.0) is None
    assert signer.refusal(path, query.replace("job=a", "job=c").encode(), 1.9e9) is not None
