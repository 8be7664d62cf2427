"""The log's disk fills while ``serve`` runs: the journal holds (``--disk-full-patience``),
new work is 507 ``insufficient_storage``, reads go on, the health probe says ``degraded``,
``/metrics`` has a gauge; once the disk frees the work accepted before goes on, nothing lost.
A disk that stays full past the patience stops serve as before (machines stopped), and a
SIGTERM during a hold stops the machines without waiting for the disk."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from extras_support import Running, open_extras_service, png, wait_for, wait_idle

import eventlog
from conjure_actors.actors.conjure import RunStoppedError
from conjure_actors.commands import serve
from conjure_actors.commands.run import stopped_error
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.errgroups import meaningful

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
SERVICE = WORKFLOWS.parent / "service"
_real_pwrite = os.pwrite


class FullDisk:
    """``os.pwrite`` of the log's descriptor while ``full``: refused with ENOSPC, as a full
    disk refuses it (the journal's writer truncates back; the blob store is not touched)."""

    def __init__(self) -> None:
        self.fd = -1
        self.full = False

    def __call__(self, fd: int, data: bytes, offset: int) -> int:
        if fd == self.fd and self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return _real_pwrite(fd, data, offset)


def _health_schema() -> dict[str, Any]:
    spec = yaml.safe_load((SERVICE / "openapi_extras.yaml").read_text())
    schema: dict[str, Any] = spec["components"]["schemas"]["Health"]
    return schema


def _graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "slow_blur_chain.json").read_text())
    return graph


@asynccontextmanager
async def _serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, patience: float
) -> AsyncIterator[tuple[Running, FullDisk]]:
    """The service over a log file whose disk the test fills (``disk.full``)."""
    disk = FullDisk()
    monkeypatch.setattr(os, "pwrite", disk)
    async with open_extras_service(
        tmp_path, log=str(tmp_path / "serve.log"), hold_full_disk=patience
    ) as run:
        disk.fd = run.service.journal._store._fd
        yield run, disk


async def _running_job_then_full(run: Running, disk: FullDisk) -> str:
    """Submit a job, fill the disk once it runs on a machine; return once the journal
    holds (the job's next event is refused)."""
    r = await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    await wait_for(run.service, lambda state: state.jobs[job_id].status == st.RUNNING)
    disk.full = True
    with trio.fail_after(600):
        while run.service.held_since is None:  # noqa: ASYNC110 - the journal has no event for it
            await trio.sleep(0.1)
    return job_id


async def test_a_held_journal_refuses_a_new_job_and_finishes_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """While held: a new job is 507 ``insufficient_storage`` (with Retry-After), the running
    job reads as before; once the disk frees, it succeeds, and the log holds it all (its
    replay is the live state), nothing of the refused job."""
    with trio.fail_after(3600):
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            job_id = await _running_job_then_full(run, disk)
            refused = await run.client.post("/api/v2/jobs", json={"workflow": _graph()})
            assert refused.status_code == 507, refused.text
            assert refused.json()["error"]["code"] == "insufficient_storage"
            assert refused.headers["retry-after"].isdigit()
            read = await run.client.get(f"/api/v2/jobs/{job_id}")
            assert (read.status_code, read.json()["status"]) == (200, "running")
            disk.full = False
            await wait_idle(run.service)
            assert run.service.held_since is None
            live = run.service.state
    assert list(live.jobs) == [job_id]
    assert live.jobs[job_id].status == st.SUCCEEDED
    replayed = eventlog.fold(eventlog.read(tmp_path / "serve.log", Event), apply, initial_state())
    assert replayed.jobs == live.jobs


async def test_a_held_journal_refuses_an_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """An upload while held is 507 before its body is stored: no blob, no asset."""
    with trio.fail_after(3600):
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            await _running_job_then_full(run, disk)
            answer = await run.client.post(
                "/api/v2/assets",
                files={"file": ("x.png", png(), "image/png")},
                data={"content_type": "image/png", "file_path": "x.png"},
            )
            assert answer.status_code == 507, answer.text
            assert answer.json()["error"]["code"] == "insufficient_storage"
            assert list(run.service.blobs.root.iterdir()) == []
            disk.full = False
            await wait_idle(run.service)
            assets = run.service.state.service.assets.values()
    assert [a.file_path for a in assets if a.file_path == "x.png"] == []


