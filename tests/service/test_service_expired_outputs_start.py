"""The start's removal of expired jobs' folders is bounded by what is on disk, not by the
log: a serve that lives for months keeps every expired job in its log, and a probe of each
one's folder on every start (a stat per job in a worker thread) grew with it. Each ``--out``
is listed once; only its folders named after an expired job go."""

from __future__ import annotations

import json
import shutil
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


async def _run_and_expire(run: Any) -> str:
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
    await trio.sleep(61)
    return job_id


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_start_probes_no_folder_of_an_expired_job_that_is_gone(
    tmp_path: Path, autojump_clock: Any, no_sweep: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired job whose folder went at its expiry costs the next start no removal."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(900):
        async with open_extras_service(tmp_path, log=log, settings=SETTINGS) as run:
            job_id = await _run_and_expire(run)
            await run.service.assets.ask(SweepNow(), timeout=30)
        assert not (tmp_path / "out" / job_id).exists()
        removals: list[Path] = []
        rmtree = shutil.rmtree

        def counted(path: Any, *args: Any, **kwargs: Any) -> None:
            removals.append(Path(path))
            rmtree(path, *args, **kwargs)

        monkeypatch.setattr(assets_actor.shutil, "rmtree", counted)
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen(), settings=SETTINGS) as run:
            await run.service.assets.ask(SweepNow(), timeout=30)
            assert job_id in run.service.state.service.expired_jobs
    assert removals == []


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_start_with_another_out_removes_the_folder_left_under_the_first(
    tmp_path: Path, autojump_clock: Any, no_sweep: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash left an expired job's folder under the ``--out`` of that run; a restart with
    another ``--out`` lists the first one too (found from the job's output paths)."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    first, second = tmp_path / "first", tmp_path / "second"
    with trio.fail_after(900):
        async with open_extras_service(first, log=log, settings=SETTINGS) as run:
            job_id = await _run_and_expire(run)
            with monkeypatch.context() as crashed:
                crashed.setattr(assets_actor, "remove_folders", lambda folders: None)
                await run.service.assets.ask(SweepNow(), timeout=30)
        folder = first / "out" / job_id
        left = folder.is_dir()
        log.close()
        async with open_extras_service(second, log=log.reopen(), settings=SETTINGS) as run:
            await run.service.assets.ask(SweepNow(), timeout=30)
    assert left, "the crash left the folder"
    assert not folder.exists()


def test_the_listing_removes_only_the_folders_of_the_given_jobs(tmp_path: Path) -> None:
    """Folders of other jobs, files named after a job, and a missing ``--out`` stay alone."""
    out = tmp_path / "out"
    (out / "gone" / "images").mkdir(parents=True)
    (out / "live").mkdir()
    (out / "file").write_text("not a folder")
    assets_actor.remove_listed_folders([out, tmp_path / "missing"], {"gone", "file", "never"})
    assert sorted(p.name for p in out.iterdir()) == ["file", "live"]
