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
    """Its prompt is on its machine with the key: re-attached, not failed."""
    state = st.initial_state()
    state.service.api_jobs["j"] = se.ApiJob(
        job_id="j",
        labels={},
        idempotency_key=None,
        input_assets={},
        accepted_at=0.0,
        expires_at=1.0,
        extra_data_keys=["api_key_comfy_org"],
    )
    job: Any = type("J", (), {"job_id": "j", "prompt_id": "p-1"})()
    assert se.not_resumable(state, job) is None
    job.prompt_id = None
    assert se.not_resumable(state, job) is not None
