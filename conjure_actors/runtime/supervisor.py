"""Supervisors: OTP-style restart policies on trio nurseries.

A supervisor owns an ordered set of children (actors or supervisors), each described by a
spec. It runs every child's current incarnation as a task in its own nursery and is the only
code that changes its set of children: every change (a child ended, a backoff timer fired, a
``start_child``/``stop_child`` request) arrives as a message on its control channel and is
handled by one loop, one at a time, so there are no races between a crash, a restart and a
request. ``spawn_many`` is one request for several actor children: launched together, their
``on_start`` s run in one scheduler pass (a job supervisor's freed machines start their next
jobs in step), each answered on its own.

Restart, in order (see :mod:`~conjure_actors.runtime.policy` for the vocabulary):

1. a child ends; its crash is journaled (``ActorCrashed``);
2. its restart type says whether it comes back at all (else it is removed: ``ActorStopped``);
3. the restart is counted against the intensity window; one too many and the supervisor
   escalates: ``SupervisorEscalated`` is journaled, every child is stopped (reverse start
   order), and the supervisor raises :class:`EscalationError` to its own parent, which treats
   it as a crash of that child (at the root it leaves ``open_actor_system``);
4. the strategy picks the group to restart; running siblings of the group are stopped in
   reverse start order (``ActorStopped(reason="restart")``), temporary ones are dropped;
5. ``ActorRestarted`` is journaled for each member with the backoff delay, and after the delay
   (a timer task, so the supervisor keeps serving meanwhile) they start again in start order.

Stopping a child: ask it to stop after its current message, wait up to its
``shutdown_timeout``, then cancel it (``ActorStopped(forced=True)``). A supervisor's own
default ``shutdown_timeout`` is infinite: its children's deadlines bound it.

When a supervisor itself is restarted (by its parent), it restarts every child it had: static
and dynamic, except temporary ones. The children's mailboxes (and so their refs) persist.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, overload

import attrs
import trio

from conjure_actors.errgroups import unwrap
from conjure_actors.runtime.actor import (
    _STOPPED_ERRORS,
    BATCH,
    DEFAULT_MAILBOX,
    Actor,
    ActorCell,
    ActorRef,
    Status,
    _Ask,
    spec_capacity,
)
from conjure_actors.runtime.errors import (
    ActorError,
    ActorStoppedError,
    EscalationError,
    NameTakenError,
)
from conjure_actors.runtime.events import (
    ActorCrashed,
    ActorRestarted,
    ActorStarted,
    ActorStopped,
    SupervisorEscalated,
)
from conjure_actors.runtime.policy import (
    DEFAULT_BACKOFF,
    DEFAULT_INTENSITY,
    Backoff,
    Intensity,
    Restart,
    Strategy,
)
from conjure_actors.runtime.sink import crash_message

if TYPE_CHECKING:
    from conjure_actors.runtime.system import ActorSystem

DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds an actor gets to stop gracefully before it is cancelled."""


def _check_name(name: str) -> str:
    if not name or "/" in name:
        raise ValueError(f"an actor name must be non-empty and contain no '/': {name!r}")
    return name


def _specs(
    children: Iterable[ActorSpec | SupervisorSpec],
) -> tuple[ActorSpec | SupervisorSpec, ...]:
    return tuple(children)


@attrs.frozen
class ActorSpec:
    """How to start (and restart) an actor child: ``factory()`` makes each incarnation."""

    factory: Callable[[], Actor]
    name: str = attrs.field(converter=_check_name)
    restart: Restart = Restart.PERMANENT
    mailbox_size: float = attrs.field(default=DEFAULT_MAILBOX, converter=spec_capacity)
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT


@attrs.frozen
class SupervisorSpec:
    """How to start a supervisor child and its initial (static) children."""

    name: str = attrs.field(converter=_check_name)
    children: Sequence[ActorSpec | SupervisorSpec] = attrs.field(default=(), converter=_specs)
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: Intensity = DEFAULT_INTENSITY
    backoff: Backoff = DEFAULT_BACKOFF
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = math.inf
    background: bool = False
    """Its actors (and those of its supervisor children) are background work: each waits
    for its turn at the system's gate (``ActorSystem.gate``) before each message."""


ChildSpec = ActorSpec | SupervisorSpec


