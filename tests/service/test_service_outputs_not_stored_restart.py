"""A job that succeeded but whose outputs could not be stored reads ``failed``
(``outputs_not_stored``) for good: the AssetActor logs the decision
(``ApiJobOutputsNotStored``), so a restart on the same log reads the same job, error and
outputs, and the metrics and the job list agree with it. It read ``succeeded`` after a
restart on a fixed store before (the start's catch-up stored its outputs then): a terminal
status that a client had read turned into another.

A restart before the decision (the outputs being tried when serve stopped, some maybe
stored) leaves no half record: the next start tries the outputs not stored again and
decides then, once."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from extras_support import open_extras_service, wait_for
from test_service_blobs_unwritable import refuse_writes

import eventlog
from conjure_actors.actors import assets as assets_actor
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event
from conjure_actors.service.blobs import BlobStore, StoreRefusal, StoreRefusedError
from conjure_actors.service.v2_jobs import api_status

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
GIVEN_UP = assets_actor.STORE_ATTEMPTS * assets_actor.STORE_RETRY_DELAY


def _refuse_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The blob store refuses the bytes of the "plain" output only (read-only, as if its
    disk filled between two outputs): the other output is stored."""
    real_put, real_stored_as = BlobStore.put_file, BlobStore.stored_as

    def put_file(self: BlobStore, path: Any) -> Any:
        if "plain" in str(path):
            raise StoreRefusedError(StoreRefusal(errno.EROFS), self.root)
        return real_put(self, path)

    def stored_as(self: BlobStore, path: Any, limit: int) -> Any:
        return None if "plain" in str(path) else real_stored_as(self, path, limit)

    monkeypatch.setattr(BlobStore, "put_file", put_file)
    monkeypatch.setattr(BlobStore, "stored_as", stored_as)


def _graph(outputs: int = 1) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "invert_save.json").read_text())
    if outputs == 2:  # a second output: the empty image itself, saved as "plain"
        graph["4"] = {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "heldout/plain"},
        }
    return graph


def _jobs_by_status(metrics: str) -> dict[str, float]:
    counts = {}
    for line in metrics.splitlines():
        if line.startswith('conjure_jobs{status="'):
            label, value = line.split(" ")
            counts[label.split('"')[1]] = float(value)
    return counts


async def _read(run: Any, job_id: str) -> tuple[dict[str, Any], list[str], dict[str, float]]:
    """The job as GET reads it, the statuses the list gives it, the metrics' job counts."""
    job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    listed = (await run.client.get("/api/v2/jobs")).json()["jobs"]
    metrics = (await run.client.get("/metrics")).text
    return job, [j["status"] for j in listed if j["id"] == job_id], _jobs_by_status(metrics)


async def _failed_job(run: Any, outputs: int = 1) -> str:
    """Submit a job and wait until it reads failed (its outputs tried, then given up)."""
    answer = await run.client.post("/api/v2/jobs", json={"workflow": _graph(outputs)})
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    await wait_for(run.service, lambda s: api_status(s.jobs[job_id], None, s.service) == "failed")
    return job_id


async def test_the_list_and_the_metrics_count_a_job_failed_for_outputs_not_stored_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The job reads failed (outputs_not_stored, with the store's refusal) in the list as in
    GET, and GET /metrics counts it failed, not succeeded (it counted the runtime's status)."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            refuse_writes(monkeypatch, run.service.blobs.root, errno.EPERM)
            job_id = await _failed_job(run)
            job, listed, counts = await _read(run, job_id)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "outputs_not_stored"
    assert "refuses writes: Operation not permitted" in job["error"]["message"]
    assert job["outputs"] == []
    assert listed == ["failed"]
    assert (counts["failed"], counts["succeeded"]) == (1, 0)


@pytest.mark.slow
@pytest.mark.parametrize("fixed", [True, False], ids=["store-fixed", "store-still-refusing"])
async def test_a_job_failed_for_outputs_not_stored_reads_the_same_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any, fixed: bool
) -> None:
    """After a restart on the same log (the store fixed meanwhile, or not), GET, the list
    and the metrics read the job as before: failed, the same error code and message, no
    output listed; and none of its outputs is stored then (the catch-up leaves it)."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            refuse_writes(monkeypatch, run.service.blobs.root, errno.EPERM)
            job_id = await _failed_job(run)
            before = await _read(run, job_id)
        if fixed:
            monkeypatch.undo()
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            await trio.sleep(GIVEN_UP + 1)  # the start's catch-up, had it tried the output
            after = await _read(run, job_id)
            svc = run.service.state.service
            assert svc.job_outputs.get(job_id, {}) == {}
            assert [a for a in svc.assets.values() if a.job_id == job_id] == []
    assert before[0]["status"] == "failed", before
    assert after == before


async def test_a_job_with_one_of_two_outputs_stored_reads_failed_with_it_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """One output stored, the other refused: failed, "1 of its 2", the stored one listed;
    a restart on a store that takes both now reads exactly that (the other is not stored
    then: the job would read failed with every output)."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            _refuse_plain(monkeypatch)
            job_id = await _failed_job(run, outputs=2)
            before = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
        monkeypatch.undo()
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            await trio.sleep(GIVEN_UP + 1)
            after = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
            stored = run.service.state.service.job_outputs[job_id]
    assert before["status"] == "failed", before
    assert "1 of its 2 outputs could not be stored" in before["error"]["message"]
    assert "Read-only file system" in before["error"]["message"]
    assert [o["name"] for o in before["outputs"]] == ["invert_00001_.png"]
    assert (after["status"], after["error"]) == (before["status"], before["error"])
    assert [o["id"] for o in after["outputs"]] == [o["id"] for o in before["outputs"]]
    assert len(stored) == 1


@pytest.mark.parametrize(
    ("fixed", "status", "stored"), [(True, "succeeded", 2), (False, "failed", 1)]
)
async def test_a_restart_with_outputs_partly_stored_decides_the_job_once_on_the_next_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: Any,
    fixed: bool,
    status: str,
    stored: int,
) -> None:
    """serve stops after one output of two was stored, while the other is refused and
    tried again (nothing decided, nothing of it logged): the next start tries the one not
    stored again, and the job reads succeeded with both (the store fixed) or failed with
    the one (still refusing), one or the other, never both, and decided once."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            _refuse_plain(monkeypatch)
            answer = await run.client.post("/api/v2/jobs", json={"workflow": _graph(2)})
            job_id = answer.json()["id"]
            await wait_for(
                run.service,
                lambda s: (
                    s.jobs[job_id].status == st.SUCCEEDED
                    and len(s.service.job_outputs.get(job_id, {})) == 1
                ),
            )
            assert (await run.client.get(f"/api/v2/jobs/{job_id}")).json()["status"] == "running"
        decisions = [r for r in log.records() if isinstance(r.event, se.ApiJobOutputsNotStored)]
        assert decisions == []
        if fixed:
            monkeypatch.undo()
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            await trio.sleep(GIVEN_UP + 1)
            job = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
            outputs = run.service.state.service.job_outputs.get(job_id, {})
        log.close()
    decisions = [r for r in log.records() if isinstance(r.event, se.ApiJobOutputsNotStored)]
    assert job["status"] == status, job
    assert (len(outputs), len(job["outputs"])) == (stored, stored)
    assert len(decisions) == (0 if fixed else 1)
    if not fixed:
        assert "1 of its 2 outputs could not be stored" in job["error"]["message"]
