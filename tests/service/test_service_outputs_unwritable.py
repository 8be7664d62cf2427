"""serve with its output folder (``--out``) refusing writes (QA9 F4): once a job's save finds
its disk full (or read-only), health is ``degraded`` and new jobs get 507 instead of each
running on a paid machine to fail at the same save; a probe clears it when writes work again."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for
from test_service_blobs_unwritable import refuse_writes

from conjure_actors.clients import download
from conjure_actors.config import Config, PoolConfig
from conjure_actors.domain import state as st
from conjure_actors.service import outfolder
from conjure_actors.service.outfolder import PROBE_INTERVAL

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"


def fill_output_folder(monkeypatch: pytest.MonkeyPatch, out: Path, code: int) -> None:
    """The output folder's disk refuses writes with ``code``: an output's save (its temporary
    file) and the probe's file alike."""

    def refused(*_: Any, **__: Any) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(download, "open_temp_beside", refused)
    refuse_writes(monkeypatch, out, code)


async def _fail_one_job(run: Any) -> str:
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    await wait_for(run.service, lambda s: s.jobs[job_id].status == st.FAILED)
    return job_id


async def test_a_job_whose_save_the_full_disk_refuses_fails_as_the_operators_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """``output_folder_refused`` (not the client's ``local_save_failed``), saying whose it is
    to fix and that the job can be submitted again, without a path of the server."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            fill_output_folder(monkeypatch, tmp_path / "out", errno.ENOSPC)
            job_id = await _fail_one_job(run)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert job["error"]["code"] == "output_folder_refused", job
    message = job["error"]["message"]
    assert "the server's operator must free space" in message
    assert "submit the job again" in message
    assert os.strerror(errno.ENOSPC) in message
    assert str(tmp_path) not in message


async def test_a_save_on_a_full_output_disk_makes_health_degraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Health says the output folder refuses writes, without naming a path of the server."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            assert (await run.client.get("/api/v2/health")).json()["status"] == "ok"
            fill_output_folder(monkeypatch, tmp_path / "out", errno.ENOSPC)
            await _fail_one_job(run)
            health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "degraded", health
    assert "output folder (--out) refuses writes (its disk is full)" in health["reason"]
    assert str(tmp_path) not in health["reason"]


@pytest.mark.parametrize(
    ("code", "api_code"),
    [(errno.ENOSPC, "insufficient_storage"), (errno.EROFS, "storage_not_writable")],
)
async def test_a_submission_after_a_refused_save_is_507_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any, code: int, api_code: str
) -> None:
    """The next POST /api/v2/jobs is 507 (nothing logged for it), not a job that would run
    on a paid machine and fail at the same save."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            fill_output_folder(monkeypatch, tmp_path / "out", code)
            await _fail_one_job(run)
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
            jobs = len(run.service.state.jobs)
    assert answer.status_code == 507, answer.text
    assert answer.json()["error"]["code"] == api_code
    assert answer.headers["retry-after"].isdigit()
    assert jobs == 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_queued_job_gets_no_machine_while_the_folder_refuses_then_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Two jobs accepted before the folder's disk was known full, one machine: the first
    fails at the save; the second waits, queued, with no prompt sent and no machine launched
    for it (minutes, past the idle machine's stop), then runs once the folder takes writes."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    config = Config(pool=PoolConfig(max_machines=1, jobs_per_machine=1, idle_timeout=30.0))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            fill_output_folder(monkeypatch, tmp_path / "out", errno.ENOSPC)
            ids = []
            for _ in range(2):
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
            first, second = ids
            await wait_for(run.service, lambda s: s.jobs[first].status == st.FAILED)
            await trio.sleep(300)
            held = run.service.state.jobs[second]
            status, started = held.status, held.started_at  # the state changes in place
            machines = len(run.service.state.machines)
            monkeypatch.undo()
            await wait_for(run.service, lambda s: s.jobs[second].status == st.SUCCEEDED)
    assert status == st.QUEUED
    assert started is None
    assert machines == 1


async def test_an_idle_machine_is_stopped_while_the_folder_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The job held back does not keep the machine its failed neighbour left idle: it
    stops after ``pool.idle_timeout`` as if nobody waited (else it bills for the hold)."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    config = Config(pool=PoolConfig(max_machines=1, jobs_per_machine=1, idle_timeout=30.0))
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, config=config) as run:
            fill_output_folder(monkeypatch, tmp_path / "out", errno.ENOSPC)
            ids = []
            for _ in range(2):
                answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
            await wait_for(run.service, lambda s: s.jobs[ids[0]].status == st.FAILED)
            await wait_for(
                run.service,
                lambda s: all(m.status in st.MACHINE_GONE for m in s.machines.values()),
                within=300,
            )
            status = run.service.state.jobs[ids[1]].status
    assert status == st.QUEUED


async def test_the_probe_clears_the_refusal_once_the_folder_takes_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Space back: within a probe interval health is ``ok`` and a submission is 201,
    without any request having to find it first."""
    graph = json.loads((WORKFLOWS / "invert_save.json").read_text())
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            fill_output_folder(monkeypatch, tmp_path / "out", errno.ENOSPC)
            await _fail_one_job(run)
            await trio.sleep(3 * PROBE_INTERVAL)
            outputs = run.service.outputs
            assert outputs.refusal() is not None  # still full: the probes keep it
            monkeypatch.undo()
            await trio.sleep(PROBE_INTERVAL + 1)
            assert outputs.refusal() is None
            health = (await run.client.get("/api/v2/health")).json()
            answer = await run.client.post("/api/v2/jobs", json={"workflow": graph})
    assert health["status"] == "ok", health
    assert answer.status_code == 201, answer.text


async def test_a_probe_keeps_a_full_disk_refused_while_little_space_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The probe's small file fits, but less than the headroom is free: still refused (a
    cleared refusal would let the next queued job run, paid, to fail the same way)."""
    real = os.statvfs
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            fill_output_folder(monkeypatch, tmp_path / "out", errno.ENOSPC)
            await _fail_one_job(run)
            monkeypatch.undo()
            monkeypatch.setattr(
                outfolder.os,
                "statvfs",
                lambda path: type("V", (), {"f_bavail": 100, "f_frsize": 4096})(),
            )
            await trio.sleep(3 * PROBE_INTERVAL)
            still = run.service.outputs.refusal()
            monkeypatch.setattr(outfolder.os, "statvfs", real)
            await trio.sleep(PROBE_INTERVAL + 1)
            after = run.service.outputs.refusal()
    assert still is not None
    assert after is None


async def test_an_output_folder_that_refuses_writes_at_start_up_is_degraded_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """Read-only from the start: the start-up probe finds it before a job pays for it."""
    (tmp_path / "out").mkdir()
    refuse_writes(monkeypatch, tmp_path / "out", errno.EROFS)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            health = (await run.client.get("/api/v2/health")).json()
    assert health["status"] == "degraded", health
    assert os.strerror(errno.EROFS) in health["reason"]


async def test_a_file_the_save_cannot_name_does_not_refuse_new_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """A problem of one file (here a name too long for the disk), not of the folder's disk:
    the job fails as before and serve stays ``ok``."""

    def too_long(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))

    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            monkeypatch.setattr(download, "open_temp_beside", too_long)
            job_id = await _fail_one_job(run)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
            health = (await run.client.get("/api/v2/health")).json()
    assert job["error"]["code"] == "local_save_failed", job
    assert health["status"] == "ok", health