@attrs.frozen
class SupervisorStatistics:
    """A snapshot of one supervisor."""

    path: str
    status: Status
    incarnation: int
    restarts: int
    """Times this supervisor itself was restarted by its parent."""
    children: int
    recent_restarts: int
    """Restarts of its children inside the current intensity window."""


# -- control messages ---------------------------------------------------------------------


@attrs.define(slots=True)
class _Exit:
    child: _Child
    run_id: int


@attrs.define(slots=True)
class _RestartDue:
    token: int


@attrs.frozen
class _StartChild:
    spec: ChildSpec


@attrs.frozen
class _StartChildren:
    """Several actor children started together (``SupervisorRef.spawn_many``)."""

    specs: tuple[ActorSpec, ...]


@attrs.frozen
class _StopChild:
    name: str


# -- children -----------------------------------------------------------------------------

_RUNNING: Final = "running"
_STOPPING: Final = "stopping"
_RESTARTING: Final = "restarting"
_IDLE: Final = "idle"  # not running: before the first start, between supervisor incarnations


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


_SETTLED: Final = _set_event()


class _Child:
    """A supervisor's record of one child: its spec, its unit (cell or supervisor), its run."""

    __slots__ = (
        "announced",
        "done",
        "exc",
        "exc_reported",
        "forced",
        "history",
        "open",
        "phase",
        "run_id",
        "scope",
        "settled",
        "spec",
        "start_ok",
        "token",
        "unit",
    )

    def __init__(self, spec: ChildSpec, unit: ActorCell | Supervisor) -> None:
        self.spec = spec
        self.unit = unit
        self.phase = _IDLE
        self.run_id = 0
        self.token = 0
        self.done = trio.Event()
        self.settled = trio.Event()
        self.start_ok = False
        self.scope: trio.CancelScope | None = None
        self.exc: BaseException | None = None
        self.exc_reported = True
        self.forced = False
        # A lifecycle is "open" in the journal between its first event (started, crashed,
        # restarted) and its ActorStopped: no Stopped without an open one, never two.
        self.open = False
        self.announced = 0  # the run_id whose ActorStarted is journaled
        self.history: list[float] = []  # restart times inside the window (not a deque: 700 B)

    @property
    def path(self) -> str:
        return self.unit.path


