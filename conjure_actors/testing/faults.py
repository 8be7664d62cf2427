"""Faults the harness can inject into the simulated cloud, now or on a schedule.

A fault is a small frozen object with ``apply(harness)``; a *fault schedule* is a list of
:class:`TimedFault` (apply ``fault`` once ``after`` simulated seconds have passed). Faults
are values, so hypothesis prints and shrinks them like any other argument:

- :class:`Knobs`: set the probabilistic fault knobs of RunComfy and of every ComfyUI (429
  bursts, 5xx, launch failures, stuck or slow machines, WebSocket drops, node errors, the
  history race, truncated downloads ...), replacing the previous knobs;
- :class:`RateLimitBurst`: the next ``length`` RunComfy requests answer 429;
- :class:`RestartComfyUI`: a machine's ComfyUI restarts (forgets queue, history, sockets);
- :class:`LoseMachine`: a machine vanishes (404, its ComfyUI gone, billing stopped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

from conjure_actors.sim import CloudFaults, ComfyFaults, RunComfyFaults

if TYPE_CHECKING:
    from conjure_actors.testing.harness import Harness

__all__ = [
    "Fault",
    "Knobs",
    "LoseMachine",
    "RateLimitBurst",
    "RestartComfyUI",
    "TimedFault",
]


class Fault(Protocol):
    """Anything the harness can apply to its cloud."""

    def apply(self, harness: Harness) -> None: ...


def _nonzero(obj: Any) -> str:
    """Only the knobs that differ from their defaults (a readable repr)."""
    default = type(obj)()
    parts = [
        f"{a.name}={getattr(obj, a.name)!r}"
        for a in attrs.fields(type(obj))
        if getattr(obj, a.name) != getattr(default, a.name)
    ]
    return f"{type(obj).__name__}({', '.join(parts)})"


@attrs.frozen(repr=False)
class Knobs:
    """Replace the cloud's probabilistic fault knobs (all zero: no faults)."""

    runcomfy: RunComfyFaults = attrs.field(factory=RunComfyFaults)
    comfyui: ComfyFaults = attrs.field(factory=ComfyFaults)

    def apply(self, harness: Harness) -> None:
        harness.cloud.set_faults(CloudFaults(runcomfy=self.runcomfy, comfyui=self.comfyui))

    def __repr__(self) -> str:
        return f"Knobs(runcomfy={_nonzero(self.runcomfy)}, comfyui={_nonzero(self.comfyui)})"


@attrs.frozen
class RateLimitBurst:
    """The next ``length`` RunComfy requests answer 429 with ``Retry-After``."""

    length: int = 3

    def apply(self, harness: Harness) -> None:
        harness.cloud.runcomfy.inject_rate_limit_burst(self.length)


@attrs.frozen
class RestartComfyUI:
    """The ``index``-th live machine's ComfyUI (mod their count) restarts."""

    index: int = 0

    def apply(self, harness: Harness) -> None:
        sims = [sim for _, sim in sorted(harness.cloud.live_machines().items())]
        if sims:
            sims[self.index % len(sims)].restart()


@attrs.frozen
class LoseMachine:
    """The ``index``-th running machine (mod their count) vanishes."""

    index: int = 0

    def apply(self, harness: Harness) -> None:
        running = sorted(harness.cloud.running())
        if running:
            server_id = running[self.index % len(running)]
            harness.cloud.runcomfy.vanish(server_id)
            harness.lost.append(server_id)


@attrs.frozen
class TimedFault:
    """``fault``, applied once ``after`` simulated seconds have passed."""

    after: float
    fault: Fault
