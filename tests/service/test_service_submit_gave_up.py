"""A submission whose request stopped waiting (its 60 s ran out, or its client went away)
after the AssetActor took it: should the append land after all, the job is durable and
queued in the log, so it must run, not wait in the queue forever (found by review)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import hold_submissions, open_extras_service

from conjure_actors.service.app import Service

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


async def _settled_statuses(service: Service) -> list[str]:
    await trio.sleep(600)
    return [job.status for job in service.state.jobs.values()]


def _graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "invert_save.json").read_text())
    return graph


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_submission_whose_answer_timed_out_still_runs_once_it_lands(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            release = hold_submissions(run.service)
            with pytest.raises(trio.TooSlowError):  # the handler gives up at 60 s (500)
                await run.service.submit_job(_graph())
            release.set()
            assert await _settled_statuses(run.service) == ["succeeded"]


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_a_submission_whose_client_went_away_still_runs_once_it_lands(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            release = hold_submissions(run.service)
            with trio.move_on_after(5):  # the request is cancelled while the append waits
                await run.service.submit_job(_graph())
            release.set()
            assert await _settled_statuses(run.service) == ["succeeded"]
