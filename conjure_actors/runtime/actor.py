"""Actors, their refs, and the per-actor message loop.

An *actor* is a trio task that owns a bounded mailbox (a trio memory channel) and handles one
message at a time in :meth:`Actor.receive`. Others hold an :class:`ActorRef` and
:meth:`~ActorRef.tell` it messages (fire and forget, with backpressure when the mailbox is full)
or :meth:`~ActorRef.ask` it (request/reply). An actor runs inside its own nursery, so it can
start background tasks (a poller) that live exactly as long as it does.

Decisions worth knowing (each has a test):

- **The mailbox belongs to the ref, not to the incarnation** (as in Akka). When an actor
  crashes, the message it was handling is *not* redelivered (at-most-once for that message:
  redelivering the message that crashed it would crash it again), and every message queued
  behind it stays in the mailbox, in order, for the next incarnation. A ref therefore stays
  valid across restarts; tells sent during the restart backoff wait in the mailbox. Only when
  the actor ends for good is the mailbox drained: queued asks fail with
  :class:`ActorStoppedError`, queued tells are counted as dead letters.
- **A graceful stop ends the actor after the message it is handling**; what is still queued
  is not handled (as in OTP and Akka's ``stop``): the mailbox is drained as above. To have the
  queued messages handled first, send a message whose handler calls :meth:`Actor.stop` (a
  "poison pill": it is handled in order).
- **An exception escaping ``receive`` crashes the actor, ask or not** ("let it crash": its
  state may be half-updated), and for an ask the asker also gets that exception. To refuse a
  request *without* crashing, return an error value, or :meth:`Actor.defer_reply` and
  ``reply.fail(exc)``.
- **An ask whose asker already gave up** (timed out or cancelled) before the actor got to it
  is skipped, not handled: nobody would see the answer, and e.g. a lease granted to a caller
  that is gone would leak. It is counted in ``statistics().abandoned_asks``.
- **Speed**: ``tell`` is a plain ``send_nowait`` unless the mailbox is full (so it is a
  checkpoint only when it blocks); the loop drains the mailbox with ``receive_nowait`` and only
  awaits when it is empty, with a forced checkpoint every :data:`BATCH` messages for fairness.
  ``ask`` parks the asking task with ``wait_task_rescheduled`` on a small reply slot: no
  Event, no nursery, and no cancel scope unless a timeout is given.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from conjure_actors.runtime.errors import (
    ActorError,
    ActorStoppedError,
    AskTimeoutError,
    MailboxFullError,
)

if TYPE_CHECKING:
    from conjure_actors.runtime.gate import PriorityGate
    from conjure_actors.runtime.system import ActorSystem

BATCH: Final = 256
"""Messages handled back to back before the loop forces a checkpoint (fairness, cancellation)."""

DEFAULT_MAILBOX: Final = 1024
"""Default mailbox capacity (messages)."""

_STOPPED_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


class Status(enum.Enum):
    """Where an actor (or supervisor) is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    STOPPED = "stopped"


def shielded(timeout: float) -> trio.CancelScope:
    """A shielded cancel scope that gives up after ``timeout`` seconds.

    For cleanup that must happen even while the surrounding code is being cancelled (stopping a
    paid machine in ``on_stop``), but must not hang shutdown forever::

        async def on_stop(self) -> None:
            with shielded(30):
                await self.client.stop_machine(self.server_id)
    """
    return trio.CancelScope(shield=True, deadline=trio.current_time() + timeout)


def _name_of(msg: object) -> str:
    return type(msg).__name__


class _Wake:
    """Sentinel put in an idle mailbox to wake the loop so that it sees a stop request."""

    __slots__ = ()


_WAKE: Final = _Wake()
_NOTHING: Final = object()
"""``ActorCell.held`` when no message is held."""


