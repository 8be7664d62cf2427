"""A bounded foreground priority: background work yields while foreground work is in flight.

trio runs every runnable task once per scheduler pass (a *batch*), in no set order. A task
that awaits anything (a channel, a lock, a commit) runs again one batch later at the
earliest, so a piece of latency-sensitive *foreground* work that awaits ten times (a request
that goes through a framework, an actor and a journal commit) pays for ten batches of
whatever else is runnable. When that else is plenty of *background* work (jobs being run),
each of those batches is long and the foreground's latency grows with the backlog.

:class:`PriorityGate` lets the foreground say when it is in flight (:meth:`~PriorityGate.enter`
and :meth:`~PriorityGate.leave`, plain calls that never wait) and makes background work wait
at cheap points (:meth:`~PriorityGate.background_turn`, e.g. before each message of a
background actor) while it is. The foreground never waits on the gate. The rules:

- The gate is closed while foreground work is in flight, and for ``linger`` seconds after
  the last of it ended (a client's next request on a kept-alive connection follows its
  answer within a millisecond or so; a background step started in that gap would delay it).
  Otherwise it is open: ``background_turn`` returns at once, without a schedule point.
- The waiters parked at a closed gate form a *cohort*; its first waiter (the leader) watches
  the gate for all of them. The cohort goes on together when the gate opens, or when the
  leader's ``max_wait`` has passed, whichever comes first; in the second case the gate then
  stays open ``turn`` seconds whatever the foreground does (a background turn).

So a background waiter never waits longer than ``max_wait`` (the hard bound), and under
sustained foreground load the background still gets ``turn`` of every ``max_wait + turn``
seconds at least: a backlog drains, however busy the foreground is.

Background work is marked by where it runs: :meth:`PriorityGate.background` marks the current
task, and every task it starts from then on (trio copies the context into child tasks), so a
background actor's helpers are background work too. :func:`background_checkpoint` is the cheap
point such code awaits (an I/O wrapper, a loop): a no-op in any other task.

Deadlock-free by construction as long as nothing the foreground awaits is itself gated: gate
only work no foreground waits for (the worst case is then a delay of ``max_wait`` per gated
step of work the foreground does wait for, never a hang). The gate knows nothing of what
the foreground or the background are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

import attrs
import trio

DEFAULT_MAX_WAIT: Final = 0.03
"""Seconds a background waiter waits at most while the gate is closed."""
DEFAULT_TURN: Final = 0.001
"""Seconds the gate stays open for the background once a cohort's ``max_wait`` passed."""
DEFAULT_LINGER: Final = 0.0
"""Seconds the gate stays closed after the last foreground work ended."""

_BACKGROUND: ContextVar[PriorityGate | None] = ContextVar("conjure_background_gate", default=None)


async def background_checkpoint() -> None:
    """In background work (see :meth:`PriorityGate.background`), wait for its turn at its
    gate; anywhere else, and while the gate is open, return at once (no schedule point)."""
    gate = _BACKGROUND.get()
    if gate is not None:
        await gate.background_turn()


def _seconds(name: str, value: float, *, positive: bool) -> float:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a {kind} number of seconds, not {value!r}")
    return float(value)


@attrs.frozen
class GateStatistics:
    """A snapshot of a :class:`PriorityGate`."""

    foreground: int
    """Foreground work in flight now."""
    waiting: int
    """Background waiters parked now."""
    waits: int
    """Background waits so far (calls of ``background_turn`` that parked)."""
    released_open: int
    """Cohorts that went on because the gate opened."""
    released_bound: int
    """Cohorts that went on because their ``max_wait`` passed (the fairness bound)."""
    longest_wait: float
    """The longest a background waiter waited, in seconds (trio's clock)."""


