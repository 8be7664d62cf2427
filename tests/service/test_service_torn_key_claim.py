"""A log torn by a power loss between a submission's ``Idempotency-Key`` claim and its
``ApiJobAccepted`` (one append; the log's repair keeps the claim): at the next start the
claim is released, so the client's retry (it never got its 201) is accepted, not refused
for ever as a reuse naming no job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service

import eventlog
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
BODY = {"workflow": json.loads((WORKFLOWS / "invert_save.json").read_text())}
HEADERS = {"Idempotency-Key": "base-1"}


def _torn_after_the_claim(log: eventlog.MemoryLog[Any]) -> eventlog.MemoryLog[Any]:
    """``log`` up to its first key claim, as a power loss in the middle of that write
    leaves it once repaired."""
    torn: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    for record in log.records():
        torn.append_many([record.event], ts=[record.ts])
        if isinstance(record.event, se.IdempotencyKeyClaimed):
            break
    torn.flush()
    return torn


async def test_a_retry_after_a_write_torn_after_its_keys_claim_is_accepted(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The retry with the same key is 201 (it was 422 ``idempotency_key_reuse``), and the
    log says why the claim went."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        # Machines that take a day to boot: nothing runs meanwhile.
        async with open_extras_service(tmp_path, log=log, ready_delay=86_400) as run:
            first = await run.client.post("/api/v2/jobs", json=BODY, headers=HEADERS)
            assert first.status_code == 201, first.text
        torn = _torn_after_the_claim(log)
        async with open_extras_service(tmp_path, log=torn, ready_delay=86_400) as run:
            retry = await run.client.post("/api/v2/jobs", json=BODY, headers=HEADERS)
    assert retry.status_code == 201, retry.text
    released = [r.event for r in torn.records() if isinstance(r.event, se.IdempotencyKeyReleased)]
    assert [(e.key, e.scope, e.reason) for e in released] == [
        ("base-1", "jobs", se.KEY_NOT_ACCEPTED)
    ]


async def test_a_key_whose_job_was_accepted_stays_claimed_after_a_restart(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """An untorn log: the retry after a restart is still 422, naming the job."""
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log, ready_delay=86_400) as run:
            first = await run.client.post("/api/v2/jobs", json=BODY, headers=HEADERS)
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen(), ready_delay=86_400) as run:
            retry = await run.client.post("/api/v2/jobs", json=BODY, headers=HEADERS)
    assert retry.status_code == 422, retry.text
    assert retry.json()["error"]["details"]["job_id"] == first.json()["id"]
