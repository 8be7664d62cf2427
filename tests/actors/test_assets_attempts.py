"""A job's outputs as assets follow its current attempt (found by review of the job
service's outputs): a machine lost after the first attempt saved an output made the retry's
output at the same path read as the first attempt's asset (other bytes, for a random seed),
and a store given up for the first attempt could fail the retry's job."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from test_assets_blobs import SAVED, StoringBlobs, saved_by_the_job
from test_assets_flush import HASH, HeldJournal, kinds, spawn

from conjure_actors.actors.assets import JobsEnded, _OutputStored
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.state import apply
from conjure_actors.runtime import open_actor_system

RETRIED = msgspec.structs.replace(SAVED, sha256="1" * 64, at=1100.0)


async def test_an_earlier_attempts_store_ending_late_stores_the_current_output() -> None:
    """Attempt 1's output was still being stored when attempt 2 saved its own at the same
    path (skipped then, as being stored): attempt 2's bytes are stored, not recorded as the
    first's (before: the first's bytes became the job's output)."""
    journal = HeldJournal()
    blobs = StoringBlobs({HASH})
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system, blobs)
            saved_by_the_job(journal, SAVED)
            saved_by_the_job(journal, RETRIED, attempt=2)
            await ref.tell(_OutputStored(SAVED, HASH, 5, False))
            await journal.wait_appends(1)
            journal.release(0)
    assert blobs.puts == 1  # the current output, read from its file again
    assert kinds(journal.appends[0].events) == [se.AssetRecorded]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_an_output_given_up_for_an_earlier_attempt_does_not_fail_the_retry() -> None:
    """Attempt 1's store was given up; attempt 2 saved the same path and succeeded while its
    own store runs: no ApiJobOutputsNotStored (the job would read failed for good)."""
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system, StoringBlobs(set()))
            saved_by_the_job(journal, SAVED)
            await ref.tell(_OutputStored(SAVED, None, reason="the disk is full"))
            saved_by_the_job(journal, RETRIED, attempt=2)
            apply(journal.state, ev.JobSucceeded(job_id="job-a", at=1200.0))
            await ref.tell(JobsEnded(("job-a",)))
            await trio.testing.wait_all_tasks_blocked()
            appended: list[Any] = [e for a in journal.appends for e in a.events]
    assert not any(isinstance(e, se.ApiJobOutputsNotStored) for e in appended)
