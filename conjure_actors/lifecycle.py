"""Lifecycle events of the actor runtime, journaled like every other event.

A pure module at the bottom of the stack (it imports only msgspec), so that both the generic
runtime (which emits these, see :mod:`conjure_actors.runtime.events`) and the domain (whose
event union includes them, so that a replay shows every start, crash, restart and escalation)
may import it without the domain importing the runtime. The runtime knows actors by name,
never by what they do. Tags are stable strings: renaming a class never breaks an old log.
"""

from __future__ import annotations

import msgspec


class ActorStarted(msgspec.Struct, frozen=True, tag="actor.started"):
    """Emitted by a supervisor once a child actor's task is running."""

    actor: str
    incarnation: int
    at: float


class ActorCrashed(msgspec.Struct, frozen=True, tag="actor.crashed"):
    """Emitted by a supervisor when a child raised; carries the exception type and message."""

    actor: str
    incarnation: int
    error_type: str
    message: str
    at: float


class ActorRestarted(msgspec.Struct, frozen=True, tag="actor.restarted"):
    """Emitted by a supervisor when it restarts a child after ``delay`` seconds of backoff."""

    actor: str
    incarnation: int
    delay: float
    at: float


class ActorStopped(msgspec.Struct, frozen=True, tag="actor.stopped"):
    """Emitted by a supervisor when a child's incarnation ended and it does not come back by
    itself. ``reason``: ``normal`` (it stopped itself), ``crashed`` (not restarted by its
    restart type), ``stopped`` (``stop_child``), ``shutdown``, ``restart`` (stopped so that its
    group restarts), ``escalated`` (its supervisor gave up), ``failed`` (a dynamic child whose
    ``on_start`` raised), ``cancelled`` (cancelled from outside). ``forced``: it did not stop
    within its graceful deadline and was cancelled."""

    actor: str
    incarnation: int
    reason: str
    at: float
    forced: bool = False


class SupervisorEscalated(msgspec.Struct, frozen=True, tag="actor.escalated"):
    """Emitted by a supervisor whose restart intensity was exceeded, before it fails upward."""

    supervisor: str
    child: str
    restarts: int
    window: float
    at: float


LifecycleEvent = ActorStarted | ActorCrashed | ActorRestarted | ActorStopped | SupervisorEscalated

LIFECYCLE_EVENTS: tuple[type[msgspec.Struct], ...] = (
    ActorStarted,
    ActorCrashed,
    ActorRestarted,
    ActorStopped,
    SupervisorEscalated,
)
