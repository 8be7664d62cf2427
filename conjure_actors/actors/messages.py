"""Commands the four actors accept (imperative names), and the one-shot reply slot they use.

Events (past tense, persisted) live in :mod:`conjure_actors.domain.events`; the messages
here are *commands*: in-process, never persisted, carrying live objects (reply slots,
clients). An actor decides on a command, emits events, and answers through a :class:`Reply`
when the answer can take long (a lease may wait minutes for a machine to boot): the asker
awaits the reply without holding the actor's mailbox, so the actor keeps serving others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from conjure_actors.errors import ConjureError

if TYPE_CHECKING:
    from conjure_actors.clients.comfyui import ComfyUIClient

T = TypeVar("T")


class LeaseFailedError(ConjureError):
    """No machine could be leased for a job (budget refused, machine never ready, shutdown)."""

    def __init__(self, message: str, *, retryable: bool, reason: str) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason


class MachineGoneError(ConjureError):
    """The machine a job was running on vanished, stopped or failed its health check."""


class Reply(Generic[T]):
    """A one-shot reply: the actor calls :meth:`set` or :meth:`fail`; the asker awaits
    :meth:`wait`. Setting twice is ignored (the first answer wins: a lease granted and then
    cancelled by shutdown keeps its grant, and the asker releases it)."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: T) -> bool:
        if self._event.is_set():
            return False
        self._value = value
        self._event.set()
        return True

    def fail(self, error: BaseException) -> bool:
        if self._event.is_set():
            return False
        self._error = error
        self._event.set()
        return True

    async def wait(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


# ------------------------------------------------------------------- MachineActor (the pool)


class LostSignal:
    """Set once, when a machine vanished or was stopped: a ``trio.Event`` (``set``,
    ``is_set``, ``wait``) that also calls back its watchers as it is set.

    A job running on the machine watches it with a callback (:meth:`watch`) rather than a
    task parked in :meth:`wait` (one task less per job: issue 16). A callback runs in the
    task that calls :meth:`set`, once, and must not block or raise (a job's tells its own
    actor without waiting)."""

    __slots__ = ("_event", "_watchers")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._watchers: dict[object, Callable[[], None]] = {}

    def __repr__(self) -> str:
        return f"LostSignal(set={self._event.is_set()}, watchers={len(self._watchers)})"

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        """Set it (once: again does nothing), wake the waiters, call the watchers back."""
        if self._event.is_set():
            return
        self._event.set()
        watchers, self._watchers = self._watchers, {}
        for callback in watchers.values():
            try:  # one watcher's bug neither loses the others nor crashes the setter (the pool)
                callback()
            except Exception:
                logging.getLogger("conjure_actors.actors.messages").exception(
                    "a lost signal's watcher failed"
                )

    async def wait(self) -> None:
        await self._event.wait()

    def watch(self, key: object, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when it is set (at once if it is set already); one callback
        per ``key`` (a new one replaces the old)."""
        if self._event.is_set():
            callback()
        else:
            self._watchers[key] = callback

    def unwatch(self, key: object) -> None:
        """Forget ``key``'s callback (none: nothing to do)."""
        self._watchers.pop(key, None)

    @property
    def watchers(self) -> int:
        """How many callbacks wait for it (for tests: a job forgets its own when done)."""
        return len(self._watchers)


@attrs.frozen(eq=False)
class Lease:
    """A machine handed to a job: ``server_id``, the live ComfyUI client to talk to it, and
    ``lost``, set when the machine vanished or was stopped (the job then requeues)."""

    server_id: str
    client: ComfyUIClient  # typed only: messages import no client module at run time
    lost: LostSignal
    events: Any = None  # the machine's shared ComfyUIEvents (WebSocket), if any


@attrs.frozen(eq=False)
class LeaseMachine:
    """Ask the pool for a machine able to run ``workflow_version`` (``None``: any).

    ``only_server``: recovery re-attaching a submitted prompt wants that one machine, or
    nothing (the reply then fails with ``reason="gone"``).
    """

    job_id: str
    workflow_version: str | None
    priority: int
    reply: Reply[Lease]
    only_server: str | None = None


@attrs.frozen
class QueueJob:
    """Queue a job that has no actor (issue 16: a queued job is state, not a live actor).

    The pool keeps one small entry for it in its one waiting queue (priority, then first
    come first served) until a machine is leased to it: then ``MachinePool.on_granted(job_id,
    lease)`` starts its WorkflowActor with the lease. If it can never be served (launch
    refused, shutdown), or ``deadline`` (trio time: the job's ``total_timeout``) passes while
    it waits, ``MachinePool.on_refused(job_id, error)`` says so (``error.reason``:
    ``"timeout"`` for the deadline, ``"cancelled"`` after a ``CancelLease``)."""

    job_id: str
    workflow_version: str | None
    priority: int
    deadline: float = math.inf


@attrs.frozen
class QueueDeadline:
    """From the pool's one queue timer: the earliest deadline of a queued job has come."""


@attrs.frozen
class ReleaseMachine:
    """Give a leased machine back; ``broken`` marks it unfit (a re-attach given up there
    unlooked-up) to drain it: no new job, stopped once no other job holds it. ``decided``
    is answered once the pool's decision (``MachineDraining``, or ``MachineStopping``) is
    durable: the job logs its own next step (a retry) only after it, so that no crash
    between the two leaves a log whose resumed run gives the machine a job."""

    server_id: str
    job_id: str
    broken: bool = False
    decided: Reply[None] | None = None


@attrs.frozen
class CancelLease:
    """Withdraw a pending lease request of ``job_id`` (job cancelled while waiting)."""

    job_id: str


@attrs.frozen
class StopMachine:
    """Stop one machine now (``reason``: budget, shutdown, user...)."""

    server_id: str
    reason: str


@attrs.frozen
class WatchLatePrompt:
    """From a job that gave up on prompt ``prompt_id`` while its ``POST /prompt`` may still
    reach machine ``server_id`` (its outcome unknown and the lookup did not find it, or it was
    still on the wire when its attempt's cleanup ran): the MachineActor looks the prompt up
    there for a while and stops it if it shows up (``LatePromptStopped``). A tell: the job
    may end right after."""

    server_id: str
    prompt_id: str
    job_id: str


@attrs.frozen(eq=False)
class StopAllMachines:
    """Stop launching and stop every machine this run pays for; ``reply`` once all are done."""

    reason: str
    reply: Reply[list[str]] | None = None


@attrs.frozen
class StopLaunching:
    """Refuse every new launch from now on (budget reached, or shutdown begun)."""

    reason: str


@attrs.frozen
class ResumeLaunching:
    """Launch again after :class:`StopLaunching` (and :class:`StopAllMachines`) for
    ``reason``: the budget that stopped every machine was raised past the spend (a service
    runs on). Nothing changes if launching stopped for another reason, or if someone waits
    for every machine to stop (the run's own stop is never undone)."""

    reason: str


@attrs.frozen(eq=False)
class PollNow:
    """Poll the cloud now rather than at the next tick (tests, stalls, recovery); ``reply``,
    when given, is answered once a poll that began after this request has ended (a job
    asks whether its machine still exists before it counts a failure). ``server_id``: that
    machine, whose request failed (an attached ComfyUI is then checked at once, and the
    reply waits for that check)."""

    reply: Reply[None] | None = None
    server_id: str | None = None


# ------------------------------------------------------------------------------ CostActor


@attrs.frozen
class ApproveLaunch:
    """Ask: may the pool launch a machine of ``server_type`` for ``job_id``? Answers a bool
    (and emits ``LaunchRefused`` when not)."""

    job_id: str
    server_type: str


@attrs.frozen
class LaunchApprovalUnused:
    """Tell: the pool did not launch on an approval it got for ``job_id`` (the demand was
    served meanwhile, launching stopped...): the CostActor stops reserving its lease."""

    job_id: str


@attrs.frozen
class ApproveRenewal:
    """Ask: may the pool extend ``server_id``'s lease to run ``seconds`` from now? Answers
    the seconds from now granted: ``seconds`` (all of it), fewer (what the budget still
    covers, for a machine running a job), or ``None`` (refused)."""

    server_id: str
    seconds: float


@attrs.frozen
class SetBudget:
    """Set or change the budget (``None``: no limit); emits ``BudgetSet``. ``from_start``:
    the budget a start was configured with (``BudgetSet.from_start``)."""

    usd: float | None
    from_start: bool = False


@attrs.frozen
class AccrueNow:
    """Accrue every ready machine's cost now (tests; the actor also does it on a timer)."""


# -------------------------------------------------------------------------- WorkflowActor


@attrs.frozen
class CancelJob:
    """Cancel one job (user, Ctrl-C, budget): interrupt or dequeue it, then ``JobCancelled``."""

    job_id: str
    reason: str = "cancelled"


@attrs.frozen
class InterruptJob:
    """The run stops (Ctrl-C, a signal, an error elsewhere): leave the job ``interrupted``
    (not cancelled) for ``run --resume``; its prompt is not interrupted on the server."""

    job_id: str
    reason: str = "interrupted"


@attrs.frozen
class JobStallNoticed:
    """From the MonitorActor: no progress for a while; the WorkflowActor polls the server."""

    job_id: str
