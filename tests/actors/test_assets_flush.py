"""The AssetActor journals API submissions in pipelined batches: it decides the next ones
while an append is still being made durable, and answers each as its append is applied."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from conjure_actors.actors.assets import (
    AcceptJob,
    AssetActor,
    Claimed,
    KeyReused,
    RecordAsset,
    Retention,
)
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.runtime import open_actor_system


@attrs.define
class _Record:
    seq: int
    event: Any


@attrs.define
class _Append:
    events: list[Any]
    done: trio.Event = attrs.Factory(trio.Event)
    error: Exception | None = None


class HeldJournal:
    """A journal whose appends wait until the test releases them (an fsync in flight); a
    release applies the events, calls the listeners (as a commit does), then answers."""

    def __init__(self) -> None:
        self.state = initial_state()
        self.appends: list[_Append] = []
        self._listeners: list[Any] = []
        self._seq = 0
        self._grew = trio.Event()

    @contextmanager
    def listen(self, fn: Any) -> Iterator[None]:
        self._listeners.append(fn)
        try:
            yield
        finally:
            self._listeners.remove(fn)

    async def append(self, events: list[Any]) -> None:
        held = _Append(events)
        self.appends.append(held)
        self._grew.set()
        await held.done.wait()
        if held.error is not None:
            raise held.error

    async def wait_appends(self, n: int) -> None:
        while len(self.appends) < n:
            self._grew = trio.Event()
            await self._grew.wait()

    def release(self, i: int) -> None:
        held = self.appends[i]
        records = []
        for event in held.events:
            self._seq += 1
            self.state = apply(self.state, event)
            records.append(_Record(self._seq, event))
        for fn in list(self._listeners):
            fn(records)
        held.done.set()

    def fail(self, i: int, error: Exception) -> None:
        self.appends[i].error = error
        self.appends[i].done.set()


@attrs.define
class FakeContext:
    """What the AssetActor uses of the runtime's Context."""

    journal: HeldJournal
    ids: Any = uuid.uuid4

    @property
    def state(self) -> Any:
        return self.journal.state

    def now(self) -> float:
        return 1000.0

    async def emit(self, *events: Any) -> None:
        await self.journal.append(list(events))


HASH = "blake3:" + "0" * 64


class FakeBlobs:
    """The blob store as the actor sees it: which hashes are stored."""

    def __init__(self, stored: set[str]) -> None:
        self.stored = stored

    def has(self, hash_text: str) -> bool:
        return hash_text in self.stored

    def remove(self, hash_text: str) -> None:
        self.stored.discard(hash_text)


def accept(job_id: str, key: str | None = None) -> AcceptJob:
    submitted = ev.JobSubmitted(job_id=job_id, workflow_sha256="0" * 64, at=1000.0)
    return AcceptJob(job_id=job_id, labels={}, input_assets={}, submitted=submitted, key=key)


def kinds(events: list[Any]) -> list[type]:
    return [type(e) for e in events]


async def spawn(journal: HeldJournal, system: Any, blobs: Any = None) -> Any:
    blobs = blobs if blobs is not None else FakeBlobs({HASH})
    return await system.spawn(
        functools.partial(AssetActor, FakeContext(journal), blobs, Retention()), name="assets"
    )


async def test_a_submission_is_claimed_submitted_and_queued_in_one_append() -> None:
    """The key claim, the API facts, JobSubmitted and JobQueued go in one append, and the
    job is queued (pending -> queued) once it is applied."""
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system)
            msg = accept("job-a", key="k")
            await ref.tell(msg)
            await trio.testing.wait_all_tasks_blocked()
            journal.release(0)
            assert isinstance(await msg.reply.wait(), Claimed)
    assert [kinds(a.events) for a in journal.appends] == [
        [se.IdempotencyKeyClaimed, se.ApiJobAccepted, ev.JobSubmitted, ev.JobQueued]
    ]
    assert journal.state.jobs["job-a"].status == "queued"


async def test_submissions_are_decided_and_appended_while_an_append_is_in_flight() -> None:
    """While the first append waits for its fsync, the next submissions are decided at once
    (a key reused before its claim is applied is refused) and appended behind it."""
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system)
            first, second, reused = accept("a", "k1"), accept("b", "k2"), accept("c", "k1")
            await ref.tell(first)
            await trio.testing.wait_all_tasks_blocked()
            assert len(journal.appends) == 1
            await ref.tell(second)
            await ref.tell(reused)
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(await reused.reply.wait(), KeyReused)
            assert len(journal.appends) == 2  # b's, appended before a's is durable
            assert not first.reply.done
            assert not second.reply.done
            journal.release(0)
            assert isinstance(await first.reply.wait(), Claimed)
            assert not second.reply.done
            journal.release(1)
            assert isinstance(await second.reply.wait(), Claimed)
    assert [a.events[1].job_id for a in journal.appends] == ["a", "b"]


async def test_a_reply_is_answered_as_its_append_is_applied() -> None:
    """A submission's reply is set in the commit that applies it (the journal listener), not
    one scheduler pass later by the actor."""
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system)
            msg = accept("job-a")
            await ref.tell(msg)
            await trio.testing.wait_all_tasks_blocked()
            journal.release(0)  # applies and calls the listeners, no schedule point
            assert msg.reply.done
            assert isinstance(await msg.reply.wait(), Claimed)


async def test_the_actors_own_appends_wait_for_the_submissions_in_flight() -> None:
    """An asset record (an append of the actor's own) goes after the submissions decided
    before it are durable, never ahead of them."""
    journal = HeldJournal()
    record = RecordAsset(
        hash=HASH,
        size=1,
        content_type="image/png",
        file_path="a.png",
        tags=(),
    )
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system)
            msg = accept("job-a")
            await ref.tell(msg)
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.ask, record)
                await trio.testing.wait_all_tasks_blocked()
                assert len(journal.appends) == 1
                journal.release(0)
                await trio.testing.wait_all_tasks_blocked()
                assert kinds(journal.appends[1].events) == [se.AssetRecorded]
                journal.release(1)


async def test_a_failed_append_fails_its_replies() -> None:
    """An append that fails (a full disk) fails the replies of its submissions with its
    error; the actor crashes (its supervisor restarts it) and later submissions go on."""
    journal = HeldJournal()
    with trio.fail_after(10):
        async with open_actor_system() as system:
            ref = await spawn(journal, system)
            msg = accept("job-a")
            await ref.tell(msg)
            await trio.testing.wait_all_tasks_blocked()
            journal.fail(0, OSError("disk full"))
            with pytest.raises(OSError, match="disk full"):
                await msg.reply.wait()
            again = accept("job-b")
            await ref.tell(again)
            await journal.wait_appends(2)  # once the restarted actor appended it
            journal.release(1)
            assert isinstance(await again.reply.wait(), Claimed)