@pytest.mark.parametrize("change", ["cancel", "budget"])
async def test_a_held_journal_refuses_a_change_it_could_not_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any, change: str
) -> None:
    """A cancel or a budget change while held is 507 at once (it answered 500 after its
    60 s ask timed out), nothing changed: the job still succeeds once the disk frees."""
    with trio.fail_after(3600):
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            job_id = await _running_job_then_full(run, disk)
            start = trio.current_time()
            if change == "cancel":
                answer = await run.client.post(f"/api/v2/jobs/{job_id}/cancel")
            else:
                answer = await run.client.put("/api/conjure/budget", json={"usd": 1})
            took = trio.current_time() - start
            disk.full = False
            await wait_idle(run.service)
            state = run.service.state
    assert (answer.status_code, took) == (507, 0), answer.text
    assert answer.json()["error"]["code"] == "insufficient_storage"
    assert state.jobs[job_id].status == st.SUCCEEDED
    assert state.budget.limit_micros is None


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
async def test_health_and_metrics_say_the_journal_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """While held the probe is 200 ``degraded`` with the reason and since when, and
    ``/metrics`` says held (1) and for how long; both are back to normal once it frees."""
    with trio.fail_after(3600):
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            await _running_job_then_full(run, disk)
            await trio.sleep(10)
            health = await run.client.get("/api/v2/health")
            metrics = (await run.client.get("/metrics")).text
            disk.full = False
            await wait_idle(run.service)
            after = (await run.client.get("/api/v2/health")).json()
            metrics_after = (await run.client.get("/metrics")).text
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded"
    assert "disk of the event log is full" in body["reason"]
    assert "507" in body["reason"]
    assert body["held_since"].endswith("Z")
    schema = _health_schema()  # the extras' contract says this answer
    assert body["status"] in schema["properties"]["status"]["enum"]
    assert set(body) <= set(schema["properties"])
    assert "conjure_journal_held 1.0" in metrics
    held_for = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("conjure_journal_held_seconds ")
    )
    assert held_for >= 10
    assert after["status"] == "ok"
    assert "reason" not in after
    assert "conjure_journal_held 0.0" in metrics_after
    assert "conjure_journal_held_seconds 0.0" in metrics_after


async def _stopped(body: Any) -> BaseException:
    """What ``body()`` (a serve that is to stop on its own) ended with."""
    try:
        await body()
    except BaseException as exc:  # a group, from the service's nurseries
        return exc
    raise AssertionError("serve did not stop")


@pytest.mark.slow
async def test_a_disk_still_full_after_the_patience_stops_serve_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """The patience runs out: serve stops with today's full-disk stop (its one line; the
    machine stopped without logging it), not sooner than the patience."""
    seen: dict[str, Any] = {}

    async def serve_on_a_full_disk() -> None:
        async with _serving(tmp_path, monkeypatch, patience=120) as (run, disk):
            seen["cloud"] = run.cloud
            await _running_job_then_full(run, disk)
            seen["held_at"] = trio.current_time()
            await trio.sleep_forever()

    with trio.fail_after(3600):
        stopped = await _stopped(serve_on_a_full_disk)
    stopped_after = trio.current_time() - seen["held_at"]
    assert 120 <= stopped_after < 120 + 60
    assert isinstance(meaningful(stopped), RunStoppedError), stopped
    line = str(stopped_error(stopped, tmp_path / "serve.log", "serve"))
    assert line.startswith("serve stopped: the disk holding its event log is full;"), line
    assert "without logging it" in line
    assert seen["cloud"].runcomfy.running() == []


async def test_a_sigterm_during_a_hold_stops_the_machines_without_waiting_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """serve's shutdown (after the drain) while the journal holds: the hold ends at once and
    the machines are stopped in well under the patience (they would bill meanwhile); serve
    then ends with the full-disk stop's line."""
    seen: dict[str, Any] = {}

    async def stop_on_a_full_disk() -> None:
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            await _running_job_then_full(run, disk)
            assert run.cloud.runcomfy.running() != []
            start = trio.current_time()
            seen["left"] = await serve.shut_down(run.service)
            seen["took"] = trio.current_time() - start
            seen["running"] = run.cloud.runcomfy.running()

    with trio.fail_after(3600):
        stopped = await _stopped(stop_on_a_full_disk)
    assert seen["took"] < 60
    # Stopped without logging it (the state still has it running): not among those that
    # "may still run", which serve prints.
    assert seen["running"] == []
    assert seen["left"] == []
    assert isinstance(meaningful(stopped), RunStoppedError), stopped


async def test_the_runtimes_own_shutdown_never_waits_for_a_held_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """``Conjure.shutdown`` itself (not only serve's ``shut_down``) ends a hold first: any
    caller's stop of the machines is well under the patience (it waited all of it)."""
    seen: dict[str, Any] = {}

    async def stop_on_a_full_disk() -> None:
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            await _running_job_then_full(run, disk)
            start = trio.current_time()
            await run.service.conjure.shutdown("interrupted")
            seen["took"] = trio.current_time() - start
            seen["running"] = run.cloud.runcomfy.running()

    with trio.fail_after(3600):
        await _stopped(stop_on_a_full_disk)
    assert seen["took"] < 60
    assert seen["running"] == []


async def test_the_drain_does_not_wait_for_a_job_that_a_hold_keeps_from_going_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    """SIGTERM's drain (``--drain-timeout``) during a hold: the running job cannot log its
    progress, so the drain ends within a second instead of waiting its timeout while the
    machines bill."""
    seen: dict[str, Any] = {}

    async def drain_on_a_full_disk() -> None:
        async with _serving(tmp_path, monkeypatch, patience=600) as (run, disk):
            await _running_job_then_full(run, disk)
            start = trio.current_time()
            with trio.move_on_after(30):
                await serve._drain(run.service)
            seen["took"] = trio.current_time() - start
            await serve.shut_down(run.service)

    with trio.fail_after(3600):
        await _stopped(drain_on_a_full_disk)
    assert seen["took"] <= 1.5