class PriorityGate:
    """Foreground first, background within a bound (see the module docstring)."""

    def __init__(
        self,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        turn: float = DEFAULT_TURN,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self.max_wait = DEFAULT_MAX_WAIT
        self.turn = DEFAULT_TURN
        self.linger = DEFAULT_LINGER
        self.tune(max_wait=max_wait, turn=turn, linger=linger)
        self._foreground = 0
        self._quiet_until = -math.inf  # closed until then after the last leave (linger)
        self._open_until = -math.inf  # open until then (a background turn)
        # The current cohort: its waiters park on _release; its leader on _wake (set when
        # the foreground goes idle, so it can look again) until _due at the latest.
        self._release = trio.Event()
        self._cohort = 0
        self._due = math.inf
        self._wake: trio.Event | None = None
        self._waits = 0
        self._released_open = 0
        self._released_bound = 0
        self._longest = 0.0

    def tune(
        self,
        *,
        max_wait: float | None = None,
        turn: float | None = None,
        linger: float | None = None,
    ) -> None:
        """Change the bound, the turn or the linger (seconds; None: unchanged)."""
        if max_wait is not None:
            self.max_wait = _seconds("max_wait", max_wait, positive=True)
        if turn is not None:
            self.turn = _seconds("turn", turn, positive=False)
        if linger is not None:
            self.linger = _seconds("linger", linger, positive=False)

    # -- the foreground (never waits) -------------------------------------------------------

    def enter(self) -> None:
        """Foreground work starts: the gate closes (background work waits, within the bound)."""
        self._foreground += 1

    def leave(self) -> None:
        """Foreground work ends (once per :meth:`enter`): with none left, the gate opens
        after ``linger`` seconds."""
        if self._foreground <= 0:
            raise RuntimeError("PriorityGate.leave() without a matching enter()")
        self._foreground -= 1
        if self._foreground:
            return
        self._quiet_until = trio.current_time() + self.linger if self.linger else -math.inf
        if self._wake is not None:
            self._wake.set()  # the leader looks again (see _lead)

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """``enter`` on the way in, ``leave`` on the way out (an exception included)."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextmanager
    def background(self) -> Iterator[None]:
        """Mark the current task, and the tasks it starts in the block, as this gate's
        background work (what :func:`background_checkpoint` makes wait)."""
        token = _BACKGROUND.set(self)
        try:
            yield
        finally:
            _BACKGROUND.reset(token)

    @property
    def busy(self) -> bool:
        """True while foreground work is in flight."""
        return self._foreground > 0

    def is_open(self) -> bool:
        """True if background work arriving now would go on at once."""
        now = trio.current_time()
        if now < self._open_until:
            return True
        return not self._foreground and now >= self._quiet_until

    # -- the background ---------------------------------------------------------------------

    async def background_turn(self) -> None:
        """Return once background work may go on: at once (no schedule point) while the gate
        is open, else once it opens or ``max_wait`` seconds passed (see the module
        docstring). Cancellable."""
        if not self._foreground:
            if not self.linger:
                return
            now = trio.current_time()
            if now >= self._quiet_until:
                return
        else:
            now = trio.current_time()
        if now < self._open_until:
            return
        self._waits += 1
        release = self._release
        if self._cohort:
            self._cohort += 1
            try:
                await release.wait()  # the leader releases the cohort (within max_wait)
            except BaseException:  # cancelled: it no longer counts as waiting
                if release is self._release:
                    self._cohort -= 1
                raise
        else:
            self._cohort = 1
            self._due = now + self.max_wait
            try:
                await self._lead()
            finally:
                # The leader leaving, whatever the reason (a cancellation too), releases
                # its cohort: nobody else watches the gate for it.
                if release is self._release:
                    self._open()
        self._longest = max(self._longest, trio.current_time() - now)

    async def _lead(self) -> None:
        """The leader's watch: return once its cohort may go on."""
        while True:
            now = trio.current_time()
            if now >= self._due:
                # The bound: the cohort goes on, and the background gets a turn.
                self._released_bound += 1
                self._open_until = now + self.turn
                return
            if not self._foreground:
                if now >= self._quiet_until:
                    self._released_open += 1
                    return
                deadline = min(self._due, self._quiet_until)
            else:
                deadline = self._due
            wake = self._wake = trio.Event()
            with trio.move_on_at(deadline):
                await wake.wait()

    def _open(self) -> None:
        self._release.set()
        self._release = trio.Event()
        self._cohort = 0
        self._due = math.inf
        self._wake = None

    def statistics(self) -> GateStatistics:
        """Counters: foreground in flight, waiters, releases by opening and by the bound."""
        return GateStatistics(
            foreground=self._foreground,
            waiting=self._cohort,
            waits=self._waits,
            released_open=self._released_open,
            released_bound=self._released_bound,
            longest_wait=self._longest,
        )
