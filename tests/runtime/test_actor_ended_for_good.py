"""An actor that ended for good is freed by reference counting (its ref no longer holds
its cell: the cycle left every ended actor's cell, mailbox and factory to the cyclic GC,
issue 16), and its ref still answers with its last statistics."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from conjure_actors.runtime import (
    Actor,
    ActorRef,
    ActorStoppedError,
    ListSink,
    Restart,
    Status,
    open_actor_system,
)
from conjure_actors.runtime.actor import ActorCell

CAP = 30


class Stopping(Actor):
    async def receive(self, msg: object) -> object:
        self.stop()
        return msg


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects meanwhile: garbage in a cycle stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _ended() -> ActorRef:
    async with open_actor_system(ListSink()) as system:
        jobs = await system.spawn_supervisor("jobs")
        (ref,) = await jobs.spawn_many([("j0", Stopping)], restart=Restart.TRANSIENT)
        assert isinstance(ref, ActorRef)
        await ref.ask("stop")
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.children() == []
        return ref


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_its_cell_is_freed_without_the_cyclic_gc() -> None:
    with trio.fail_after(CAP):
        ref = await _ended()
    cells = [o for o in gc.get_objects() if type(o) is ActorCell and o.path == ref.path]
    assert cells == []


async def test_its_ref_keeps_its_last_statistics_and_refuses_messages() -> None:
    with trio.fail_after(CAP):
        ref = await _ended()
        stats = ref.statistics()
        assert (stats.status, stats.handled, stats.mailbox_depth) == (Status.STOPPED, 1, 0)
        with pytest.raises(ActorStoppedError):
            ref.tell_nowait("late")
        with pytest.raises(ActorStoppedError):
            await ref.ask("late")
