"""serve's copies of a job's outputs under ``--out`` go with the job (QA G6): they stayed
forever, after the job and its assets expired (a soak left 12.5 MB in out/ beside 1.4 MB of
blobs). The sweep's ``ApiJobExpired`` is the fact; OUT/<job>/ is removed after it, and again
on start for a job the log says expired (a crash in between finishes the removal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for, wait_idle

import eventlog
from conjure_actors.actors import assets as assets_actor
from conjure_actors.actors.assets import Retention, SweepNow
from conjure_actors.domain.events import Event
from conjure_actors.service.app import Settings

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SETTINGS = Settings(retention=Retention(jobs=60.0, assets=60.0))


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test's own ``SweepNow`` sweeps."""
    monkeypatch.setattr(assets_actor, "SWEEP_INTERVAL", 1e9)


async def _run_one(run: Any) -> str:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    made = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert made.status_code == 201, made.text
    job_id: str = made.json()["id"]
    await wait_idle(run.service)
    await wait_for(
        run.service,
        lambda s: all(
            o.path in s.service.job_outputs.get(job_id, {}) for o in s.jobs[job_id].outputs
        ),
    )
    return job_id


@pytest.mark.slow
async def test_a_job_s_output_folder_stays_while_readable_and_goes_when_it_expires(
    tmp_path: Path, autojump_clock: Any, no_sweep: None
) -> None:
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, settings=SETTINGS) as run:
            job_id = await _run_one(run)
            folder = tmp_path / "out" / job_id
            outputs = [Path(o.path) for o in run.service.state.jobs[job_id].outputs]
            await run.service.assets.ask(SweepNow(), timeout=30)
            kept = folder.is_dir() and all(p.is_file() for p in outputs)
            await trio.sleep(61)
            await run.service.assets.ask(SweepNow(), timeout=30)
            expired = job_id in run.service.state.service.expired_jobs
    assert outputs
    assert kept, "a job still readable keeps its files"
    assert expired
    assert not folder.exists(), "an expired job's outputs leave --out"


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_restart_removes_the_folder_of_a_job_the_log_says_expired(
    tmp_path: Path, autojump_clock: Any, no_sweep: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after ``ApiJobExpired`` was logged, before (or during) the removal: the next
    start removes what is left."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, log=log, settings=SETTINGS) as run:
            job_id = await _run_one(run)
            await trio.sleep(61)
            with monkeypatch.context() as crashed:
                crashed.setattr(assets_actor, "remove_folders", lambda folders: None)
                await run.service.assets.ask(SweepNow(), timeout=30)
            assert job_id in run.service.state.service.expired_jobs
        folder = tmp_path / "out" / job_id
        left = folder.is_dir()
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen(), settings=SETTINGS) as run:
            await run.service.assets.ask(SweepNow(), timeout=30)
    assert left, "the crash left the folder"
    assert not folder.exists()
