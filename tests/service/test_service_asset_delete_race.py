"""A DELETE of an asset and a submission that uses it, racing (QA10 F3): one of the two wins,
never both (a 204 and a 201 both came, the job logged after its input's deletion)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, png

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def test_an_asset_deleted_after_a_submission_resolved_it_refuses_the_job(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE lands while the submission keeps its inputs (after every check of the
    request's own): the DELETE's 204 stands, the submission is 422 missing_asset and
    nothing of it is logged."""
    resolved, go = trio.Event(), trio.Event()
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    answers: list[Any] = []
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            made = await run.client.post(
                "/api/v2/assets",
                data={"content_type": "image/png", "file_path": "heldout_input.png"},
                files={"file": ("heldout_input.png", png(), "image/png")},
            )
            asset_id = made.json()["id"]
            prepare = run.service.conjure.prepare_submission

            async def held_prepare(*args: Any, **kwargs: Any) -> Any:
                prepared = await prepare(*args, **kwargs)
                resolved.set()
                await go.wait()
                return prepared

            monkeypatch.setattr(run.service.conjure, "prepare_submission", held_prepare)

            async def submit() -> None:
                answers.append(await run.client.post("/api/v2/jobs", json={"workflow": graph}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit)
                await resolved.wait()
                deleted = await run.client.delete(f"/api/v2/assets/{asset_id}")
                go.set()
            accepted = [
                job_id
                for job_id, api in run.service.state.service.api_jobs.items()
                if asset_id in api.input_assets.values()
            ]
    assert deleted.status_code == 204, deleted.text
    assert answers[0].status_code == 422, answers[0].text
    assert answers[0].json()["error"]["code"] == "missing_asset"
    assert accepted == []