class _Ask:
    """A request waiting for its answer: the message, the parked asker, and the outcome.

    The asker parks with ``wait_task_rescheduled`` only once the request is queued;
    ``waiting`` says whether it is parked, so that an answer arriving while the asker is still
    blocked in ``send`` (full mailbox) is stored and picked up without rescheduling.
    """

    __slots__ = ("abandoned", "deferred", "done", "error", "msg", "task", "value", "waiting")

    def __init__(self, msg: object, task: trio.lowlevel.Task) -> None:
        self.msg = msg
        self.task = task
        self.waiting = False
        self.done = False
        self.abandoned = False
        self.deferred = False
        self.value: Any = None
        self.error: BaseException | None = None

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        # The asker was cancelled (or timed out) while parked: nobody will read the answer.
        self.waiting = False
        self.abandoned = True
        return trio.lowlevel.Abort.SUCCEEDED

    def resolve(self, value: Any) -> bool:
        if self.done or self.abandoned:
            return False
        self.done = True
        self.value = value
        if self.waiting:
            self.waiting = False
            trio.lowlevel.reschedule(self.task)
        return True

    def fail(self, error: BaseException) -> bool:
        if self.done or self.abandoned:
            return False
        self.done = True
        self.error = error
        if self.waiting:
            self.waiting = False
            trio.lowlevel.reschedule(self.task)
        return True


class Reply:
    """An answer the actor gives later (see :meth:`Actor.defer_reply`); the first answer wins."""

    __slots__ = ("_cell", "_slot")

    def __init__(self, cell: ActorCell, slot: _Ask) -> None:
        self._cell = cell
        self._slot = slot

    @property
    def done(self) -> bool:
        """True once answered, or once the asker gave up."""
        return self._slot.done or self._slot.abandoned

    def send(self, value: Any) -> bool:
        """Answer with ``value``; False if already answered or the asker is gone."""
        self._cell.pending.discard(self._slot)
        return self._slot.resolve(value)

    def fail(self, error: BaseException) -> bool:
        """Answer by raising ``error`` in the asker (the actor does not crash)."""
        self._cell.pending.discard(self._slot)
        return self._slot.fail(error)


@attrs.frozen
class ActorStatistics:
    """A snapshot of one actor: where it is and what went through its mailbox."""

    path: str
    status: Status
    incarnation: int
    """1 for the first run, +1 per restart."""
    restarts: int
    mailbox_depth: int
    mailbox_capacity: float
    waiting_senders: int
    """Tasks blocked in ``tell``/``ask`` because the mailbox is full."""
    handled: int
    """Messages handled (tells and asks) over every incarnation."""
    dead_letters: int
    """Messages dropped because the actor had ended for good."""
    abandoned_asks: int
    """Asks skipped because their asker had already given up."""