class Supervisor:
    """A supervisor's state that outlives its incarnations; driven like an actor cell."""

    def __init__(self, path: str, spec: SupervisorSpec, system: ActorSystem) -> None:
        self.path = path
        self.spec = spec
        self.system = system
        self.background = spec.background  # or inherited from its parent (see _add)
        self.ctl_send, self.ctl_recv = trio.open_memory_channel[object](math.inf)
        self.children: dict[str, _Child] = {}
        self.ref = SupervisorRef(self)
        self.status = Status.NEW
        self.incarnation = 0
        self.restarts = 0
        self.stop_requested = False
        self.closed = False
        self._loop_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._window: deque[float] = deque()
        self._inflight: _Ask | None = None
        self._next_run = 0
        self._next_token = 0
        self._moved: trio.Event | None = None  # see moved(): made only when someone waits
        # Lifecycle events held to be journaled together (one append, not one per child:
        # issue 16), in order, while the control loop drains exits or spawn_many announces
        # children already started (_lifecycle); None: each is journaled at once. None is
        # held across a wait for a child, nor past the drain that made it.
        self._held: list[Any] | None = None
        for child_spec in spec.children:
            self._add(child_spec)

    def moved(self) -> trio.Event:
        """Set at the next change of a child's phase or membership (for waiters)."""
        if self._moved is None:
            self._moved = trio.Event()
        return self._moved

    def _note_moved(self) -> None:
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()

    # -- driven by the parent (same protocol as ActorCell) -----------------------------------

    def prepare(self) -> None:
        self.stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True
        if self._loop_scope is not None:
            self._loop_scope.cancel()

    async def run(self, started: Callable[[], None]) -> None:
        """One incarnation: start every child in order, then serve the control channel."""
        self.incarnation += 1
        self.status = Status.STARTING
        self._window.clear()
        reason = "shutdown"
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with trio.CancelScope() as scope:
                        self._loop_scope = scope
                        if self.stop_requested:
                            scope.cancel()
                        for child in list(self.children.values()):
                            if child.phase == _IDLE:
                                await self._start(child)
                        self.status = Status.RUNNING
                        started()
                        await self._loop()
                except EscalationError:
                    reason = "escalated"
                    raise
                finally:
                    self._loop_scope = None
                    self.status = Status.STOPPING
                    inflight, self._inflight = self._inflight, None
                    try:
                        await self._stop_all(reason)
                    finally:
                        if inflight is not None:
                            self._abort_request(inflight)
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    def close(self) -> None:
        """The end for good: close every child and fail requests still queued."""
        if self.closed:
            return
        self.closed = True
        self.status = Status.STOPPED
        for child in list(self.children.values()):
            self._forget(child)
        while True:
            try:
                item = self.ctl_recv.receive_nowait()
            except (trio.WouldBlock, *_STOPPED_ERRORS):
                break
            if isinstance(item, _Ask):
                item.fail(ActorStoppedError(f"supervisor {self.path} is stopped"))
        self.ctl_recv.close()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.restarts,
            children=len(self.children),
            recent_restarts=len(self._window),
        )

    # -- the control loop --------------------------------------------------------------------

    async def _loop(self) -> None:
        # Drained without a schedule point per message (as an actor's mailbox, ActorCell):
        # ten jobs' actors ending in one pass are journaled in that pass, not one per pass.
        # It awaits when empty, and checkpoints every BATCH messages (after one is handled:
        # a cancel there loses none).
        # The ActorStopped of the exits drained in one pass are journaled in one append when
        # the mailbox is empty (or before any other message): ten jobs' ends, one append.
        receive = self.ctl_recv.receive
        receive_nowait = self.ctl_recv.receive_nowait
        budget = BATCH
        try:
            while True:
                try:
                    msg = receive_nowait()
                except trio.WouldBlock:
                    await self._release_held()
                    budget = BATCH
                    msg = await receive()
                if isinstance(msg, _Exit):
                    if self._held is None:
                        self._held = []
                    await self._on_exit(msg)
                else:
                    await self._release_held()
                    if isinstance(msg, _RestartDue):
                        await self._restart_due(msg.token)
                    elif isinstance(msg, _Ask) and not msg.abandoned:
                        # Not cleared on failure: run()'s cleanup fails a request left half
                        # done.
                        self._inflight = msg
                        await self._on_request(msg)
                        self._inflight = None
                budget -= 1
                if not budget:
                    budget = BATCH
                    await self._release_held()
                    await trio.lowlevel.checkpoint()
        finally:
            await self._release_held()  # (shielded: before _stop_all's events, in order)

    async def _lifecycle(self, event: Any) -> None:
        """Journal a lifecycle event of a child: held if events are being held, else now."""
        held = self._held
        if held is not None:
            held.append(event)
            return
        await self.system._emit(event)

    async def _release_held(self, *, keep: bool = False) -> None:
        """Journal the held events, in order, in one append; go on holding only if ``keep``
        (and events were being held)."""
        held = self._held
        self._held = [] if keep and held is not None else None
        if held:
            await self.system._emit_many(held)

    async def _on_request(self, req: _Ask) -> None:
        cmd = req.msg
        if isinstance(cmd, _StartChild):
            try:
                child = self._add(cmd.spec)
            except NameTakenError as exc:
                req.fail(exc)
                return
            if await self._start(child):
                req.resolve(child.unit.ref)
                return
            # Failed in on_start (OTP: the child is not added): report, drop, tell the caller.
            self.children.pop(child.spec.name, None)
            await self._report_crash(child)
            await self._stopped_event(child, "failed")
            self._forget(child)
            req.fail(
                child.exc
                if child.exc is not None
                else ActorStoppedError(f"actor {child.path} stopped while starting")
            )
        elif isinstance(cmd, _StartChildren):
            req.resolve(await self._start_together(cmd.specs))
        elif isinstance(cmd, _StopChild):
            found = self.children.get(cmd.name)
            if found is None:
                req.resolve(False)
                return
            if found.phase in (_RUNNING, _STOPPING):
                await self._stop(found, "stopped")
            else:
                await self._stopped_event(found, "stopped")
            self.children.pop(cmd.name, None)
            self._forget(found)
            req.resolve(True)

    async def _start_together(self, specs: tuple[ActorSpec, ...]) -> list[ActorRef | Exception]:
        """Add and launch every child of ``specs`` at once, then wait for each to start: one
        scheduler pass for all their ``on_start`` s, not a request's round trip each. Each
        gets its own answer, in order: its ref, or why it did not start (a name taken, its
        ``on_start`` failed: that child alone, as with ``_StartChild``)."""
        answers: list[ActorRef | Exception | None] = [None] * len(specs)
        added: list[tuple[int, _Child]] = []
        for i, spec in enumerate(specs):
            try:
                added.append((i, self._add(spec)))
            except NameTakenError as exc:
                answers[i] = exc
        for _, child in added:
            self._launch(child)
        # The children found started together are announced in one append (_started
        # journals what it held before it waits for a child).
        self._held = []
        try:
            for i, child in added:
                if await self._started(child):
                    ref = child.unit.ref
                    assert isinstance(ref, ActorRef)
                    answers[i] = ref
                    continue
                self.children.pop(child.spec.name, None)
                await self._report_crash(child)
                await self._stopped_event(child, "failed")
                self._forget(child)
                answers[i] = (
                    child.exc
                    if isinstance(child.exc, Exception)
                    else ActorStoppedError(f"actor {child.path} stopped while starting")
                )
        finally:
            await self._release_held()
        return [a for a in answers if a is not None]

    def _abort_request(self, req: _Ask) -> None:
        """Settle a start/stop request this incarnation was handling when it ended.

        Its child is dropped either way (so a later incarnation does not bring it back): a
        start fails with ActorStoppedError, a stop has happened (by _stop_all) and succeeds.
        """
        if req.done or req.abandoned:
            return
        cmd = req.msg
        if isinstance(cmd, _StartChild):
            child = self.children.get(cmd.spec.name)
            if child is not None and child.spec is cmd.spec:
                self.children.pop(cmd.spec.name, None)
                self._forget(child)
            req.fail(
                ActorStoppedError(
                    f"supervisor {self.path} stopped before {cmd.spec.name!r} started; retry"
                )
            )
        elif isinstance(cmd, _StartChildren):
            for spec in cmd.specs:
                child = self.children.get(spec.name)
                if child is not None and child.spec is spec:
                    self.children.pop(spec.name, None)
                    self._forget(child)
            req.fail(
                ActorStoppedError(
                    f"supervisor {self.path} stopped before its children started; retry"
                )
            )
        elif isinstance(cmd, _StopChild):
            child = self.children.pop(cmd.name, None)
            if child is not None:
                self._forget(child)
            req.resolve(True)

    async def _on_exit(self, msg: _Exit) -> None:
        child = msg.child
        if child.phase != _RUNNING or child.run_id != msg.run_id:
            return  # we stopped it on purpose, or it is an exit of an earlier incarnation
        if self.children.get(child.spec.name) is not child:
            return
        await self._report_crash(child)
        crashed = child.exc is not None
        if not crashed:
            # A normal exit is journaled as such, whether or not a restart follows.
            child.phase = _IDLE
            self._note_moved()
            await self._stopped_event(child, "normal")
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not crashed):
            child.phase = _IDLE
            self.children.pop(child.spec.name, None)
            if crashed:
                await self._stopped_event(child, "crashed")
            self._forget(child)
            return
        await self._release_held()  # (a restart waits for children: nothing held across it)
        await self._restart(child)

    def _first_crash(self, exc: BaseException | None) -> str:
        """``Type: message`` (scrubbed, one line) of the crash at the root of ``exc``: past
        the escalations of the supervisors below, which chain it as their cause."""
        while isinstance(exc, EscalationError) and exc.__cause__ is not None:
            exc = exc.__cause__
        if exc is None:
            return "no error"
        error_type, text = crash_message(exc, self.system._scrub)
        return f"{error_type}: {text}" if text else error_type

    async def _restart(self, failed: _Child) -> None:
        # Restart intensity: a sliding window of restart times; one too many -> escalate.
        now = trio.current_time()
        window = self._window
        window.append(now)
        period = self.spec.intensity.period
        while window and window[0] <= now - period:
            window.popleft()
        if len(window) > self.spec.intensity.max_restarts:
            await self._lifecycle(
                SupervisorEscalated(
                    supervisor=self.path,
                    child=failed.path,
                    restarts=len(window),
                    window=period,
                    at=self.system._now(),
                )
            )
            raise EscalationError(
                f"supervisor {self.path} gave up after {len(window)} restarts within "
                f"{period:g} s (last: {failed.path}: {self._first_crash(failed.exc)}); "
                "fix the crash or raise the intensity"
            ) from failed.exc

        order = list(self.children.values())
        strategy = self.spec.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            group = [failed]
        elif strategy is Strategy.ONE_FOR_ALL:
            group = order
        else:
            group = order[order.index(failed) :]

        for sib in reversed(group):
            if sib is not failed and sib.phase in (_RUNNING, _STOPPING):
                await self._stop(sib, "restart")

        history = failed.history = [t for t in failed.history if t > now - period]
        delay = self.spec.backoff.delay(len(history), self.system._rng)
        history.append(now)

        self._next_token += 1
        token = self._next_token
        for member in group:
            if member is not failed and member.spec.restart is Restart.TEMPORARY:
                member.phase = _IDLE
                self.children.pop(member.spec.name, None)
                self._forget(member)
                continue
            pending = member.phase == _RESTARTING
            member.phase = _RESTARTING
            member.token = token
            self._note_moved()
            if pending:
                continue  # its restart, already journaled, now happens with this group's
            member.unit.restarts += 1
            member.unit.status = Status.RESTARTING
            member.open = True
            await self._lifecycle(
                ActorRestarted(
                    actor=member.path,
                    incarnation=member.unit.incarnation + 1,
                    delay=delay,
                    at=self.system._now(),
                )
            )
        if delay > 0:
            assert self._nursery is not None
            self._nursery.start_soon(self._timer, token, delay)
        else:
            await self._restart_due(token)

    async def _timer(self, token: int, delay: float) -> None:
        await trio.sleep(delay)
        self.ctl_send.send_nowait(_RestartDue(token))

    async def _restart_due(self, token: int) -> None:
        for child in list(self.children.values()):
            if child.phase == _RESTARTING and child.token == token:
                await self._start(child)

    # -- starting and stopping one child ---------------------------------------------------

    def _add(self, spec: ChildSpec) -> _Child:
        if spec.name in self.children:
            raise NameTakenError(
                f"supervisor {self.path} already has a child named {spec.name!r}; pick another"
            )
        path = f"{self.path}/{spec.name}"
        unit: ActorCell | Supervisor
        if isinstance(spec, ActorSpec):
            gate = self.system.gate if self.background else None
            unit = ActorCell(path, spec.factory, spec.mailbox_size, self.system, gate)
        else:
            unit = Supervisor(path, spec, self.system)
            unit.background = unit.background or self.background
        child = _Child(spec, unit)
        self.children[spec.name] = child
        self.system._registry[path] = unit.ref
        return child

    def _forget(self, child: _Child) -> None:
        """Close a child that is gone for good and drop it from the system's registry."""
        child.unit.close()
        self._note_moved()
        if self.system._registry.get(child.path) is child.unit.ref:
            del self.system._registry[child.path]

    async def _start(self, child: _Child) -> bool:
        """Launch one incarnation and wait until it started (True) or ended trying (False)."""
        self._launch(child)
        return await self._started(child)

    def _launch(self, child: _Child) -> None:
        """Launch one incarnation of ``child`` (``_started`` waits for its start)."""
        assert self._nursery is not None
        self._next_run += 1
        child.run_id = self._next_run
        child.phase = _RUNNING
        self._note_moved()
        child.done = trio.Event()
        child.settled = trio.Event()
        child.start_ok = False
        child.scope = None
        child.exc = None
        child.exc_reported = True
        child.forced = False
        child.unit.prepare()
        self._nursery.start_soon(self._runner, child, child.run_id, name=child.path)

    async def _started(self, child: _Child) -> bool:
        """Wait until the incarnation ``_launch`` launched started (True) or ended trying."""
        if not child.settled.is_set():  # (a set Event's wait is still a schedule point:
            await self._release_held(keep=True)  # one pass per child of a spawn_many)
            await child.settled.wait()
        child.settled = _SETTLED  # let the per-run event go (memory per idle actor)
        await self._announce(child)
        return child.start_ok

    async def _announce(self, child: _Child) -> None:
        """Journal ActorStarted for the current run if it started and that is not journaled yet
        (our wait for the start can be interrupted by a stop request)."""
        if child.start_ok and child.announced != child.run_id:
            child.announced = child.run_id
            child.open = True
            await self._lifecycle(
                ActorStarted(
                    actor=child.path, incarnation=child.unit.incarnation, at=self.system._now()
                )
            )

    async def _runner(self, child: _Child, run_id: int) -> None:
        def started() -> None:
            if child.run_id == run_id:
                child.start_ok = True
                child.settled.set()

        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                try:
                    await child.unit.run(started)
                except Exception as exc:
                    # A crash: record it for the control loop, which applies the policy.
                    child.exc = unwrap(exc)
                    child.exc_reported = False
            child.forced = scope.cancelled_caught
        finally:
            # Also when cancelled from outside: _stop_all journals that stop.
            child.done.set()
            child.settled.set()
        self.ctl_send.send_nowait(_Exit(child, run_id))

    async def _stop(self, child: _Child, reason: str) -> None:
        """Stop one running child: graceful request, deadline, then cancellation."""
        child.phase = _STOPPING
        child.unit.request_stop()
        if not child.done.is_set():
            with trio.move_on_after(child.spec.shutdown_timeout):
                await child.done.wait()
            if not child.done.is_set():
                if child.scope is not None:
                    child.scope.cancel()
                await child.done.wait()
                child.forced = True
        child.phase = _IDLE
        self._note_moved()
        await self._announce(child)
        await self._report_crash(child)
        await self._stopped_event(child, reason)

    async def _stop_all(self, reason: str) -> None:
        """Stop every child in reverse start order; drop temporary ones.

        If this supervisor is itself being cancelled meanwhile, the graceful sequence is over:
        every child still running is cancelled at once, their ends are awaited (shielded: a
        cancelled actor ends promptly, its ``shielded`` cleanup has its own deadline) and
        journaled as ``ActorStopped(reason="cancelled", forced=True)``, and the cancellation
        goes on.
        """
        try:
            for child in reversed(list(self.children.values())):
                if child.phase in (_RUNNING, _STOPPING):
                    await self._stop(child, reason)
                elif child.phase == _RESTARTING:
                    child.phase = _IDLE
                    self._note_moved()
                    await self._stopped_event(child, reason)
                if child.spec.restart is Restart.TEMPORARY:
                    self.children.pop(child.spec.name, None)
                    self._forget(child)
        except trio.Cancelled:
            live = [
                c
                for c in reversed(list(self.children.values()))
                if c.phase in (_RUNNING, _STOPPING)
            ]
            for child in live:
                child.unit.request_stop()
                if child.scope is not None:
                    child.scope.cancel()
            with trio.CancelScope(shield=True):
                for child in live:
                    await child.done.wait()
                    child.phase = _IDLE
                    self._note_moved()
                    child.forced = True
                    await self._announce(child)
                    await self._report_crash(child)
                    await self._stopped_event(child, "cancelled")
            raise

    async def _report_crash(self, child: _Child) -> None:
        if child.exc is None or child.exc_reported:
            return
        child.exc_reported = True
        child.open = True
        error_type, message = crash_message(child.exc, self.system._scrub)
        await self._lifecycle(
            ActorCrashed(
                actor=child.path,
                incarnation=child.unit.incarnation,
                error_type=error_type,
                message=message,
                at=self.system._now(),
            )
        )

    async def _stopped_event(self, child: _Child, reason: str) -> None:
        if child.unit.status is not Status.RESTARTING:
            child.unit.status = Status.STOPPED
        if not child.open:
            return  # never announced (start interrupted), or already journaled as stopped
        child.open = False
        await self._lifecycle(
            ActorStopped(
                actor=child.path,
                incarnation=child.unit.incarnation,
                reason=reason,
                at=self.system._now(),
                forced=child.forced,
            )
        )


