"""Faults the harness can inject into the simulated cloud, now or on a schedule.

A fault is a small frozen object with ``apply(harness)``; a *fault schedule* is a list of
:class:`TimedFault` (apply ``fault`` once ``after`` simulated seconds have passed). Faults
are values, so hypothesis prints and shrinks them like any other argument:

- :class:`Knobs`: set the probabilistic fault knobs of RunComfy and of every ComfyUI (429
  bursts, 5xx, launch failures, stuck or slow machines, WebSocket drops, node errors, the
  history race, truncated downloads ...), replacing the previous knobs;
- :class:`RateLimitBurst`: the next ``length`` RunComfy requests answer 429;
- :class:`RestartComfyUI`: a machine's ComfyUI restarts (forgets queue, history, sockets);
- :class:`LoseMachine`: a machine vanishes (404, its ComfyUI gone, billing stopped);
- :class:`DeleteDoesNotTake`: the next ``count`` RunComfy ``DELETE``s answer 200 (the
  machine as it is) but the machine keeps running and billing;
- :class:`LaunchesLag`: machines launched from now on show up in the listings only after
  ``listings`` listings (0: at once again);
- :class:`ListingMisses`: the ``index``-th running machine is left out of the next
  ``listings`` ``GET /servers`` answers (a lagging listing: the runtime may take it for
  lost while it runs and bills on).

The last two are not knobs of the simulator: they wrap the RunComfy sim's request handler
(:func:`cloud_tricks`), reaching into it from the outside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from conjure_actors.sim import CloudFaults, ComfyFaults, RunComfyFaults

if TYPE_CHECKING:
    from conjure_actors.testing.harness import Harness

__all__ = [
    "DeleteDoesNotTake",
    "Fault",
    "Knobs",
    "LaunchesLag",
    "ListingMisses",
    "LoseMachine",
    "RateLimitBurst",
    "RestartComfyUI",
    "TimedFault",
    "cloud_tricks",
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


@attrs.define
class _Tricks:
    """Faults the RunComfy sim has no knob for, installed by wrapping its handler."""

    deletes_ignored: int = 0
    hidden: dict[str, int] = attrs.field(factory=dict)  # server id -> listings left hidden
    ignored: list[str] = attrs.field(factory=list)  # server ids whose DELETE did not take
    last_fooled: dict[str, float] = attrs.field(factory=dict)  # server id -> trio time
    ever_hidden: set[str] = attrs.field(factory=set)  # left out of a listing at least once
    new_lag: int = 0  # listings a machine first seen from now on is left out of
    known: set[str] = attrs.field(factory=set)  # machines the listings have met

    def fooling(self, server_id: str, now: float, grace: float) -> bool:
        """Whether the runtime may still be fooled about ``server_id`` (hidden now, or
        fooled less than ``grace`` seconds ago)."""
        if self.hidden.get(server_id, 0) > 0:
            return True
        at = self.last_fooled.get(server_id)
        return at is not None and now - at < grace


def cloud_tricks(harness: Harness) -> _Tricks:
    """The tricks installed on ``harness``'s RunComfy sim (installed on first use)."""
    rc: Any = harness.cloud.runcomfy
    tricks: _Tricks | None = getattr(rc, "_harness_tricks", None)
    if tricks is not None:
        return tricks
    tricks = _Tricks()
    handle = rc._handle
    visible = rc._visible
    stop = rc._stop

    def ignored_stop(m: Any, at: float, reason: str) -> None:
        if reason == "stopped" and tricks.deletes_ignored > 0 and m.stopped_at is None:
            tricks.deletes_ignored -= 1
            tricks.ignored.append(m.server_id)
            tricks.last_fooled[m.server_id] = trio.current_time()
            return
        stop(m, at, reason)

    def wrapped_handle(scope: Any, body: bytes) -> Any:
        if scope.get("method") != "DELETE":
            return handle(scope, body)
        rc._stop = ignored_stop  # only the DELETE route stops within one (sync) call
        try:
            return handle(scope, body)
        finally:
            del rc._stop

    def wrapped_visible() -> list[Any]:
        shown = []
        for m in visible():
            if m.server_id not in tricks.known:
                tricks.known.add(m.server_id)
                if tricks.new_lag > 0:
                    tricks.hidden[m.server_id] = tricks.new_lag
            left = tricks.hidden.get(m.server_id, 0)
            if left > 0:
                tricks.hidden[m.server_id] = left - 1
                tricks.last_fooled[m.server_id] = trio.current_time()
                tricks.ever_hidden.add(m.server_id)
                continue
            shown.append(m)
        return shown

    rc._handle = wrapped_handle
    rc._visible = wrapped_visible
    rc._harness_tricks = tricks
    return tricks


@attrs.frozen
class DeleteDoesNotTake:
    """The next ``count`` ``DELETE``s answer 200 but the machine runs (and bills) on."""

    count: int = 1

    def apply(self, harness: Harness) -> None:
        cloud_tricks(harness).deletes_ignored += self.count


@attrs.frozen
class ListingMisses:
    """The ``index``-th running machine (mod their count) is missing from the next
    ``listings`` listings (it runs and bills all along)."""

    index: int = 0
    listings: int = 3

    def apply(self, harness: Harness) -> None:
        running = sorted(harness.cloud.running())
        if running:
            sid = running[self.index % len(running)]
            tricks = cloud_tricks(harness)
            tricks.hidden[sid] = tricks.hidden.get(sid, 0) + self.listings


@attrs.frozen
class LaunchesLag:
    """Machines launched from now on are missing from their first ``listings`` listings
    (a launch whose answer is lost then lands late; 0 ends the lag)."""

    listings: int = 15

    def apply(self, harness: Harness) -> None:
        tricks = cloud_tricks(harness)
        if self.listings > 0:  # (0: a machine launched but not listed yet still lags)
            tricks.known.update(m for m in harness.cloud.running())
        tricks.new_lag = self.listings