class ActorRef:
    """The address of an actor: stays valid across its restarts, hashable, cheap to copy."""

    __slots__ = ("_capacity", "_cell", "_final", "_send", "_send_nowait", "path")

    def __init__(self, cell: ActorCell) -> None:
        # The cell until it ends for good (ActorCell.close), then its last statistics: the
        # cell holds its ref, and a ref that held its cell too made every ended actor's
        # cell, mailbox and factory (~20 objects) a cycle only the cyclic GC frees (issue
        # 16: a fifth of the objects it freed per job in bench/run.py, and GC passes come
        # with them).
        self._cell: ActorCell | None = cell
        self._final: tuple[Status, int, int, int, int, int] | None = None
        self._capacity = cell.capacity
        self.path = cell.path
        self._send_nowait = cell.send.send_nowait
        self._send = cell.send.send

    def __repr__(self) -> str:
        return f"ActorRef({self.path!r})"

    @property
    def name(self) -> str:
        """The last segment of :attr:`path`."""
        return self.path.rpartition("/")[2]

    def _stopped(self, msg: object) -> ActorStoppedError:
        return ActorStoppedError(
            f"actor {self.path} is stopped; {_name_of(msg)} was not delivered "
            "(look it up again or start it anew)"
        )

    def tell_nowait(self, msg: object) -> None:
        """Queue ``msg`` or raise :class:`MailboxFullError` at once."""
        try:
            self._send_nowait(msg)
        except trio.WouldBlock:
            raise MailboxFullError(
                f"mailbox of actor {self.path} is full ({self._capacity:g} messages); "
                f"{_name_of(msg)} was not queued: use tell() to wait, or slow down"
            ) from None
        except _STOPPED_ERRORS:
            raise self._stopped(msg) from None

    async def tell(self, msg: object) -> None:
        """Queue ``msg``, waiting while the mailbox is full (backpressure).

        Messages from one task arrive in the order it sent them. This is a checkpoint only
        when it has to wait. A message that carries its own answer (a reply the sender waits
        on) may define ``undelivered(error)``: if the actor ends for good before handling
        it, that is called with the :class:`ActorStoppedError`, so its waiter is told at once.
        """
        try:
            self._send_nowait(msg)
            return
        except trio.WouldBlock:
            pass
        except _STOPPED_ERRORS:
            raise self._stopped(msg) from None
        try:
            await self._send(msg)
        except _STOPPED_ERRORS:
            raise self._stopped(msg) from None

    # The issue asks for ask(msg, timeout=...): the timeout is part of the request (it becomes
    # an AskTimeoutError naming actor and message), not a cancel scope the caller owns.
    async def ask(self, msg: object, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send ``msg`` and wait for the actor's answer (what ``receive`` returned).

        Raises what ``receive`` raised, :class:`AskTimeoutError` after ``timeout`` seconds
        (``None``: wait as long as the caller's own cancel scopes allow), or
        :class:`ActorStoppedError` if the actor is, or ends, stopped before answering.
        """
        if timeout is not None:
            return await self._ask_within(msg, timeout)
        # The fast path, kept flat (no inner coroutine): queue a slot, park until answered.
        slot = _Ask(msg, trio.lowlevel.current_task())
        try:
            self._send_nowait(slot)
        except trio.WouldBlock:
            try:
                await self._send(slot)
            except _STOPPED_ERRORS:
                raise self._stopped(msg) from None
        except _STOPPED_ERRORS:
            raise self._stopped(msg) from None
        if not slot.done:
            slot.waiting = True
            await trio.lowlevel.wait_task_rescheduled(slot.abort)
        if slot.error is not None:
            raise slot.error
        return slot.value

    async def _ask_within(self, msg: object, timeout: float) -> Any:  # noqa: ASYNC109
        with trio.move_on_after(timeout):
            return await self.ask(msg)
        raise AskTimeoutError(
            f"actor {self.path} did not answer {_name_of(msg)} within {timeout:g} s "
            "(raise the timeout, or check the actor's statistics())"
        )

    def statistics(self) -> ActorStatistics:
        """A frozen snapshot: status, mailbox depth, messages handled, restarts..."""
        cell = self._cell
        if cell is not None:
            return cell.statistics()
        # Ended for good: its counters as they ended, its mailbox drained and closed.
        assert self._final is not None
        status, incarnation, restarts, handled, dead_letters, abandoned = self._final
        return ActorStatistics(
            path=self.path,
            status=status,
            incarnation=incarnation,
            restarts=restarts,
            mailbox_depth=0,
            mailbox_capacity=self._capacity,
            waiting_senders=0,
            handled=handled,
            dead_letters=dead_letters,
            abandoned_asks=abandoned,
        )

    def _ended(self, cell: ActorCell) -> None:
        """``cell`` ended for good (closed): keep what :meth:`statistics` reads of it (none
        of it changes any more), let the cell go."""
        self._final = (
            cell.status,
            cell.incarnation,
            cell.restarts,
            cell.handled,
            cell.dead_letters,
            cell.abandoned,
        )
        self._cell = None


class Actor:
    """Base class of actors: override :meth:`receive`, optionally :meth:`on_start`/:meth:`on_stop`.

    A new instance is made (by the factory given to ``spawn``) for every incarnation, so a
    restart starts from fresh state. :attr:`ref`, :attr:`system`, :attr:`path` and the task
    helpers are available from :meth:`on_start` on (not in ``__init__``).
    """

    _cell: ActorCell
    _nursery: trio.Nursery | None = None

    async def on_start(self) -> None:
        """Runs before the first message; the actor counts as started when it returns."""

    async def receive(self, msg: Any) -> Any:
        """Handle one message; for an ask, the return value is the answer."""
        raise NotImplementedError(f"{type(self).__name__} must override receive()")

    async def on_stop(self) -> None:
        """Runs once at the end of every incarnation (normal stop, crash, restart, shutdown).

        Background tasks are already cancelled. During a forced stop this runs in a cancelled
        context: wrap cleanup that must happen in :func:`shielded`.
        """

    @property
    def ref(self) -> ActorRef:
        """This actor's own ref (the same across restarts)."""
        return self._cell.ref

    @property
    def path(self) -> str:
        """This actor's path, e.g. ``root/jobs/job-42``."""
        return self._cell.path

    @property
    def system(self) -> ActorSystem:
        """The actor system this actor runs in."""
        return self._cell.system

    @property
    def incarnation(self) -> int:
        """1 for the first run, +1 per restart."""
        return self._cell.incarnation

    def _tasks(self) -> trio.Nursery:
        if self._nursery is None:
            raise ActorError(
                f"{type(self).__name__} is not running: start tasks from on_start on, not __init__"
            )
        return self._nursery

    @property
    def nursery(self) -> trio.Nursery:
        """This incarnation's nursery (for code that takes a nursery); tasks started in it
        live as long as the incarnation, and a failing one crashes the actor."""
        return self._tasks()

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run ``fn(*args)`` in the background for as long as this incarnation lives.

        If it raises, the actor crashes (and its supervisor applies its policy).
        """
        self._tasks().start_soon(fn, *args, name=name)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Like :meth:`start_soon`, but wait for ``task_status.started(value)``; return value."""
        return await self._tasks().start(fn, *args, name=name)

    def stop(self) -> None:
        """End this actor normally after the current message (a permanent child restarts).

        May be called from a background task too: an idle message loop is woken up.
        """
        self._cell.request_stop()

    def defer_reply(self) -> Reply:
        """Answer the ask being handled later, from anywhere, through the returned :class:`Reply`.

        ``receive``'s return value is then ignored. If the incarnation ends before answering,
        the asker gets :class:`ActorStoppedError`.
        """
        slot = self._cell.current
        if slot is None:
            raise ActorError(f"actor {self.path}: defer_reply() needs an ask being handled")
        slot.deferred = True
        self._cell.pending.add(slot)
        return Reply(self._cell, slot)


class ActorCell:
    """Everything of an actor that outlives its incarnations: mailbox, ref, counters.

    Supervisors drive it through :meth:`run` (one incarnation), :meth:`request_stop` and
    :meth:`close` (the end for good).
    """

    __slots__ = (
        "abandoned",
        "capacity",
        "closed",
        "current",
        "dead_letters",
        "factory",
        "gate",
        "handled",
        "held",
        "incarnation",
        "path",
        "pending",
        "recv",
        "ref",
        "restarts",
        "send",
        "status",
        "stop_requested",
        "system",
    )

    def __init__(
        self,
        path: str,
        factory: Callable[[], Actor],
        capacity: float,
        system: ActorSystem,
        gate: PriorityGate | None = None,
    ) -> None:
        self.path = path
        self.factory = factory
        self.capacity = capacity
        self.system = system
        # A background actor's gate: it waits for its turn before each message (gate.py).
        self.gate = gate
        self.send, self.recv = trio.open_memory_channel[object](capacity)
        self.ref = ActorRef(self)
        self.status = Status.NEW
        self.incarnation = 0
        self.restarts = 0
        self.handled = 0
        self.dead_letters = 0
        self.abandoned = 0
        self.stop_requested = False
        self.current: _Ask | None = None
        self.pending: set[_Ask] = set()
        self.closed = False
        # A background actor's message taken from the mailbox while it waits for its turn at
        # the gate: an incarnation that ends in that wait leaves it here, and the next one
        # takes it first (as if it were still in the mailbox); the end for good fails it.
        self.held: object = _NOTHING

    # -- what a supervisor calls ------------------------------------------------------------

    def prepare(self) -> None:
        """Called by the supervisor just before it launches an incarnation."""
        self.stop_requested = False

    def request_stop(self) -> None:
        """Ask the running incarnation to end after its current message."""
        self.stop_requested = True
        if self.status is Status.RUNNING or self.status is Status.STARTING:
            # Wake an idle loop. If the mailbox is full the loop is busy and sees the flag soon.
            with contextlib.suppress(trio.WouldBlock, *_STOPPED_ERRORS):
                self.send.send_nowait(_WAKE)

    async def run(self, started: Callable[[], None]) -> None:
        """Run one incarnation: make the actor, ``on_start``, serve until stopped, ``on_stop``."""
        self.incarnation += 1
        self.status = Status.STARTING
        actor = self.factory()
        if not isinstance(actor, Actor):
            raise TypeError(
                f"the factory of actor {self.path} returned {type(actor).__name__}, not an Actor"
            )
        actor._cell = self
        # A background actor's task, and every task it starts, is the gate's background work.
        marked = self.gate.background() if self.gate is not None else contextlib.nullcontext()
        try:
            with marked:
                async with trio.open_nursery() as nursery:
                    actor._nursery = nursery
                    await actor.on_start()
                    self.status = Status.RUNNING
                    started()
                    await self._serve(actor)
                    nursery.cancel_scope.cancel()
        finally:
            actor._nursery = None
            self.status = Status.STOPPING
            self._fail_pending("ended")
            await actor.on_stop()

    def close(self) -> None:
        """The end for good: fail queued asks, count queued tells as dead letters (telling those
        that define ``undelivered``), and close the mailbox so that every later (or blocked)
        ``tell``/``ask`` raises ActorStoppedError."""
        if self.closed:
            return
        self.closed = True
        self.status = Status.STOPPED
        self._fail_pending("stopped")
        while True:
            item, self.held = self.held, _NOTHING
            if item is _NOTHING:
                try:
                    item = self.recv.receive_nowait()
                except (trio.WouldBlock, *_STOPPED_ERRORS):
                    break
            if item.__class__ is _Ask:
                item.fail(self._stopped_error(item.msg, "stopped"))
                self.dead_letters += 1
            elif item is not _WAKE:
                self.dead_letters += 1
                # A tell that carries its own answer (a reply in the message) is told why
                # it will never be handled, instead of leaving its waiter to its timeout.
                undelivered = getattr(item, "undelivered", None)
                if callable(undelivered):
                    try:  # a message's bug must not leave the mailbox open (or stop the system)
                        undelivered(self._stopped_error(item, "stopped"))
                    except Exception:
                        logging.getLogger(__name__).exception(
                            "%s: undelivered() of %s failed", self.path, type(item).__name__
                        )
        self.recv.close()
        self.ref._ended(self)

    def statistics(self) -> ActorStatistics:
        stats = self.send.statistics()
        return ActorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.restarts,
            mailbox_depth=stats.current_buffer_used,
            mailbox_capacity=self.capacity,
            waiting_senders=stats.tasks_waiting_send,
            handled=self.handled,
            dead_letters=self.dead_letters,
            abandoned_asks=self.abandoned,
        )

    # -- the loop ----------------------------------------------------------------------------

    def _stopped_error(self, msg: object, how: str) -> ActorStoppedError:
        return ActorStoppedError(
            f"actor {self.path} {how} before answering {_name_of(msg)}; retry once it is back"
        )

    def _fail_pending(self, how: str) -> None:
        for slot in self.pending:
            slot.fail(self._stopped_error(slot.msg, how))
        self.pending.clear()

    async def _serve(self, actor: Actor) -> None:
        # The hot loop: drain without a schedule point per message, await only when empty.
        receive_nowait = self.recv.receive_nowait
        receive = self.recv.receive
        handle = actor.receive
        turn = None if self.gate is None else self.gate.background_turn
        budget = BATCH
        while not self.stop_requested:
            item = self.held
            if item is not _NOTHING:  # taken by an incarnation that ended at the gate
                self.held = _NOTHING
            else:
                try:
                    item = receive_nowait()
                except trio.WouldBlock:
                    budget = BATCH
                    item = await receive()
                if turn is not None and item is not _WAKE:
                    # A background actor yields to foreground work in flight (a bounded
                    # wait). The message is held meanwhile: if this incarnation ends in
                    # the wait, the next one handles it (an ask is not lost unanswered).
                    self.held = item
                    await turn()
                    self.held = _NOTHING
            if type(item) is _Ask:
                # Inlined (one coroutine less per ask): see the module docstring for the rules.
                if item.abandoned:
                    self.abandoned += 1
                    continue
                self.current = item
                try:
                    result = await handle(item.msg)
                except trio.Cancelled:
                    self.current = None
                    self.pending.discard(item)
                    item.fail(self._stopped_error(item.msg, "was cancelled"))
                    raise
                except BaseException as exc:
                    # Let it crash, and tell the asker why.
                    self.current = None
                    self.pending.discard(item)
                    item.fail(exc)
                    raise
                self.current = None
                if not item.deferred:
                    item.resolve(result)
            elif item is _WAKE:
                continue
            else:
                await handle(item)
            self.handled += 1
            budget -= 1
            if not budget:
                budget = BATCH
                await trio.lowlevel.checkpoint()


def spec_capacity(mailbox_size: float) -> float:
    """Validate a mailbox size (a positive int, or ``math.inf``)."""
    if mailbox_size != math.inf and (int(mailbox_size) != mailbox_size or mailbox_size < 1):
        raise ValueError(
            f"mailbox_size must be a positive integer or math.inf, not {mailbox_size!r}"
        )
    return mailbox_size
