"""Lifecycle events of the actor runtime: re-exported from :mod:`conjure_actors.lifecycle`.

They live in that pure module (below both the runtime and the domain) so that the domain's
event union can include them without importing the runtime.
"""

from __future__ import annotations

from conjure_actors.lifecycle import (
    LIFECYCLE_EVENTS,
    ActorCrashed,
    ActorRestarted,
    ActorStarted,
    ActorStopped,
    LifecycleEvent,
    SupervisorEscalated,
)

__all__ = [
    "LIFECYCLE_EVENTS",
    "ActorCrashed",
    "ActorRestarted",
    "ActorStarted",
    "ActorStopped",
    "LifecycleEvent",
    "SupervisorEscalated",
]
