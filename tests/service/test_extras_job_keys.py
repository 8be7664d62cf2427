"""The front end's call (``POST /api/conjure/jobs``) after a lost answer: a retry with its
Idempotency-Key names the job the first made (it said "poll your job", without saying
which), duplicates racing the first's append name it too, and the job carries the page's
``metadata`` labels, which ``GET /api/v2/jobs?metadata[...]`` finds it by."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from extras_support import open_extras_service, png

PROMPT = "a small red fox"


async def _post(run: Any, key: str | None = None, **data: Any) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await run.client.post(
        "/api/conjure/jobs",
        files={"image": ("sketch.png", png(), "image/png")},
        data={"prompt": PROMPT, **data},
        headers=headers,
    )


async def test_a_retry_with_the_key_names_the_job_the_first_made(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_extras_service(tmp_path) as run:
        first = await _post(run, "lost-answer")
        again = await _post(run, "lost-answer")
    assert first.status_code == 201, first.text
    assert again.status_code == 422
    error = again.json()["error"]
    job = first.json()["id"]
    assert error["code"] == "idempotency_key_reuse"
    assert error["details"] == {"job_id": job, "url": f"/api/v2/jobs/{job}"}
    assert job in error["message"]


async def test_duplicates_racing_the_first_all_name_its_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Ten at once with one key (a browser retrying while serve is busy): one 201, nine 422
    that each name the job (they said nothing while the first was being journaled)."""
    answers: list[Any] = []
    async with open_extras_service(tmp_path) as run:

        async def post() -> None:
            answers.append(await _post(run, "busy"))

        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(post)
        jobs = len(run.service.state.jobs)
    made = [a.json()["id"] for a in answers if a.status_code == 201]
    refused = [a.json()["error"] for a in answers if a.status_code == 422]
    assert (len(made), len(refused), jobs) == (1, 9, 1)
    assert all(
        e["details"] == {"job_id": made[0], "url": f"/api/v2/jobs/{made[0]}"} for e in refused
    )


async def test_the_page_finds_its_job_by_its_metadata(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_extras_service(tmp_path) as run:
        mine = await _post(run, metadata=json.dumps({"tab": "3"}))
        await _post(run, metadata=json.dumps({"tab": "4"}))
        found = await run.client.get("/api/v2/jobs", params={"metadata[tab]": "3"})
    assert mine.status_code == 201, mine.text
    assert [j["id"] for j in found.json()["jobs"]] == [mine.json()["id"]]


async def test_metadata_that_is_not_json_is_one_clear_line(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_extras_service(tmp_path) as run:
        r = await _post(run, metadata="tab=3")
        jobs = len(run.service.state.jobs)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("'metadata' is not JSON")
    assert jobs == 0


async def test_metadata_past_its_limits_is_refused_as_a_v2_job_s(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_extras_service(tmp_path) as run:
        r = await _post(run, metadata=json.dumps({"tab": 3}))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "metadata_invalid")


async def test_a_retry_with_the_key_records_no_asset(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The image of a refused retry does not become one more asset record in the log."""
    async with open_extras_service(tmp_path) as run:
        await _post(run, "lost-answer")
        before = len(run.service.state.service.assets)
        await _post(run, "lost-answer")
        after = len(run.service.state.service.assets)
    assert after == before


def _live_assets(run: Any) -> int:
    return len(run.service.state.service.assets)


async def test_a_submission_refused_for_a_full_queue_stores_no_image(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A page retrying on 429 added one asset record (and a blob) per try (QA7 F2)."""
    from conjure_actors.service.app import Settings

    settings = Settings(max_queue=1)
    async with open_extras_service(tmp_path, settings=settings, ready_delay=86_400) as run:
        first = await _post(run)
        before = _live_assets(run)
        refused = await _post(run)
        after = _live_assets(run)
    assert (first.status_code, refused.status_code) == (201, 429)
    assert after == before


async def test_duplicates_racing_the_first_leave_no_image_behind(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Each refused duplicate's image asset is deleted: the job's one input asset stays."""
    async with open_extras_service(tmp_path) as run:

        async def post() -> None:
            await _post(run, "racing")

        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(post)
        (job_id,) = run.service.state.service.api_jobs
        held = set(run.service.state.service.api_jobs[job_id].input_assets.values())
        left = set(run.service.state.service.assets)
    assert left == held