class SupervisorRef:
    """The address of a supervisor: start and stop children, list them, read statistics."""

    __slots__ = ("_sup", "path")

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self.path = sup.path

    def __repr__(self) -> str:
        return f"SupervisorRef({self.path!r})"

    @property
    def name(self) -> str:
        """The last segment of :attr:`path`."""
        return self.path.rpartition("/")[2]

    async def _call(self, cmd: object) -> Any:
        slot = _Ask(cmd, trio.lowlevel.current_task())
        try:
            self._sup.ctl_send.send_nowait(slot)
        except _STOPPED_ERRORS:
            raise ActorStoppedError(
                f"supervisor {self.path} is stopped; {type(cmd).__name__[1:]} refused"
            ) from None
        slot.waiting = True
        await trio.lowlevel.wait_task_rescheduled(slot.abort)
        if slot.error is not None:
            raise slot.error
        return slot.value

    @overload
    async def start_child(self, spec: ActorSpec) -> ActorRef: ...
    @overload
    async def start_child(self, spec: SupervisorSpec) -> SupervisorRef: ...
    async def start_child(self, spec: ChildSpec) -> ActorRef | SupervisorRef:
        """Add a child and wait until it started; raises what its ``on_start`` raised."""
        ref: ActorRef | SupervisorRef = await self._call(_StartChild(spec))
        return ref

    async def spawn(
        self,
        factory: Callable[[], Actor],
        *,
        name: str,
        restart: Restart = Restart.PERMANENT,
        mailbox_size: float = DEFAULT_MAILBOX,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> ActorRef:
        """Start an actor child made by ``factory`` (a class, or a ``functools.partial``)."""
        return await self.start_child(
            ActorSpec(factory, name, restart, mailbox_size, shutdown_timeout)
        )

    async def spawn_many(
        self,
        factories: Sequence[tuple[str, Callable[[], Actor]]],
        *,
        restart: Restart = Restart.PERMANENT,
        mailbox_size: float = DEFAULT_MAILBOX,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> list[ActorRef | Exception]:
        """Start several actor children together, ``(name, factory)`` each: their
        ``on_start`` s run in one scheduler pass, not one request's round trip after
        another. Returns, in order, each one's ref, or the exception that kept it from
        starting (``NameTakenError``, what its ``on_start`` raised): one failing leaves the
        others started. Raises ``ActorStoppedError`` if the supervisor stops first."""
        specs = tuple(
            ActorSpec(factory, name, restart, mailbox_size, shutdown_timeout)
            for name, factory in factories
        )
        if not specs:
            await trio.lowlevel.checkpoint()
            return []
        answers: list[ActorRef | Exception] = await self._call(_StartChildren(specs))
        return answers

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
        """Start a supervisor child (e.g. a job supervisor hosting one actor per job);
        ``background``: its actors yield to foreground work (``SupervisorSpec.background``)."""
        return await self.start_child(
            SupervisorSpec(
                name, children, strategy, intensity, backoff, restart, shutdown_timeout, background
            )
        )

    async def stop_child(self, child: str | ActorRef | SupervisorRef) -> bool:
        """Stop a child gracefully (deadline, then cancellation) and remove it.

        Returns False if there is no such child (e.g. a temporary child that already ended).
        """
        name = child if isinstance(child, str) else child.name
        if not isinstance(child, str) and child.path != f"{self.path}/{name}":
            raise ActorError(f"{child.path} is not a child of supervisor {self.path}")
        stopped: bool = await self._call(_StopChild(name))
        return stopped

    def children(self) -> list[ActorRef | SupervisorRef]:
        """The current children's refs, in start order."""
        return [c.unit.ref for c in self._sup.children.values()]

    async def wait_child_ended(self, name: str) -> None:
        """Return once the child called ``name`` (if any) is really gone: not running, not
        stopping, not waiting for its restart (a restarted child is waited for again). A
        child that ends normally leaves by a control message sent as it ends, so a
        ``start_child`` of the same name made after this is handled after it has left (the
        name is free again)."""
        sup = self._sup
        while True:
            found = sup.children.get(name)
            if found is None or found.phase == _IDLE:
                return
            if found.phase in (_RUNNING, _STOPPING) and not found.done.is_set():
                await found.done.wait()
            else:  # its exit or restart is being handled: wait for the next change
                await sup.moved().wait()

    def child(self, name: str) -> ActorRef | SupervisorRef | None:
        """The child called ``name``, if any."""
        found = self._sup.children.get(name)
        return None if found is None else found.unit.ref

    def statistics(self) -> SupervisorStatistics:
        """A frozen snapshot of this supervisor."""
        return self._sup.statistics()
