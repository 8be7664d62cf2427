"""The actor system: lifecycle events through the journal, scrubbing, clocks, public names."""

from __future__ import annotations

import trio

import conjure_actors.runtime as runtime
from conjure_actors.clock import TrioWallClock
from conjure_actors.runtime import (
    MAX_MESSAGE,
    NO_BACKOFF,
    Actor,
    ActorCrashed,
    ActorRestarted,
    ActorStarted,
    ActorStopped,
    LifecycleEvent,
    ListSink,
    open_actor_system,
)
from eventlog import MemoryLog, open_journal

CAP = 30


class Blower(Actor):
    """Raises the message it gets (a string) as a RuntimeError."""

    async def receive(self, msg: str) -> None:
        raise RuntimeError(msg)


def test_public_names_are_exported() -> None:
    """runtime.__all__ lists exactly the public names, each importable."""
    public = {n for n in dir(runtime) if not n.startswith("_")}
    modules = {
        "actor",
        "disk",
        "errors",
        "events",
        "gate",
        "policy",
        "process",
        "sink",
        "supervisor",
        "system",
        "threads",
    }
    assert set(runtime.__all__) == public - modules
    assert all(getattr(runtime, name) is not None for name in runtime.__all__)
    assert runtime.__all__ == sorted(runtime.__all__, key=lambda n: (not n.isupper(), n))


async def test_one_crash_journals_the_full_lifecycle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Start, crash, restart, start again, stop: each a lifecycle event, in that order."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(sink, TrioWallClock(epoch=1000.0), backoff=NO_BACKOFF) as s:
            ref = await s.spawn(Blower, name="b")
            await trio.sleep(1)
            await ref.tell("boom")
            await trio.sleep(1)
    assert sink.events == [
        ActorStarted(actor="root", incarnation=1, at=1000.0),
        ActorStarted(actor="root/b", incarnation=1, at=1000.0),
        ActorCrashed(
            actor="root/b", incarnation=1, error_type="RuntimeError", message="boom", at=1001.0
        ),
        ActorRestarted(actor="root/b", incarnation=2, delay=0.0, at=1001.0),
        ActorStarted(actor="root/b", incarnation=2, at=1001.0),
        ActorStopped(actor="root/b", incarnation=2, reason="shutdown", at=1002.0),
        ActorStopped(actor="root", incarnation=1, reason="shutdown", at=1002.0),
    ]


async def test_crash_message_is_scrubbed_and_truncated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """URLs and tokens never reach the journal; long messages are cut to MAX_MESSAGE."""
    sink = ListSink()
    secret = "GET https://abc123-machine.runcomfy.net/prompt failed, token=s3cr3t " + "x" * 500
    with trio.fail_after(CAP):
        async with open_actor_system(sink, backoff=NO_BACKOFF) as system:
            ref = await system.spawn(Blower, name="b")
            await ref.tell(secret)
            await trio.testing.wait_all_tasks_blocked()
    (crash,) = [e for e in sink.events if isinstance(e, ActorCrashed)]
    assert "runcomfy" not in crash.message
    assert "s3cr3t" not in crash.message
    assert crash.message.startswith("GET <url> failed, token=<redacted> xxx")
    assert len(crash.message) == MAX_MESSAGE


async def test_caller_scrubber_is_applied(autojump_clock: trio.testing.MockClock) -> None:
    """A scrub function given to the system cleans crash messages its own way."""
    sink = ListSink()
    with trio.fail_after(CAP):
        async with open_actor_system(
            sink, backoff=NO_BACKOFF, scrub=lambda m: m.replace("user-42", "<user>")
        ) as system:
            ref = await system.spawn(Blower, name="b")
            await ref.tell("quota of user-42 exceeded")
            await trio.testing.wait_all_tasks_blocked()
    (crash,) = [e for e in sink.events if isinstance(e, ActorCrashed)]
    assert crash.message == "quota of <user> exceeded"


async def test_lifecycle_events_go_through_a_real_eventlog_journal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """eventlog's Journal (over a MemoryLog) is a sink: the records hold the same events."""
    mirror = ListSink()

    class Tee:
        def __init__(self, journal: object) -> None:
            self.journal = journal

        async def append(self, event: object, /) -> object:
            await mirror.append(event)
            return await self.journal.append(event)  # type: ignore[attr-defined]

    store: MemoryLog[LifecycleEvent] = MemoryLog(LifecycleEvent, clock=lambda: 0.0)
    with trio.fail_after(CAP):
        async with open_journal(store, LifecycleEvent) as journal:
            async with open_actor_system(Tee(journal), backoff=NO_BACKOFF) as system:
                ref = await system.spawn(Blower, name="b")
                await ref.tell("once")
                await trio.testing.wait_all_tasks_blocked()
            records = list(store.records())
    assert [r.event for r in records] == mirror.events
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert any(isinstance(r.event, ActorCrashed) for r in records)


async def test_journal_is_optional() -> None:
    """journal=None: actors run and nothing is journaled anywhere."""
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            ref = await system.spawn(Blower, name="b")
            assert system.journal is None
            assert ref.statistics().incarnation == 1


async def test_lookup_finds_live_actors_by_path() -> None:
    """system.lookup(path) returns the ref of a live actor or supervisor, else None."""
    with trio.fail_after(CAP):
        async with open_actor_system() as system:
            jobs = await system.spawn_supervisor("jobs")
            ref = await jobs.spawn(Blower, name="j1")
            assert system.lookup("root/jobs") is jobs
            assert system.lookup("root/jobs/j1") is ref
            assert system.lookup("root/none") is None
