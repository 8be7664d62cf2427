"""A job whose ``extra_data`` (a partner nodes' API key, kept in memory only as the contract
wants) was lost by a restart before its prompt was sent fails at the restart, saying why,
before a machine is launched for it; it ran without the key before (the partner node then
fails, after a machine was paid for)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service, wait_for

import eventlog
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
BODY = {
    "workflow": json.loads((WORKFLOWS / "invert_save.json").read_text()),
    "extra_data": {"api_key_comfy_org": "comfyui-secret-key"},
}


async def test_a_queued_job_whose_extra_data_a_restart_lost_fails_before_a_launch(
    tmp_path: Path, autojump_clock: Any
) -> None:
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        # Machines that take a day to boot: the job is still queued when serve stops.
        async with open_extras_service(tmp_path, log=log, ready_delay=86_400) as run:
            r = await run.client.post("/api/v2/jobs", json=BODY)
            job_id = r.json()["id"]
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            await wait_for(run.service, lambda s: s.jobs[job_id].status in st.TERMINAL_STATUSES)
            view = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
            launched = [m for m in run.service.state.machines.values() if m.stopped_at is None]
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "not_resumable"
    assert "extra_data (api_key_comfy_org)" in view["error"]["message"]
    assert "comfyui-secret-key" not in json.dumps(view)
    assert launched == []  # nothing launched for it after the restart


def test_a_job_whose_prompt_was_sent_is_resumable() -> None:
    """Its prompt is on its machine with the key: re-attached, not failed; a job that never
    sent one is not resumable."""
    state = st.initial_state()
    _api_job_with_extra_data(state)
    job = st.Job("j", workflow_sha256="w", status=st.RUNNING)
    job.prompt_id, job.execution, job.server_id = "p-1", "started", "s1"
    assert se.not_resumable(state, job) is None
    job.status, job.prompt_id, job.execution, job.server_id = st.QUEUED, None, None, None
    assert se.not_resumable(state, job) is not None


def _api_job_with_extra_data(state: Any, job_id: str = "j") -> None:
    state.service.api_jobs[job_id] = se.ApiJob(
        job_id=job_id,
        labels={},
        idempotency_key=None,
        input_assets={},
        accepted_at=0.0,
        expires_at=1.0,
        extra_data_keys=["api_key_comfy_org"],
    )


def test_a_job_queued_again_after_its_machine_was_lost_is_not_resumable() -> None:
    """Its last prompt's id stays in the state (JobQueued keeps it), but it needs a new one
    (QA7 F7: it passed the check and sent its next prompt without the key)."""
    state = st.initial_state()
    _api_job_with_extra_data(state)
    job = st.Job("j", workflow_sha256="w", status=st.QUEUED)
    job.prompt_id, job.execution, job.server_id = "p-1", "started", None
    assert se.not_resumable(state, job) is not None
    job.status, job.server_id = st.INTERRUPTED, "s1"  # interrupted while its prompt ran
    assert se.not_resumable(state, job) is None


async def test_a_new_prompt_is_not_sent_without_its_lost_extra_data(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The backstop: whatever makes a job send a new prompt after its extra_data went (a
    machine lost after the restart), it fails not_resumable instead of sending it."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, ready_delay=60) as run:
            r = await run.client.post("/api/v2/jobs", json=BODY)
            job_id = r.json()["id"]
            run.service.conjure.side.extra_data.pop(job_id)  # as a restart loses it
            await wait_for(run.service, lambda s: s.jobs[job_id].status in st.TERMINAL_STATUSES)
            view = (await run.client.get(f"/api/v2/jobs/{job_id}")).json()
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "not_resumable"
