"""The AssetActor records an asset only over a blob still stored: only it removes blobs, so
its check as it records cannot be overtaken by a removal."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from test_assets_flush import HASH, FakeBlobs, HeldJournal, kinds, spawn

from conjure_actors.actors.assets import (
    BlobGone,
    DropBlobIfUnused,
    RecordAsset,
    Recorded,
    _OutputStored,
)
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.state import apply
from conjure_actors.runtime import open_actor_system

RECORD = RecordAsset(hash=HASH, size=1, content_type="image/png", file_path="a.png", tags=())


async def test_a_record_over_a_blob_no_longer_stored_answers_blob_gone() -> None:
    """The caller stored the bytes, and the blob went before its record: nothing is logged."""
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system, FakeBlobs(set()))
            assert isinstance(await ref.ask(RECORD), BlobGone)
            assert journal.appends == []


async def test_a_dropped_blob_is_removed_only_when_no_asset_refers_to_it() -> None:
    journal = HeldJournal()
    blobs = FakeBlobs({HASH})
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system, blobs)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.ask, RECORD)
                await journal.wait_appends(1)
                journal.release(0)
            await ref.ask(DropBlobIfUnused(HASH))
            assert blobs.has(HASH)
            other = "blake3:" + "1" * 64  # a refused upload's bytes
            blobs.stored.add(other)
            await ref.ask(DropBlobIfUnused(other))
            assert not blobs.has(other)


SAVED = ev.OutputSaved(
    job_id="job-a",
    node_id="9",
    filename="out.png",
    path="/nonexistent/out.png",
    size=1 << 20,
    sha256="0" * 64,
    kind="image",
    at=1000.0,
)


def saved_by_the_job(journal: HeldJournal, *saved: ev.OutputSaved, attempt: int = 1) -> None:
    """``journal``'s state: job-a running attempt ``attempt``, its outputs ``saved`` (the
    AssetActor records only the outputs of a job's current attempt)."""
    events: list[Any] = []
    if attempt == 1:
        events += [
            ev.JobSubmitted(job_id="job-a", workflow_sha256="0" * 64, at=990.0),
            ev.JobQueued(job_id="job-a", at=990.0),
        ]
    events += [ev.JobStarted(job_id="job-a", attempt=attempt, server_id="s1", at=995.0), *saved]
    for event in events:
        apply(journal.state, event)


class StoringBlobs(FakeBlobs):
    """``put_file`` stores the bytes (as ``HASH``) and counts its calls."""

    puts = 0

    def put_file(self, path: Any) -> tuple[str, int, bool]:
        self.puts += 1
        created = HASH not in self.stored
        self.stored.add(HASH)
        return HASH, 5, created


async def test_an_output_whose_blob_went_after_its_store_is_stored_again() -> None:
    """A child found the output's bytes stored (created False), then the last asset over
    them went and the actor removed the blob: the output is stored again before its
    ``AssetRecorded``, never recorded over the missing blob."""
    journal = HeldJournal()
    blobs = StoringBlobs(set())
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system, blobs)
            saved_by_the_job(journal, SAVED)
            await ref.tell(_OutputStored(SAVED, HASH, 5, False))
            await journal.wait_appends(1)
            assert blobs.puts == 1
            assert kinds(journal.appends[0].events) == [se.AssetRecorded]
            assert blobs.has(journal.appends[0].events[0].hash)
            journal.release(0)


async def test_only_the_first_record_over_new_bytes_is_created_new() -> None:
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system)
            answers: list[Any] = []

            async def record() -> None:
                answers.append(await ref.ask(RECORD))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(record)
                nursery.start_soon(record)
                await journal.wait_appends(1)
                journal.release(0)
                await journal.wait_appends(2)
                journal.release(1)
    assert [a.created_new for a in answers] == [True, False]
    assert all(isinstance(a, Recorded) for a in answers)


async def test_an_output_whose_new_blob_went_is_not_recorded_nor_stored_again() -> None:
    """A blob the child wrote itself (created) that is gone was removed by hand: the output
    is not kept (no loop of stores, no record over nothing)."""
    journal = HeldJournal()
    blobs = StoringBlobs(set())
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system, blobs)
            saved_by_the_job(journal, SAVED)
            await ref.tell(_OutputStored(SAVED, HASH, 5, True))
            await trio.testing.wait_all_tasks_blocked()
            assert blobs.puts == 0
            assert journal.appends == []
