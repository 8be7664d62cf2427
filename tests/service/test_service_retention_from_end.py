"""Retention runs from a job's end (QA F10): a job that waited in the queue longer than
``--retention`` (a slow boot) ran, was paid for, then read 404 at once with its outputs; an
input asset of a queued job could expire before the job used it. Now a job's end is logged
(``ApiJobExpiryMoved``) and moves its deadline, its outputs' and its inputs' to its end +
the retention; until then the sweep keeps all of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, png, wait_for, wait_idle

import eventlog
from conjure_actors.actors import assets as assets_actor
from conjure_actors.actors.assets import Retention, SweepNow
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.service.app import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SETTINGS = Settings(retention=Retention(jobs=60.0, assets=60.0))
SLOW_BOOT = 75.0
"""Seconds a machine boots: longer than the retention, as in QA's reproduction."""


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test's own ``SweepNow`` sweeps."""
    monkeypatch.setattr(assets_actor, "SWEEP_INTERVAL", 1e9)


async def _upload(client: Any) -> str:
    made = await client.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "heldout_input.png"},
        files={"file": ("heldout_input.png", png(), "image/png")},
    )
    assert made.status_code == 201, made.text
    asset_id: str = made.json()["id"]
    return asset_id


async def _submit(client: Any) -> str:
    graph = json.loads((WORKFLOWS / "load_scale_blur_save.json").read_text())
    made = await client.post("/api/v2/jobs", json={"workflow": graph})
    assert made.status_code == 201, made.text
    job_id: str = made.json()["id"]
    return job_id


def _outputs_recorded(state: Any, job_id: str) -> bool:
    done = state.service.job_outputs.get(job_id, {})
    return all(out.path in done for out in state.jobs[job_id].outputs)


@pytest.mark.slow
async def test_a_job_queued_past_its_retention_is_read_with_its_outputs_after_it_ends(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """Queued longer than the retention, then run: after its end (and a sweep) GET answers
    it succeeded with its outputs, whose records and bytes are served."""
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=SETTINGS, ready_delay=SLOW_BOOT) as run:
            await _upload(run.client)
            job_id = await _submit(run.client)
            await wait_idle(run.service)
            await wait_for(run.service, lambda s: _outputs_recorded(s, job_id))
            await run.service.assets.ask(SweepNow(), timeout=30)
            view = await run.client.get(f"/api/v2/jobs/{job_id}")
            assert view.status_code == 200, view.text
            outputs = view.json()["outputs"]
            fetched = [
                (await run.client.get(f"/api/v2/assets/{out['id']}")).status_code for out in outputs
            ] + [(await run.client.get(out["url"])).status_code for out in outputs]
    assert view.json()["status"] == "succeeded"
    assert outputs
    assert set(fetched) == {200}


@pytest.mark.slow
async def test_an_input_asset_of_a_queued_job_is_not_swept(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """Its own retention passed while the job waited for a machine: a sweep keeps it, and
    the job runs with it."""
    with trio.fail_after(900):
        async with open_extras_service(
            tmp_path, settings=SETTINGS, ready_delay=2 * SLOW_BOOT
        ) as run:
            asset_id = await _upload(run.client)
            job_id = await _submit(run.client)
            await trio.sleep(70)
            assert run.service.state.jobs[job_id].status == "queued"
            await run.service.assets.ask(SweepNow(), timeout=30)
            kept = asset_id in run.service.state.service.assets
            await wait_idle(run.service)
            status = run.service.state.jobs[job_id].status
    assert kept
    assert status == "succeeded"


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_restart_keeps_the_deadline_a_job_s_end_moved(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """The move is an event of the log: the log alone folds to the job's end + the
    retention, and after a restart GET still answers the job."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(900):
        async with open_extras_service(
            tmp_path, log=log, settings=SETTINGS, ready_delay=SLOW_BOOT
        ) as run:
            await _upload(run.client)
            job_id = await _submit(run.client)
            await wait_idle(run.service)
            await wait_for(run.service, lambda s: _outputs_recorded(s, job_id))
        log.close()
        folded = initial_state()
        for record in log.records():
            apply(folded, record.event)
        again = log.reopen()
        async with open_extras_service(tmp_path, log=again, settings=SETTINGS) as run:
            await run.service.assets.ask(SweepNow(), timeout=30)
            view = await run.client.get(f"/api/v2/jobs/{job_id}")
    moved = [r.event for r in again.records() if isinstance(r.event, se.ApiJobExpiryMoved)]
    finished = folded.jobs[job_id].finished_at
    assert finished is not None
    assert folded.service.api_jobs[job_id].expires_at == finished + 60.0
    assert [e.job_id for e in moved] == [job_id]
    assert view.status_code == 200, view.text


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_an_input_asset_of_a_job_not_ended_cannot_be_deleted_until_it_ends(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """DELETE of the input of a queued job: 409 asset_in_use (the job reads its bytes when
    it runs); once the job ended, 204."""
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=SETTINGS, ready_delay=SLOW_BOOT) as run:
            asset_id = await _upload(run.client)
            job_id = await _submit(run.client)
            held = await run.client.delete(f"/api/v2/assets/{asset_id}")
            await wait_idle(run.service)
            status = run.service.state.jobs[job_id].status
            await wait_for(run.service, lambda s: s.service.api_jobs[job_id].ended)
            after = await run.client.delete(f"/api/v2/assets/{asset_id}")
    assert held.status_code == 409, held.text
    assert held.json()["error"]["code"] == "asset_in_use"
    assert status == "succeeded"
    assert after.status_code == 204, after.text


async def test_an_input_asset_of_a_queued_job_reads_200_past_its_own_retention(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    """Its own ``expires_at`` passed while the job waits for a machine: GET answers it (the
    sweep keeps it, and the job will read it; it answered 404 until the job ended)."""
    with trio.fail_after(900):
        async with open_extras_service(
            tmp_path, settings=SETTINGS, ready_delay=2 * SLOW_BOOT
        ) as run:
            asset_id = await _upload(run.client)
            job_id = await _submit(run.client)
            await trio.sleep(70)
            assert run.service.state.jobs[job_id].status == "queued"
            answer = await run.client.get(f"/api/v2/assets/{asset_id}")
    assert answer.status_code == 200, answer.text
