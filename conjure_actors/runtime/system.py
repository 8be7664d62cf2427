"""The actor system: the root supervisor, the journal, the clocks, and the way in and out.

::

    async with open_actor_system(journal=journal, clock=TrioWallClock()) as system:
        machines = await system.spawn(MachineActor, name="machines")
        jobs = await system.spawn_supervisor("jobs", restart=Restart.PERMANENT)
        ...
    # leaving the block stops everything in reverse start order, each with its deadline

All timing goes through trio (``trio.sleep``, ``trio.current_time``), so a test under
``MockClock`` sees restarts, backoffs and deadlines pass instantly; ``clock`` only stamps the
wall time (``at``) of lifecycle events. If the root supervisor escalates, the block is
cancelled and ``open_actor_system`` raises :class:`EscalationError`.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from conjure_actors.clock import SystemWallClock, WallClock
from conjure_actors.errgroups import unwrap
from conjure_actors.runtime.actor import DEFAULT_MAILBOX, Actor, ActorRef
from conjure_actors.runtime.errors import ActorError
from conjure_actors.runtime.events import ActorStarted, ActorStopped
from conjure_actors.runtime.gate import PriorityGate
from conjure_actors.runtime.policy import (
    DEFAULT_BACKOFF,
    DEFAULT_INTENSITY,
    Backoff,
    Intensity,
    Restart,
    Strategy,
)
from conjure_actors.runtime.sink import EventSink, Scrubber, default_scrub, emit, emit_many
from conjure_actors.runtime.supervisor import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    ChildSpec,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
)
from conjure_actors.runtime.threads import prompt_gil_handoff


class ActorSystem:
    """Owns the root supervisor; everything else hangs below it. Made by
    :func:`open_actor_system`."""

    def __init__(
        self,
        *,
        journal: EventSink | None,
        clock: WallClock,
        rng: random.Random,
        scrub: Scrubber,
        gate: PriorityGate | None = None,
    ) -> None:
        self.journal = journal
        # Foreground work (a service's requests) enters it; background supervisors' actors
        # wait for their turn at it. Nobody enters it unless told: then it is always open.
        self.gate = gate if gate is not None else PriorityGate()
        self.clock = clock
        self._rng = rng
        self._scrub = scrub
        self._registry: dict[str, ActorRef | SupervisorRef] = {}
        self._root: Supervisor | None = None
        self._root_done = trio.Event()

    @property
    def root(self) -> SupervisorRef:
        """The root supervisor."""
        if self._root is None:
            raise ActorError("the actor system is not running")
        return self._root.ref

    async def spawn(
        self,
        factory: Callable[[], Actor],
        *,
        name: str,
        restart: Restart = Restart.PERMANENT,
        mailbox_size: float = DEFAULT_MAILBOX,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> ActorRef:
        """Start an actor under the root supervisor; see :meth:`SupervisorRef.spawn`."""
        return await self.root.spawn(
            factory,
            name=name,
            restart=restart,
            mailbox_size=mailbox_size,
            shutdown_timeout=shutdown_timeout,
        )

    async def spawn_supervisor(
        self,
        name: str,
        *,
        children: Sequence[ChildSpec] = (),
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: Intensity = DEFAULT_INTENSITY,
        backoff: Backoff = DEFAULT_BACKOFF,
        restart: Restart = Restart.PERMANENT,
        shutdown_timeout: float = math.inf,
        background: bool = False,
    ) -> SupervisorRef:
        """Start a supervisor under the root supervisor (``background``: its actors yield to
        foreground work at :attr:`gate`)."""
        return await self.root.spawn_supervisor(
            name,
            children=children,
            strategy=strategy,
            intensity=intensity,
            backoff=backoff,
            restart=restart,
            shutdown_timeout=shutdown_timeout,
            background=background,
        )

    async def stop(self, ref: ActorRef | SupervisorRef) -> bool:
        """Stop ``ref`` through its parent supervisor (graceful, then cancelled)."""
        parent = self._registry.get(ref.path.rpartition("/")[0])
        if not isinstance(parent, SupervisorRef):
            return False
        return await parent.stop_child(ref)

    def lookup(self, path: str) -> ActorRef | SupervisorRef | None:
        """The live actor or supervisor at ``path`` (e.g. ``root/jobs/job-1``), if any."""
        return self._registry.get(path)

    def _now(self) -> float:
        return self.clock.now()

    async def _emit(self, event: Any) -> None:
        await emit(self.journal, event)

    async def _emit_many(self, events: list[Any]) -> None:
        await emit_many(self.journal, events)

    async def _serve_root(self, root: Supervisor, *, task_status: Any) -> None:
        reason = "shutdown"
        try:
            await root.run(task_status.started)
        except trio.Cancelled:
            reason = "cancelled"
            raise
        except Exception:
            reason = "escalated"
            raise
        finally:
            self._root_done.set()
            await self._emit(
                ActorStopped(
                    actor=root.path, incarnation=root.incarnation, reason=reason, at=self._now()
                )
            )
            root.close()


@asynccontextmanager
async def open_actor_system(
    journal: EventSink | None = None,
    clock: WallClock | None = None,
    *,
    name: str = "root",
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: Intensity = DEFAULT_INTENSITY,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | int | None = None,
    scrub: Scrubber = default_scrub,
    gate: PriorityGate | None = None,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the block.

    ``journal``: where lifecycle events go (``None``: nowhere). ``clock``: wall time for
    events (default :class:`~conjure_actors.clock.SystemWallClock`). ``rng``: a
    ``random.Random`` or a seed, for the backoff jitter (deterministic tests). ``scrub``:
    cleans crash messages before they are journaled. The root supervisor uses ``strategy``,
    ``intensity`` and ``backoff``. ``gate``: the :class:`PriorityGate` background supervisors'
    actors wait at (default: a fresh one, open until someone enters it).

    Leaving the block, normally or by an exception (KeyboardInterrupt included), stops every
    actor gracefully in reverse start order (each within its graceful deadline); if the block is
    cancelled from outside, actors are cancelled at once. If the root supervisor escalates,
    the block is cancelled and this raises :class:`EscalationError`. An exception raised
    alone in the block comes out as itself, not wrapped in an exception group.
    """
    prompt_gil_handoff()  # its worker threads must not wait for the loop to fall idle
    system = ActorSystem(
        journal=journal,
        clock=clock if clock is not None else SystemWallClock(),
        rng=rng if isinstance(rng, random.Random) else random.Random(rng),
        scrub=scrub,
        gate=gate,
    )
    root = Supervisor(
        name, SupervisorSpec(name, strategy=strategy, intensity=intensity, backoff=backoff), system
    )
    system._root = root
    system._registry[name] = root.ref
    try:
        async with trio.open_nursery() as nursery:
            root.prepare()
            await nursery.start(system._serve_root, root)
            await system._emit(ActorStarted(actor=root.path, incarnation=1, at=system._now()))
            try:
                yield system
            finally:
                # Shut down gracefully here, inside the nursery's body: once an exception (say
                # KeyboardInterrupt) leaves the body, trio cancels the nursery and every actor
                # would be cancelled instead of stopped. Outside cancellation still wins.
                root.request_stop()
                await system._root_done.wait()
    except BaseExceptionGroup as group:
        leaf = unwrap(group)
        if leaf is group:
            raise
        raise leaf from leaf.__cause__
    finally:
        system._root = None
