"""One job, start to end: the WorkflowActor.

The actor owns its job (DESIGN.md, "Actors own their state"): it handles one message at a
time and is the only writer of its job's events. Work that waits runs in child tasks that
*report* by message and never emit: leasing a machine, uploading the input, ``POST
/prompt``, following the prompt (WebSocket, polling ``/history``), downloading the outputs,
backoff and timeout timers. The actor decides what a report means with the pure functions
of :mod:`conjure_actors.domain.decide` (a failure: retry, requeue or fail; a timeout; a
crash), emits, and starts the next child. One job, as messages::

    (queued)       the job waits with no actor, one entry in the pool's queue; its actor
                   starts once a machine is leased to it (or to write its cancellation or
                   timeout while queued)              -> _Leased(lease)
    _Go            -> JobQueued (a requeue, a retry, a resume); back into the pool's queue,
                      the actor ends (a restarted incarnation: child lease -> _Leased)
    _Leased        -> JobStarted; child: upload        -> _Uploaded(name, sha256)
    _Uploaded      -> InputUploaded, PromptSubmitting (intent, with a fresh prompt id);
                      child: POST /prompt              -> _Submitted(number)
    _Submitted     -> PromptSubmitted (the POST's child goes on following the prompt)
                                                       -> _Progress(update)...
    _Progress      -> ExecutionStarted / Node* / ExecutionSucceeded (after the success, the
                      same child goes on downloading)  -> _Saved(file)... _Downloaded
    _Saved         -> OutputSaved
    _Downloaded    -> JobSucceeded; release the machine; the actor stops
    _Failed        -> decide.judge_failure: JobRetrying (timer -> _RetryDue -> _Go),
                      JobQueued (machine lost -> _Go) or JobFailed
    CancelJob      -> interrupt the prompt (child) -> JobCancelled
    InterruptJob   -> JobInterrupted (the run stops; ``run --resume`` finishes the job)

Every child report carries the *token* of the attempt it belongs to; a report of an
attempt the actor has moved on from is dropped (and a lease it brings is given back).

Failures: a prompt rejected by validation, a 200 answer whose node errors drop outputs, and
a node error of the graph itself (``decide.execution_failure``: not out of memory) are not
retried; an interrupt this run did not send (the web UI) cancels the job; SaveImageWebsocket
images (binary frames) are saved as outputs under ``websocket/``; transient errors are retried
with backoff until ``max_attempts`` have failed; a machine lost mid-job requeues the job
without counting a failure (before a failure that may be the machine's disappearance is
counted, the pool lists the cloud afresh). A transient error while *following* (a 429, a
dropped connection) keeps following the same prompt: the work is never submitted twice.
Each attempt has a deadline and the whole job ``total_timeout``. An unexpected exception in
a child (a ComfyUI answer of an unexpected shape) fails that attempt, with its reason in the
log. An exception in the actor itself crashes it; its supervisor restarts it and the new
incarnation takes the job up from its log, until ``MAX_JOB_CRASHES`` crashes fail the job
(``decide.job_crashed``): the limit is per job, so nothing one job does stops the run.

Resume (from the log): an ``interrupted`` job is taken up (``JobResumed``); a job whose
prompt was submitted on a machine still alive is *re-attached* (the prompt is looked up and
followed, its outputs downloaded unless already saved intact); unknown to the machine, the
attempt counts as failed and a new one starts. A lookup that fails (its ComfyUI answers 5xx,
times out) proves nothing and is tried again; a re-attach given up before any lookup answered
gives its machine back *broken* (stopped: the prompt may still run there, see ``_release``).
Nothing the log says was done is done twice.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import mimetypes
import os
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Final

import attrs
import trio

import eventlog
from conjure_actors.actors import files
from conjure_actors.actors.context import Context, Leases
from conjure_actors.actors.messages import (
    CancelJob,
    CancelLease,
    InterruptJob,
    JobStallNoticed,
    Lease,
    LeaseFailedError,
    LeaseMachine,
    LostSignal,
    PollNow,
    QueueJob,
    ReleaseMachine,
    Reply,
    WatchLatePrompt,
)
from conjure_actors.clients import comfyui as cu
from conjure_actors.clients import errors as cerr
from conjure_actors.clients.comfyui import ComfyUIClient
from conjure_actors.domain import decide, machines_policy
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st
from conjure_actors.domain.decide import AttemptFailure
from conjure_actors.domain.retry import Backoff
from conjure_actors.domain.workflow import Roles, apply_bindings, conjure_roles, node_sort_key
from conjure_actors.errgroups import describe
from conjure_actors.errors import ConjureError
from conjure_actors.runtime import Actor, ActorRef
from conjure_actors.runtime.errors import ActorError, ActorStoppedError, MailboxFullError

log = logging.getLogger("conjure_actors.actors.job")

LOST_CHECK_TIMEOUT: Final = 60.0
"""How long a failed attempt waits for the pool's fresh look at the cloud before it counts
the failure anyway (the listing is rate limited and retried, so it may take a while)."""

MAX_JOB_CRASHES: Final = 3
"""Crashes of one job's actor after which the job fails (the run goes on)."""

FOLLOW_RETRY_DELAY: Final = 2.0
"""First pause before following (or looking up) a prompt again after a transient error
(doubles, to ``FOLLOW_RETRY_MAX``)."""
FOLLOW_RETRY_MAX: Final = 30.0

WS_SAVE_CLASS: Final = "SaveImageWebsocket"
"""The node whose images come only as binary WebSocket frames (saved as outputs)."""

WS_SUBFOLDER: Final = "websocket"
"""Where under OUT/<job>/ the SaveImageWebsocket images go."""

SOCKET_WAIT: Final = 30.0
"""Seconds a prompt waits for its machine's WebSocket to (re)connect before its POST."""

INTERRUPT_DEADLINE: Final = 10.0
"""Seconds a cancelled job's ``/interrupt`` may take before the job is cancelled anyway."""

POST_CAP: Final = 300.0
"""Seconds a ``POST /prompt`` may take at most, whatever happens (the client's own retries
may wait out a ``Retry-After`` of up to 120 s)."""

POST_PATIENCE: Final = 30.0
"""Seconds a ``POST /prompt`` may still take once its attempt ended (it is not cut at once: a
request cut on our side may still reach ComfyUI after the attempt's cleanup); then its
outcome is unknown."""

DOWNLOAD_GRACE: Final = 20.0
"""When the run stops while a job downloads the outputs of a prompt that has run (paid), the
seconds its download may go on before the job is interrupted: a resume would run the whole
prompt again on a new machine. Within the ordered stop's wait for the jobs (25 s)."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------- reports of child tasks


@attrs.frozen
class _Go:
    """Consider the job's next step (start, after a requeue, after a backoff)."""


@attrs.frozen
class _Leased:
    token: int
    lease: Lease


@attrs.frozen
class _LeaseFailed:
    token: int
    error: LeaseFailedError


@attrs.frozen
class _Uploaded:
    token: int
    node_id: str
    name: str
    sha256: str
    size: int


@attrs.frozen
class _ExtrasUploaded:
    """Every file of ``job.extra_inputs`` reached the machine: (``NODE.INPUT``, node id,
    the name ComfyUI stored it under, sha256, size) each."""

    token: int
    files: tuple[tuple[str, str, str, str, int], ...]


@attrs.frozen
class _Submitted:
    token: int
    number: float


@attrs.frozen
class _SocketUp:
    """The machine's WebSocket is connected: the prompt can be submitted."""

    token: int


@attrs.frozen
class _Rejected:
    token: int
    error_type: str
    message: str
    failed_as: str = "PromptRejected"  # the JobFailed error type
    node_id: str | None = None  # the first node the rejection names, and its class
    class_type: str | None = None


@attrs.frozen
class _Found:
    """The lookup of a re-attached prompt answered: ``where`` it is on its machine
    (pending, running, done), or ``"unknown"`` (in neither ``/queue`` nor ``/history``)."""

    token: int
    where: str = "running"


@attrs.frozen
class _Progress:
    token: int
    update: Any  # a comfyui FollowUpdate, or a _Streamed batch of them


@attrs.define(eq=False)
class _Streamed:
    """Streamed updates of one follow (started, cached, node started / progress / executed),
    in order, reported with ONE ``_Progress`` message and emitted with ONE journal append.

    The follow child appends to the batch it reported last while the actor has not taken
    it (``taken``) and nothing else was reported since: under a flood of progress frames the
    actor wakes and waits for a commit once per batch, not once per frame (issue 16).
    """

    updates: list[Any]
    taken: bool = False


@attrs.frozen
class _Saved:
    token: int
    node_id: str
    filename: str
    path: str
    size: int
    sha256: str
    kind: str


@attrs.frozen
class _Downloaded:
    """Every output is saved. ``last``: the last file saved, not reported by its own
    ``_Saved``: its OutputSaved goes in one append with JobSucceeded (issue 16)."""

    token: int
    last: _Saved | None = None


@attrs.frozen
class _Failed:
    """The attempt failed. ``suspect``: the failure may be the machine's disappearance, so
    the pool looks at the cloud before it is counted."""

    token: int
    failure: AttemptFailure
    suspect: bool = True


@attrs.frozen
class _Judge:
    """The pool had its fresh look (or gave up): judge ``failure`` now."""

    token: int
    failure: AttemptFailure


@attrs.frozen
class _Lost:
    token: int


@attrs.frozen
class _AttemptTimedOut:
    token: int


@attrs.frozen
class _RetryDue:
    token: int


@attrs.frozen
class _GraceOver:
    """``DOWNLOAD_GRACE`` has passed since the run asked this downloading job to stop."""

    token: int


@attrs.frozen
class _JobTimedOut:
    pass


@attrs.frozen
class _CancelDone:
    reason: str
    stopped: bool = False  # the prompt's DELETE and /interrupt were both answered


class PoolPort:
    """The MachineActor as a WorkflowActor sees it: messages, not calls."""

    def __init__(self, ref: ActorRef, overflow: Callable[[object], None] | None = None) -> None:
        self.ref = ref
        # Where a tell that must not be lost goes when the mailbox is full (delivered in
        # order, waiting for room: ``Conjure._tell_machines``); None: it is logged, lost.
        self.overflow = overflow

    async def lease(
        self,
        job_id: str,
        version: str | None,
        priority: int,
        reply: Reply[Lease],
        only_server: str | None = None,
    ) -> None:
        await self.ref.tell(LeaseMachine(job_id, version, priority, reply, only_server))

    async def queue(self, job_id: str, version: str | None, priority: int, deadline: float) -> None:
        """Put the job into the pool's queue, to wait there without its actor."""
        await self.ref.tell(QueueJob(job_id, version, priority, deadline))

    async def release(self, server_id: str, job_id: str, *, broken: bool = False) -> None:
        """Give the machine back. ``broken``: return once the pool's decision about the
        machine (it drains) is logged, so that the job's next event comes after it in the
        log (a crash in between must not leave the machine fit for a resumed run's jobs);
        at most ``LOST_CHECK_TIMEOUT`` (a pool that crashed on it never answers)."""
        decided: Reply[None] | None = Reply() if broken else None
        try:
            await self.ref.tell(ReleaseMachine(server_id, job_id, broken, decided))
        except ActorStoppedError:  # a stopped pool holds no lease any more
            log.debug("release of %s by %s: the pool has stopped", server_id, job_id)
            return
        if decided is not None:
            with trio.move_on_after(LOST_CHECK_TIMEOUT) as waited:
                await decided.wait()
            if waited.cancelled_caught:
                log.warning(
                    "job %s: the pool did not log its decision about machine %s in %g s",
                    job_id,
                    server_id,
                    LOST_CHECK_TIMEOUT,
                )

    async def polled(self, server_id: str | None = None) -> None:
        """Return once the pool has listed the cloud afresh (machines found gone are lost);
        ``server_id``: the machine a request to failed (an attached one is checked too)."""
        reply: Reply[None] = Reply()
        await self.ref.tell(PollNow(reply, server_id))
        await reply.wait()

    def cancel_lease(self, job_id: str) -> None:
        try:
            self.ref.tell_nowait(CancelLease(job_id))
        except (ActorStoppedError, MailboxFullError) as exc:  # nothing to withdraw, or later
            log.debug("cancel_lease(%s): %s", job_id, exc)

    def watch_late_prompt(self, server_id: str, prompt_id: str, job_id: str) -> None:
        """The job gave ``prompt_id`` up while its POST may still land: the pool watches
        for it and stops it there (a tell: the job may end right after)."""
        msg = WatchLatePrompt(server_id, prompt_id, job_id)
        try:
            self.ref.tell_nowait(msg)
        except MailboxFullError as exc:  # a busy pool: it gets the watch once it has room
            if self.overflow is None:
                log.warning("job %s: prompt %s left unwatched: %s", job_id, prompt_id[:8], exc)
            else:
                self.overflow(msg)
        except ActorStoppedError as exc:  # a stopped pool: the run ends
            log.warning("job %s: prompt %s left unwatched: %s", job_id, prompt_id[:8], exc)


class JobSide:
    """Per-job facts that are never events (memory only: gone after a restart), shared by
    the runtime and the job service: the ``extra_data`` each of a job's prompts carries to
    ComfyUI (it may hold a credential, so it goes nowhere else: no event, log line or
    error) and ``on_preview``, where the job's preview images go (the SSE ``preview``)."""

    def __init__(self) -> None:
        self.extra_data: dict[str, dict[str, Any]] = {}
        self.on_preview: Callable[[str, str | None, str | None, bytes], None] | None = None
        # Told the errno when a job's output could not be saved because the output folder
        # refuses writes (its disk full, over quota, read-only): the job service then
        # refuses new jobs until a probe finds the folder writable again (QA9 F4).
        self.on_output_refused: Callable[[int], None] | None = None

    def __repr__(self) -> str:  # never the extra_data
        return f"<JobSide of {len(self.extra_data)} jobs>"

    def preview(self, job_id: str, node: str | None, image_type: str | None, data: bytes) -> None:
        if self.on_preview is not None:
            self.on_preview(job_id, node, image_type, data)

    def output_refused(self, code: int) -> None:
        if self.on_output_refused is not None:
            self.on_output_refused(code)


class _LogFailedError(Exception):
    """Internal: the journal refused an event; the run must stop (not this job's fault)."""


class WorkflowActor(Actor):
    """One job. A child of the job supervisor: it stops when the job reaches a terminal event
    (or is interrupted). ``pool``: the MachineActor as a job sees it (lease, release,
    cancel_lease, polled). ``on_done(job_id)``: the job needs its actor no more.
    ``on_fatal(exc)``: the journal refused an event (e.g. a full disk): the run must stop."""

    def __init__(
        self,
        ctx: Context,
        job_id: str,
        pool: Leases,
        on_done: Callable[[str], None],
        on_fatal: Callable[[BaseException], None] | None = None,
        *,
        max_crashes: int = MAX_JOB_CRASHES,
        side: JobSide | None = None,
        first: Lease | LeaseFailedError | CancelJob | None = None,
        stopping: Callable[[], str | None] | None = None,
    ) -> None:
        self.ctx = ctx
        # The run's stop reason once its stop began (else None): no prompt is sent after
        # it, whether or not this actor's InterruptJob has arrived yet.
        self.stopping = stopping
        # What the queue answered a job that waited without an actor (issue 16): the machine
        # leased to it, the refusal (``reason="timeout"``: its deadline passed), or its
        # cancellation. Only the first incarnation takes it: a restarted one asks again.
        self._first = first
        self.job_id = job_id
        self.side = side
        self.pool = pool
        self.on_done = on_done
        self.on_fatal = on_fatal
        self.max_crashes = max_crashes
        cfg = ctx.config.retry
        self.backoff = Backoff(cfg.initial, cfg.factor, cfg.max_delay, cfg.max_attempts)
        self._token = 0
        self._scopes: dict[str, trio.CancelScope] = {}  # the attempt's children, by role
        self._lease: Lease | None = None
        self._reattach = False  # the current attempt follows a prompt submitted earlier
        self._no_reattach = False  # the machine of the submitted prompt is gone
        # The re-attach follows an outage of an attached ComfyUI (--comfyui-url, the dev
        # machine), not a restart of this run: a prompt it does not know then was lost
        # with a restart of that ComfyUI, not this job's fault (see _reattach_attached).
        self._outage = False
        # The re-attached prompt while no lookup has answered for it: it may be running on
        # the machine leased for it (see _release).
        self._unproven: str | None = None
        # The run asked this job to stop while it downloaded a run prompt's outputs (the
        # reason): they come down first, within DOWNLOAD_GRACE (see InterruptJob).
        self._stop_after_download: str | None = None
        self._upload_name: str | None = None
        self._extra_names: dict[str, str] = {}  # NODE.INPUT -> uploaded name (extra_inputs)
        self._ending = False
        self._cancelling = False
        self._timeout_at = math.inf  # set by on_start: the job's deadline (trio clock)
        self._timer_started = False
        # While an attempt runs (from its lease on): its children's deadline (the attempt's,
        # or the job's if sooner and the job's timer task is not running), whether that is
        # the job's, and the machine's lost signal this actor watches (see _on_leased).
        self._attempt_on = False
        self._watch_at = math.inf
        self._job_first = False
        self._watching: LostSignal | None = None
        # Prompts whose POST is in flight (set once it settled): an attempt's cleanup waits
        # for it, so a POST that lands after the cleanup began is still deleted/interrupted.
        self._posts: dict[str, trio.Event] = {}
        self._post_scopes: dict[str, trio.CancelScope] = {}

    # ------------------------------------------------------------------ helpers

    @property
    def job(self) -> st.Job:
        return self.ctx.state.jobs[self.job_id]

    async def emit(self, *events: Any) -> None:
        """Journal this job's events; a refused append stops the run, not just this job."""
        try:
            await self.ctx.emit(*events)
        except eventlog.LogClosedError:
            raise  # the run is over (the journal closed): nothing to report to anyone
        except eventlog.EventLogError as exc:
            raise _LogFailedError(str(exc)) from exc

    def _spawn(self, role: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(token, *args)`` as a child of the current attempt (cancelled when the
        attempt ends). An unexpected exception fails the attempt (reported, not raised).
        While an attempt runs, its children carry its deadline (and the job's, if sooner) in
        their cancel scope: a child cut by it reports the timeout (_child), so no task of its
        own watches the attempt (issue 16). Any other child but the lease wait (which waits
        until the job's deadline itself: _lease_child) needs the job's timer task."""
        # The deadline is given to the constructor: a scope's deadline setter costs a
        # context manager of trio's each time (issue 16).
        if self._attempt_on:
            scope = trio.CancelScope(deadline=self._watch_at)
        else:
            scope = trio.CancelScope()
            if role != "lease":
                self._start_timer()
        old = self._scopes.pop(role, None)
        if old is not None:
            old.cancel()
        self._scopes[role] = scope
        # A bound method, not a closure: fewer objects per waiting job (issue 16).
        self.start_soon(
            self._child, role, scope, self._token, fn, args, name=f"{self.job_id}-{role}"
        )

    async def _child(
        self,
        role: str,
        scope: trio.CancelScope,
        token: int,
        fn: Callable[..., Awaitable[None]],
        args: tuple[Any, ...],
    ) -> None:
        try:
            with scope:
                await fn(token, *args)
            if scope.cancelled_caught and self._holds(scope):
                # Cut by its deadline, not by this actor (which forgets a scope it cancels).
                await self._report(_JobTimedOut() if self._job_first else _AttemptTimedOut(token))
        except Exception as exc:
            log.warning("job %s: %s failed unexpectedly: %s", self.job_id, role, describe(exc))
            log.debug("job %s: %s traceback", self.job_id, role, exc_info=True)
            await self._report(
                _Failed(
                    token,
                    AttemptFailure("retryable", f"{role}: unexpected {describe(exc)}"),
                    suspect=False,
                )
            )
        finally:
            # Under the role it has now (a child may go on as another: _become).
            for held, running in self._scopes.items():
                if running is scope:
                    del self._scopes[held]
                    break

    def _holds(self, scope: trio.CancelScope) -> bool:
        return any(running is scope for running in self._scopes.values())

    async def _become(self, role: str, then: str) -> None:
        """The calling child (``role``) goes on as ``then``: one task for the POST, the
        follow and the download of an attempt's prompt, not three (issue 16). A child that
        was replaced or cancelled meanwhile stops here instead."""
        await trio.lowlevel.checkpoint_if_cancelled()
        scope = self._scopes.pop(role, None)
        if scope is None:
            return
        prior = self._scopes.pop(then, None)
        if prior is not None:
            prior.cancel()
        self._scopes[then] = scope

    def _cancel_children(self) -> None:
        for scope in self._scopes.values():
            scope.cancel()
        self._scopes.clear()

    async def _report(self, msg: Any) -> None:
        """A child's answer to its actor (dropped if the actor ended meanwhile)."""
        try:
            await self.ref.tell(msg)
        except ActorStoppedError:
            log.debug("job %s: %s arrived after the actor stopped", self.job_id, type(msg))

    def _new_attempt(self) -> int:
        """Leave the current attempt: its children are cancelled, its reports dropped."""
        self._cancel_children()
        self._unwatch()
        self._bound_posts()
        self._attempt_on = False
        self._token += 1
        self._upload_name = None
        self._extra_names = {}
        return self._token

    async def _release(self) -> None:
        """Give the machine back. If this job re-attached to a prompt there and no lookup
        ever answered for it (its ComfyUI failing all along), the prompt may still run
        there, unfollowed, in a slot the pool would hand to another job (a second prompt
        queued behind it on a one-slot machine), and no log line would place it there after
        another crash. So the machine is given back *broken*: the pool gives it no new job
        and stops it (a RunComfy machine; ``MachineStopping``, reason
        ``reattach_given_up``, is logged before the ``DELETE``), and the prompt with it,
        once no other job holds it (their prompts there run to their end, not killed to be
        run and paid for again). That decision is in the log (``MachineDraining``) before
        this returns, so before the retry or failure this job logs next: a run resumed from
        any point gives the machine no job either. Not for an interrupted job: the log keeps
        its prompt placed there, for the resume's re-attach
        (``machines_policy.reserved_slots``)."""
        lease, self._lease = self._lease, None
        unproven, self._unproven = self._unproven, None
        if lease is None:
            return
        broken = unproven is not None and self.job.status != st.INTERRUPTED
        if broken:
            log.warning(
                "job %s: prompt %s on server %s gives up its re-attach unlooked-up (it may"
                " still run there): the machine takes no new job and is stopped once no"
                " other job holds it",
                self.job_id,
                unproven[:8] if unproven is not None else "?",
                lease.server_id,
            )
        await self.pool.release(lease.server_id, self.job_id, broken=broken)

    async def _release_held(self) -> None:
        """Give back every lease the log says this job holds (a crashed incarnation's, or
        one asked back whose answer never reached this actor)."""
        for m in list(self.ctx.state.machines.values()):
            if self.job_id in m.leases:
                await self.pool.release(m.server_id, self.job_id)

    async def _finish(self) -> None:
        """The job needs its actor no more: give the machine back and stop."""
        if self._ending:
            return
        self._ending = True
        self._new_attempt()
        await self._release()
        self.pool.cancel_lease(self.job_id)
        self.on_done(self.job_id)
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        first, self._first = self._first, None
        if self.incarnation > 1:
            first = None
        job = self.ctx.state.jobs.get(self.job_id)
        # Interrupted while its lease was on its way (the run stops): not taken up. A
        # cancel is honoured whatever the job's resumable status (interrupted included).
        stopped = (
            first is not None
            and not isinstance(first, CancelJob)
            and job is not None
            and job.status == st.INTERRUPTED
        )
        if job is None or job.status in st.TERMINAL_STATUSES or stopped:
            if isinstance(first, Lease):
                self._lease = first  # leased as the job ended: _finish gives it back
            await self._finish()
            return
        crashes = self.incarnation - 1
        if crashes:
            await self._release_held()
            health = self.ctx.state.actors.get(self.path)
            error = health.last_error if health is not None and health.last_error else "?"
            failed = decide.job_crashed(
                self.ctx.state,
                self.job_id,
                crashes=crashes,
                max_crashes=self.max_crashes,
                error=_one_line(error, 200),
                at=self.ctx.now(),
            )
            if failed is not None:
                await self._emit_or_stop(failed)
                await self._finish()
                return
        if job.status == st.INTERRUPTED and not isinstance(first, CancelJob):
            await self._emit_or_stop(
                decide.resume_job(self.ctx.state, self.job_id, at=self.ctx.now())
            )
        deadline = decide.job_deadline(
            self.ctx.state, self.job_id, total_timeout=self.ctx.config.retry.total_timeout
        )
        left = max(0.0, deadline - self.ctx.now())
        # The job's deadline on the trio clock. No timer task yet: a job waiting in the
        # pool's queue has no actor (the queue's one timer watches its deadline: issue 16),
        # a restarted incarnation's lease child waits until this deadline itself; the timer
        # starts with the first other child.
        self._timeout_at = trio.current_time() + left
        match first:
            case None:
                self.ref.tell_nowait(_Go())
            case Lease():  # the queue leased it a machine: the attempt starts here
                self._new_attempt()
                self._reattach = False
                self.ref.tell_nowait(_Leased(self._token, first))
            case LeaseFailedError(reason="timeout"):
                self.ref.tell_nowait(_JobTimedOut())
            case LeaseFailedError():
                self.ref.tell_nowait(_LeaseFailed(self._token, first))
            case CancelJob():
                self.ref.tell_nowait(first)

    def _start_timer(self) -> None:
        if not self._timer_started:
            self._timer_started = True
            self.start_soon(self._job_timer, name=f"{self.job_id}-timeout")

    async def _job_timer(self) -> None:
        await trio.sleep_until(self._timeout_at)
        await self._report(_JobTimedOut())

    async def _emit_or_stop(self, *events: Any) -> bool:
        """Emit; if the journal refuses, tell the run to stop and stop this actor (False)."""
        try:
            await self.emit(*events)
        except _LogFailedError as exc:
            if self.on_fatal is not None:
                self.on_fatal(exc.__cause__ or exc)
            self._ending = True
            self._new_attempt()
            self.stop()
            return False
        return True

    async def receive(self, msg: Any) -> Any:
        if isinstance(msg, _CancelDone):
            await self._cancelled(msg)
            return None
        if self._ending or self._cancelling:
            if isinstance(msg, _Leased):
                await self.pool.release(msg.lease.server_id, self.job_id)
            return None
        try:
            await self._handle(msg)
        except _LogFailedError as exc:
            if self.on_fatal is not None:
                self.on_fatal(exc.__cause__ or exc)
            self._ending = True
            self._new_attempt()
            self.stop()
        except BaseException:
            # This incarnation crashes (or is cut): on_stop runs only once its children
            # ended, too late to bound a POST still on the wire (it would hold the restart
            # up to POST_CAP). Bound it now.
            self._bound_posts()
            raise
        return None

    async def _handle(self, msg: Any) -> None:
        token = getattr(msg, "token", self._token)
        if token != self._token:
            if isinstance(msg, _Leased):
                await self.pool.release(msg.lease.server_id, self.job_id)
            return
        if type(msg) is _Progress:  # most of a job's messages: before the match's chain
            await self._on_progress(msg.update)
            return
        stop = self._stop_after_download
        if stop is not None and not isinstance(msg, _Saved | _Downloaded | CancelJob):
            # The run stops and this job was downloading: anything but its outputs (the
            # grace over, the download failed, its machine lost) interrupts it now.
            await self._interrupt(stop)
            return
        match msg:
            case _Go():
                await self._go()
            case _Leased():
                await self._on_leased(msg.lease)
            case _LeaseFailed():
                await self._on_lease_failed(msg.error)
            case _Found(where="unknown") if self._outage:
                self._unproven = None  # the attached ComfyUI restarted while it was away
                await self._start_again_after_outage()
            case _Found(where="unknown"):
                self._unproven = None  # proven: the machine does not have it
                sid = self._lease.server_id if self._lease is not None else "?"
                pid = (self.job.prompt_id or "")[:8]
                failure = AttemptFailure("retryable", f"server {sid} does not know prompt {pid}")
                await self._on_failed(failure, True)
            case _Found():
                self._unproven = None
                self._outage = False
                self._spawn("follow", self._follow, self.job.prompt_id, True)
            case _ExtrasUploaded():
                for key, node_id, name, sha256, size in msg.files:
                    self._extra_names[key] = name
                    await self.emit(
                        ev.InputUploaded(
                            job_id=self.job_id,
                            node_id=node_id,
                            name=name,
                            sha256=sha256,
                            size=size,
                            at=self.ctx.now(),
                        )
                    )
                if self.job.image_path is None:
                    await self._submit()
            case _Uploaded():
                self._upload_name = msg.name
                await self.emit(
                    ev.InputUploaded(
                        job_id=self.job_id,
                        node_id=msg.node_id,
                        name=msg.name,
                        sha256=msg.sha256,
                        size=msg.size,
                        at=self.ctx.now(),
                    )
                )
                await self._submit()
            case _SocketUp():
                await self._submit_now()
            case _Submitted():
                # The POST's child goes on following the prompt (its reports come after).
                await self.emit(
                    ev.PromptSubmitted(
                        job_id=self.job_id,
                        prompt_id=self.job.prompt_id or "",
                        number=msg.number,
                        at=self.ctx.now(),
                    )
                )
            case _Rejected():
                await self.emit(
                    ev.PromptRejected(
                        job_id=self.job_id,
                        prompt_id=self.job.prompt_id or "",
                        error_type=msg.error_type,
                        message=_one_line(msg.message),
                        node_id=msg.node_id,
                        class_type=msg.class_type,
                        at=self.ctx.now(),
                    )
                )
                await self._judge(AttemptFailure("fatal", msg.message, msg.failed_as))
            case _Progress():
                await self._on_progress(msg.update)
            case _Saved():
                await self.emit(self._output_saved(msg))
            case _Downloaded(last=None):
                if not self.job.outputs:  # nothing to show for it: not a success
                    failure = AttemptFailure("fatal", "the prompt produced no output", "NoOutput")
                    await self._judge(failure)
                    return
                await self.emit(decide.succeed_job(self.ctx.state, self.job_id, at=self.ctx.now()))
                await self._finish()
            case _Downloaded(last=_Saved() as last):
                # The last output and the success in one append (one commit, not two).
                saved = self._output_saved(last)
                succeeded = decide.succeed_job(
                    self.ctx.state, self.job_id, at=saved.at, saving=saved
                )
                await self.emit(saved, succeeded)
                await self._finish()
            case _Failed():
                await self._on_failed(msg.failure, msg.suspect)
            case _Judge():
                await self._judge(msg.failure)
            case _Lost():
                await self._judge(
                    AttemptFailure("machine_lost", f"machine {self._lost_name()} lost")
                )
            case _AttemptTimedOut():
                timeout = self.ctx.config.retry.attempt_timeout
                await self._on_failed(
                    AttemptFailure("retryable", f"attempt timed out after {timeout:g} s"), True
                )
            case _RetryDue():
                await self._go()
            case _JobTimedOut():
                self._new_attempt()
                self._interrupt_prompt_soon()
                await self.emit(
                    decide.time_out_job(
                        self.ctx.state,
                        self.job_id,
                        total_timeout=self.ctx.config.retry.total_timeout,
                        at=self.ctx.now(),
                    )
                )
                await self._finish()
            case CancelJob():
                # Nothing but the cancellation from here on: interrupt the prompt (a child,
                # bounded), then _CancelDone -> JobCancelled.
                self._new_attempt()
                self._cancelling = True
                self.pool.cancel_lease(self.job_id)
                self.start_soon(
                    self._interrupt_then,
                    self._lease,
                    self.job.prompt_id,
                    _CancelDone(msg.reason),
                    name=f"{self.job_id}-cancel",
                )
            case InterruptJob():
                if (
                    self._stop_after_download is None
                    and "download" in self._scopes
                    and self.job.execution == "succeeded"
                ):
                    # Its prompt has run (paid for): its outputs come down first, for up to
                    # DOWNLOAD_GRACE, rather than a resume running the prompt again (QA H12).
                    self._stop_after_download = msg.reason
                    log.info(
                        "job %s: downloading its outputs before it stops (up to %g s)",
                        self.job_id,
                        DOWNLOAD_GRACE,
                    )
                    self._spawn("grace", self._sleep_then, DOWNLOAD_GRACE, _GraceOver)
                    return
                await self._interrupt(msg.reason)
            case JobStallNoticed():
                if "follow" in self._scopes and self._ws_nodes():
                    # Its SaveImageWebsocket images come only over the socket it follows on
                    # (a prompt queued behind another on the machine is "stalled" too): off
                    # it, they would be lost and the prompt run (and paid) again. That
                    # follow polls /history all the same: it cannot hang.
                    log.info("job %s stalled: still following its prompt's socket", self.job_id)
                elif "follow" in self._scopes and self.job.prompt_id is not None:
                    log.info("job %s stalled: following its prompt by polling", self.job_id)
                    self._spawn("follow", self._follow, self.job.prompt_id, False)
            case _:
                log.warning("WorkflowActor: unknown message %s", type(msg).__name__)

    def _output_saved(self, msg: _Saved) -> ev.OutputSaved:
        return ev.OutputSaved(
            job_id=self.job_id,
            node_id=msg.node_id,
            filename=msg.filename,
            path=msg.path,
            size=msg.size,
            sha256=msg.sha256,
            kind=msg.kind,
            at=self.ctx.now(),
        )

    def _lost_name(self) -> str:
        return self._lease.server_id if self._lease is not None else "?"

    # ------------------------------------------------------------------ steps

    def _reattach_target(self) -> str | None:
        """The machine of this job's submitted prompt if it may still run it (resume)."""
        job = self.job
        if self._no_reattach or job.status != st.RUNNING:
            return None
        # The pool keeps this machine's slot for the job by the same rule (reserved_slots).
        server_id = machines_policy.prompt_machine(job)
        m = self.ctx.state.machines.get(server_id) if server_id is not None else None
        if m is None or m.status in st.MACHINE_GONE:
            return None
        return server_id

    async def _reattach_attached(self) -> bool:
        """The attached ComfyUI (``--comfyui-url``, the dev machine) of this job's submitted
        prompt stopped answering (the pool's health check: ``MachineUnhealthy``). It may
        only be cut off (its network), and run the prompt on, or finish it, meanwhile: so
        the job keeps it, as a resumed run does (``_reattach_target``), and waits, in its
        place in the queue, for that ComfyUI to answer again; then it looks the prompt up
        and follows it (downloads its outputs if it finished), or, if that ComfyUI forgot
        it (a restart), submits it again on that lease (``_start_again_after_outage``).
        False: not such a case (the lost machine is judged as usual)."""
        lease = self._lease
        if lease is None or self._no_reattach:
            return False
        m = self.ctx.state.machines.get(lease.server_id)
        if m is None or m.kind == "runcomfy" or m.status in st.MACHINE_GONE:
            return False
        # An attached machine still there whose lease was lost: taken for down (it may be
        # back already, before this job heard of it: it asks it again all the same).
        if not lease.lost.is_set():
            return False
        if self._reattach_target() != lease.server_id:
            return False  # no prompt there (yet): queued again like any job of a lost machine
        log.info(
            "job %s: waits for its prompt %s on %s to answer again",
            self.job_id,
            (self.job.prompt_id or "")[:8],
            lease.server_id,
        )
        # Not a broken release: the lookup that did not answer was the outage's, and the
        # job asks that machine again (its slot: the place the pool kept for it).
        self._unproven = None
        self._outage = True
        await self._go()
        return True

    async def _start_again_after_outage(self) -> None:
        """The attached ComfyUI answers again without the job's prompt (it restarted): a
        new attempt on the lease the job holds, in its place (queued again and started in
        one step: not a failure of the job, no backoff, no other job before it)."""
        assert self._lease is not None
        self._outage = False
        self._reattach = False
        sid = self._lease.server_id
        lost = (self.job.prompt_id or "")[:8]
        reason = f"server {sid} restarted: it lost prompt {lost}"
        await self.emit(
            decide.queue_job(self.ctx.state, self.job_id, reason=reason, at=self.ctx.now())
        )
        started = decide.start_job(self.ctx.state, self.job_id, sid, at=self.ctx.now())
        if self.job.image_path is not None or self.job.extra_inputs:
            await self.emit(started)
            self._spawn("upload", self._upload, self._graph())
        else:
            await self._submit(started)

    async def _go(self) -> None:
        """Ask for a machine (for a new attempt, or to re-attach to a submitted prompt)."""
        job = self.job
        if job.status in st.TERMINAL_STATUSES:
            await self._finish()
            return
        self._new_attempt()
        await self._release()
        only = self._reattach_target()
        if job.status == st.PENDING:
            await self.emit(decide.queue_job(self.ctx.state, self.job_id, at=self.ctx.now()))
        elif job.status == st.RUNNING and only is None:
            await self.emit(
                decide.queue_job(self.ctx.state, self.job_id, reason="resumed", at=self.ctx.now())
            )
        self._reattach = only is not None
        if only is None and self.incarnation == 1:
            await self._wait_queued()
            return
        self._spawn("lease", self._lease_child, only)

    async def _wait_queued(self) -> None:
        """The job waits for a machine as an entry in the pool's queue, not as this actor
        (issue 16): the actor ends; a fresh one starts with the machine leased to the job.
        A restarted incarnation keeps waiting itself instead (its crashes stay counted)."""
        job = self.job
        self._ending = True
        self._new_attempt()
        await self.pool.queue(self.job_id, job.workflow_version, job.priority, self._timeout_at)
        self.on_done(self.job_id)
        self.stop()

    async def _on_leased(self, lease: Lease) -> None:
        self._lease = lease
        if lease.client is None:
            await self._judge(AttemptFailure("machine_lost", "machine has no client"))
            return
        self._watch(lease)
        if self._reattach:
            self._unproven = self.job.prompt_id
            self._spawn("find", self._find, self.job.prompt_id)
            return
        stale = [o.path for o in self.job.outputs]
        if stale:  # an earlier attempt's files: not this job's outputs (the fold drops them)
            job_dir = self.ctx.out_dir / self.job_id
            await trio.to_thread.run_sync(files.remove_outputs, job_dir, stale)
        started = decide.start_job(self.ctx.state, self.job_id, lease.server_id, at=self.ctx.now())
        if self.job.image_path is not None or self.job.extra_inputs:
            await self.emit(started)
            self._spawn("upload", self._upload, self._graph())
        else:
            await self._submit(started)  # one append: JobStarted, PromptSubmitting

    async def _on_lease_failed(self, error: LeaseFailedError) -> None:
        if error.reason == "gone" and self._reattach:
            self._no_reattach = True  # its machine is gone: requeue and submit anew
            await self._go()
            return
        if error.reason == "cancelled":
            return
        await self.emit(
            decide.fail_job(
                self.ctx.state,
                self.job_id,
                error_type="BudgetRefused" if error.reason == "budget" else "NoMachine",
                message=_one_line(str(error)),
                retryable=error.retryable,
                at=self.ctx.now(),
            )
        )
        await self._finish()

    def _graph(self) -> dict[str, Any]:
        """The job's workflow graph (parsed once per run and shared: read it, never change
        it; ``apply_bindings`` makes the prompt a copy)."""
        return self.ctx.graph(self.job.workflow_sha256)

    async def _submit(self, started: ev.JobStarted | None = None) -> None:
        """Submit, once the machine's WebSocket is connected: ComfyUI sends a prompt's events
        and its SaveImageWebsocket images only to the socket of the prompt's ``client_id``,
        as it runs, and keeps nothing; a socket that connects after the POST misses them. If
        it is not connected (dropped, reconnecting), a child waits for it first.
        ``started``: the attempt's JobStarted, not emitted yet (it goes with the intent)."""
        assert self._lease is not None
        events = self._lease.events
        if events is not None and not events.connected:
            if started is not None:
                await self.emit(started)
            self._spawn("socket", self._await_socket, events)
            return
        await self._submit_now(started)

    async def _submit_now(self, started: ev.JobStarted | None = None) -> None:
        """``PromptSubmitting`` (the intent, before the POST; in one append after
        ``started`` if given), then the POST in a child."""
        assert self._lease is not None
        why = self.stopping() if self.stopping is not None else None
        if why is not None:  # the run stops: no prompt now (its InterruptJob follows)
            await self._interrupt(why)
            return
        job = self.job
        graph = self._graph()
        bindings = dict(job.bindings)
        if self._upload_name is not None:
            roles = self._roles()
            if roles.input_image is not None:
                bindings[f"{roles.input_image}.image"] = json.dumps(self._upload_name)
        for key, name in self._extra_names.items():
            bindings[key] = json.dumps(name)
        prompt = apply_bindings(graph, bindings)
        prompt_id = str(self.ctx.ids())
        events = self._lease.events
        client_id = events.client_id if events is not None else self.ctx.ids().hex
        submitting = ev.PromptSubmitting(
            job_id=self.job_id,
            attempt=started.attempt if started is not None else job.attempt,
            prompt_id=prompt_id,
            client_id=client_id,
            server_id=self._lease.server_id,
            at=self.ctx.now(),
        )
        if started is not None:
            await self.emit(started, submitting)
        else:
            await self.emit(submitting)
        self._spawn("submit", self._post, prompt, prompt_id, client_id)

    async def _await_socket(self, token: int, events: Any) -> None:
        """Wait (at most ``SOCKET_WAIT`` s) for the machine's WebSocket to connect. If it does
        not, a prompt without SaveImageWebsocket goes on (followed by polling); one with it
        would lose its images: the attempt fails (retryable) instead of paying for that."""
        with trio.move_on_after(SOCKET_WAIT):
            await events.wait_connected()
        if events.connected or not self._ws_nodes():
            await self._report(_SocketUp(token))
            return
        failure = AttemptFailure(
            "retryable",
            f"the WebSocket to machine {self._lease.server_id if self._lease else '?'} did not"
            f" connect within {SOCKET_WAIT:g} s: SaveImageWebsocket images come only over it",
        )
        await self._report(_Failed(token, failure, suspect=True))

    def _ws_saved(self, frames: dict[str, int]) -> dict[str, int]:
        """SaveImageWebsocket images the job has, by node: those this follow received, or
        those already kept (an earlier follow of the prompt, before a switch to polling or
        a resume; an earlier attempt's identical ones), whichever is more."""
        kept: dict[str, set[str]] = {}
        for o in self.job.outputs:
            if Path(o.path).parent.name == WS_SUBFOLDER:
                kept.setdefault(o.node_id, set()).add(o.path)
        nodes = set(frames) | set(kept)
        return {n: max(frames.get(n, 0), len(kept.get(n, ()))) for n in nodes}

    def _ws_sent(self, sent: dict[str, int]) -> dict[str, int]:
        """The images each SaveImageWebsocket node announced for the current prompt: in this
        follow, or as the log recorded (its progress max, kept across follows and resumes)."""
        announced = dict(sent)
        ws_nodes = self._ws_nodes()
        for node_id, node in self.job.nodes.items():
            if node.max and node_id in ws_nodes:
                announced[node_id] = max(announced.get(node_id, 0), int(node.max))
        return announced

    def _ws_nodes(self) -> frozenset[str]:
        """The graph's SaveImageWebsocket nodes (their images come only over the WebSocket),
        found once per workflow and run."""
        return self.ctx.derived(self.job.workflow_sha256, "ws_nodes", _ws_save_nodes)

    def _roles(self) -> Roles:
        """The graph's CONJURE roles, found once per workflow and run."""
        return self.ctx.derived(self.job.workflow_sha256, "roles", conjure_roles)

    async def _on_progress(self, u: Any) -> None:
        jid = self.job_id
        pid = self.job.prompt_id or ""
        now = self.ctx.now()
        match u:
            case _Streamed(updates=updates):
                u.taken = True  # the follow child starts a new batch from now on
                await self.emit(*_streamed_events(updates, jid, pid, now))
            case (
                cu.PromptStarted()
                | cu.NodesCached()
                | cu.NodeStarted()
                | cu.NodeProgress()
                | cu.NodeExecuted()
            ):
                await self.emit(*_streamed_events((u,), jid, pid, now))
            case cu.PromptSucceeded():
                # The follow's child goes on downloading the outputs (_Saved, _Downloaded).
                if self.job.execution != "succeeded":
                    await self.emit(ev.ExecutionSucceeded(job_id=jid, prompt_id=pid, at=now))
            case cu.PromptFailed():
                await self.emit(
                    ev.ExecutionFailed(
                        job_id=jid,
                        prompt_id=pid,
                        node_id=u.node_id,
                        node_type=u.node_type,
                        exception_type=u.exception_type,
                        message=_one_line(u.exception_message),
                        at=now,
                    )
                )
                await self._judge(
                    decide.execution_failure(
                        u.node_id, u.node_type, u.exception_type, u.exception_message
                    )
                )
            case cu.PromptInterrupted():
                await self.emit(
                    ev.ExecutionInterrupted(job_id=jid, prompt_id=pid, node_id=u.node_id, at=now)
                )
                # This run interrupts a prompt only once it has left the attempt (cancel,
                # timeout), so an interrupt reported here came from elsewhere. Suspect: a
                # machine going away interrupts too (then it is a requeue, not a cancel).
                await self._on_failed(decide.outside_interrupt(u.node_id, u.node_type), True)
            case _:
                pass

    async def _on_failed(self, failure: AttemptFailure, suspect: bool) -> None:
        """A failed attempt: if it may be the machine vanishing, let the pool look first."""
        if self.job.execution in ("submitting", "submitted", "started"):
            # Its prompt may still run (and bill, and hold the machine's queue): a timeout,
            # an unknown outcome not found, a follow that failed, a WebSocket image unsaved.
            self._interrupt_prompt_soon()
        self._new_attempt()
        lease = self._lease
        if suspect and lease is not None and not lease.lost.is_set():
            self._spawn("look", self._look, failure)
            return
        await self._judge(failure)

    async def _judge(self, failure: AttemptFailure) -> None:
        """Decide (``decide.judge_failure``) and act: retry after a backoff, requeue, fail."""
        self._new_attempt()
        lease = self._lease
        if failure.kind != "machine_lost" and lease is not None and self._machine_gone(lease):
            failure = AttemptFailure("machine_lost", f"machine {lease.server_id} lost")
        if failure.kind == "machine_lost" and await self._reattach_attached():
            return
        await self._release()
        job = self.job
        event = decide.judge_failure(
            self.ctx.state,
            self.job_id,
            attrs.evolve(failure, reason=_one_line(failure.reason)),
            max_attempts=self.backoff.max_attempts,
            delay=self.backoff.delay(job.failures + 1),
            at=self.ctx.now(),
            max_lost=self.ctx.config.retry.max_lost_machines,
        )
        if event is None:
            if job.status in st.TERMINAL_STATUSES:
                await self._finish()
            else:
                await self._go()
            return
        await self.emit(event)
        match event:
            case ev.JobRetrying():
                self._no_reattach = True
                self._spawn("backoff", self._sleep_then, event.delay, _RetryDue)
            case ev.JobQueued():
                self._no_reattach = True
                self.ref.tell_nowait(_Go())
            case _:
                await self._finish()

    def _machine_gone(self, lease: Lease) -> bool:
        machine = self.ctx.state.machines.get(lease.server_id)
        return lease.lost.is_set() or machine is None or machine.status in st.MACHINE_GONE

    async def _interrupt(self, reason: str) -> None:
        """The run stops: the job waits, ``interrupted``, for ``run --resume``."""
        self._new_attempt()
        # A POST still on the wire is not waited for: no cleanup follows a run's stop, and
        # the resume looks its prompt up (find_prompt) before anything else.
        for scope in self._post_scopes.values():
            scope.cancel()
        self.pool.cancel_lease(self.job_id)
        if self.job.status in st.ACTIVE_STATUSES:
            await self.emit(
                decide.interrupt_job(self.ctx.state, self.job_id, reason=reason, at=self.ctx.now())
            )
        await self._finish()

    async def _cancelled(self, msg: _CancelDone) -> None:
        if self._ending:
            return
        if msg.stopped:  # the machine answered: the prompt is deleted or told to stop
            self._unproven = None
        await self._release()
        if self.job.status not in st.TERMINAL_STATUSES:
            await self._emit_or_stop(
                decide.cancel_job(self.ctx.state, self.job_id, reason=msg.reason, at=self.ctx.now())
            )
        await self._finish()

    def _interrupt_prompt_soon(self) -> None:
        self.start_soon(
            self._interrupt_then, self._lease, self.job.prompt_id, None, name=f"{self.job_id}-stop"
        )

    async def _interrupt_then(self, lease: Lease | None, prompt_id: str | None, then: Any) -> None:
        """A child: interrupt the prompt, then report ``then`` (if any; a ``_CancelDone``
        says whether the machine answered the stop)."""
        stopped = await self._interrupt_prompt(lease, prompt_id)
        if isinstance(then, _CancelDone):
            then = attrs.evolve(then, stopped=stopped)
        if then is not None:
            await self._report(then)

    async def _interrupt_prompt(self, lease: Lease | None, prompt_id: str | None) -> bool:
        """``DELETE`` the prompt from the queue and ``/interrupt`` it (shielded, bounded).
        False: the machine did not answer both (the prompt may run on)."""
        if lease is None or lease.client is None or prompt_id is None:
            return False
        if lease.lost.is_set():  # stopped or vanished: nothing runs there any more
            return True
        if prompt_id == self.job.prompt_id and self.job.execution == "succeeded":
            # It has run: nothing to stop (the job downloads its outputs). A /interrupt now
            # would reach whatever that ComfyUI runs next: another client's prompt, or ours
            # on a machine of several slots, if it ignores /interrupt's prompt id.
            return True
        posting = self._posts.get(prompt_id)
        if posting is not None:  # its POST may land after a DELETE sent now: wait for it
            with trio.CancelScope(shield=True), trio.move_on_after(POST_PATIENCE) as waiting:
                await posting.wait()
            if waiting.cancelled_caught:  # it may land after the DELETE below: watch for it
                self._give_up(lease, prompt_id)
        done = False
        with trio.CancelScope(shield=True), trio.move_on_after(INTERRUPT_DEADLINE):
            try:
                await lease.client.delete_from_queue(prompt_id)
                await lease.client.interrupt(prompt_id)
                done = True
            except cerr.ClientError as exc:
                log.info("interrupting job %s: %s", self.job_id, exc)
        if not done:
            # Failed or timed out: the prompt may run on, unfollowed, on a paid machine
            # (and the next job there waits behind it). The pool's late-prompt watch looks
            # it up and stops it (retried every LATE_PROMPT_EVERY s, targeted).
            self._give_up(lease, prompt_id)
        return done

    # ------------------------------------------------------------------ children (report only)

    async def _lease_child(self, token: int, only: str | None) -> None:
        """Ask for a machine and wait for it, until the job's deadline at most (the job's
        timer task is not running yet if this is all the job does: _JobTimedOut then)."""
        with trio.move_on_at(self._timeout_at) as waiting:
            lease = await self._lease_wait(token, only)
        if waiting.cancelled_caught:
            await self._report(_JobTimedOut())
        elif lease is not None:
            await self._report(_Leased(token, lease))

    async def _lease_wait(self, token: int, only: str | None) -> Lease | None:
        reply: Reply[Lease] = Reply()
        job = self.job
        await self.pool.lease(self.job_id, job.workflow_version, job.priority, reply, only)
        try:
            return await reply.wait()
        except LeaseFailedError as exc:
            await self._report(_LeaseFailed(token, exc))
            return None
        except BaseException:
            self.pool.cancel_lease(self.job_id)
            granted = reply._value if reply.done else None
            with trio.CancelScope(shield=True):
                if isinstance(granted, Lease):  # granted while we were cancelled: give it back
                    await self.pool.release(granted.server_id, self.job_id)
                else:
                    # A lease the log says this job holds, asked back (after a restart) while
                    # its machine's socket reopens: the cancelled wait gives it back too, or
                    # the machine would stay leased to an ended job (found by review).
                    await self._release_held()
            raise

    def _watch(self, lease: Lease) -> None:
        """The attempt's watch, without a task (issue 16): its machine lost (``_Lost``, told
        by the lost signal's callback), its deadline passed (``_AttemptTimedOut``), or the
        job's (``_JobTimedOut``, unless the job's timer task runs already), whichever comes
        first (the deadline is on each child of the attempt: _spawn, _child)."""
        attempt_at = trio.current_time() + self.ctx.config.retry.attempt_timeout
        if self._reattach:
            # An attempt a restart re-attaches to its prompt has the time it had left, not
            # its whole time again (a serve restarted every 30 min never timed one out).
            attempt_at -= self.job.attempt_time_used
        job_at = math.inf if self._timer_started else self._timeout_at
        self._attempt_on = True
        self._watch_at = min(attempt_at, job_at)
        self._job_first = job_at <= attempt_at
        self._watching = lease.lost
        token = self._token
        lease.lost.watch(self, lambda: self._machine_lost(token))

    def _unwatch(self) -> None:
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.unwatch(self)

    def _machine_lost(self, token: int) -> None:
        """The lost signal's callback (in the pool's task, or here if it was set already)."""
        try:
            self.ref.tell_nowait(_Lost(token))
        except MailboxFullError:
            # ActorError: this incarnation is over; RuntimeError: its nursery closed already
            # (ending: run() not yet past it). Either way no report of its attempt matters.
            with contextlib.suppress(ActorError, RuntimeError):
                self.start_soon(self._report, _Lost(token), name=f"{self.job_id}-lost")
        except ActorStoppedError:
            pass

    async def on_stop(self) -> None:
        # A crashed incarnation forgets its watch too (a restart counts tokens anew).
        self._unwatch()
        self._bound_posts()

    async def _sleep_then(self, token: int, seconds: float, msg: Callable[[int], Any]) -> None:
        await trio.sleep(seconds)
        await self._report(msg(token))

    async def _look(self, token: int, failure: AttemptFailure) -> None:
        """Ask the pool for a fresh listing, so a vanished machine is known before a failure
        is counted (or the machine leased again)."""
        lease = self._lease
        with trio.move_on_after(LOST_CHECK_TIMEOUT):
            try:
                await self.pool.polled(lease.server_id if lease is not None else None)
            except (ActorStoppedError, ConjureError) as exc:  # judge by what is known
                log.info("job %s: no fresh look at the cloud: %s", self.job_id, exc)
        await self._report(_Judge(token, failure))

    def _client(self) -> ComfyUIClient:
        assert self._lease is not None
        return self._lease.client

    async def _find(self, token: int, prompt_id: str | None) -> None:
        """Look the re-attached prompt up on its machine (``/queue``, then ``/history``).
        Only an answer proves anything: a lookup that fails (a 5xx or a 429 past the
        client's own retries, a timeout, a dropped connection) is tried again after a pause
        (doubling, to 30 s) for as long as the attempt lasts. Giving the prompt up on a
        failed lookup would free its machine's slot while it may run there (and a new
        prompt would queue behind it)."""
        assert prompt_id is not None
        pause = FOLLOW_RETRY_DELAY
        while True:
            try:
                where = str(await self._client().find_prompt(prompt_id))
                break
            except cerr.ClientError as exc:
                log.info(
                    "job %s: looking up prompt %s failed (%s); looking again in %g s",
                    self.job_id,
                    prompt_id[:8],
                    exc,
                    pause,
                )
                await trio.sleep(pause)
                pause = min(FOLLOW_RETRY_MAX, pause * 2)
        if where == "unknown":
            # The machine forgot it (restart) or it never arrived: a fresh attempt. Its POST
            # (of an earlier run) may still be on the wire: the pool watches for it.
            self._give_up(self._lease, prompt_id)
        await self._report(_Found(token, where))

    async def _upload_extras(self, token: int) -> bool:
        """Upload ``job.extra_inputs`` (inputs beyond the input image), then report them all
        at once; False when a failure was reported instead."""
        sent: list[tuple[str, str, str, str, int]] = []
        for key, recorded in sorted(self.job.extra_inputs.items()):
            stem = Path(recorded).stem
            kept_sha = stem if len(stem) == 64 else None
            path = self._input_path(recorded, kept_sha)
            problem = None
            data = b""
            if path is None:
                problem = f"input {recorded} for {key} is missing (it was kept at submission)"
            else:
                try:
                    data = files.read_bytes(path)
                except OSError as exc:
                    problem = f"cannot read input {path} for {key}: {exc.strerror}"
            digest = hashlib.sha256(data).hexdigest()
            if problem is None and kept_sha is not None and digest != kept_sha:
                problem = f"input {path} for {key} changed since the job was submitted"
            if problem is not None or path is None:
                failure = AttemptFailure(
                    "fatal", f"{problem}; submit the job again", "InputMissing"
                )
                await self._report(_Failed(token, failure, suspect=False))
                return False
            filename = f"conjure_{digest[:16]}{path.suffix or '.png'}"
            try:
                uploaded = await self._client().upload_image(data, filename)
            except cerr.ClientError as exc:
                failure = AttemptFailure("retryable", f"upload failed: {exc}")
                await self._report(_Failed(token, failure))
                return False
            sent.append((key, key.split(".", 1)[0], str(uploaded.reference), digest, len(data)))
        await self._report(_ExtrasUploaded(token, tuple(sent)))
        return True

    async def _upload(self, token: int, graph: dict[str, Any]) -> None:
        job = self.job
        if job.extra_inputs and not await self._upload_extras(token):
            return
        if job.image_path is None:
            return
        path = self._input_path(job.image_path, job.image_sha256)
        if path is None:
            await self._report(
                _Failed(
                    token,
                    AttemptFailure(
                        "fatal",
                        f"input image {job.image_path} is missing (it was kept at submission);"
                        " restore it, or submit the job again",
                        "InputMissing",
                    ),
                    suspect=False,
                )
            )
            return
        try:
            data = files.read_bytes(path)
        except OSError as exc:
            await self._report(
                _Failed(
                    token,
                    AttemptFailure(
                        "fatal", f"cannot read input image {path}: {exc.strerror}", "InputMissing"
                    ),
                    suspect=False,
                )
            )
            return
        digest = hashlib.sha256(data).hexdigest()
        if job.image_sha256 is not None and digest != job.image_sha256:
            await self._report(
                _Failed(
                    token,
                    AttemptFailure(
                        "fatal",
                        f"input image {path} changed since the job was submitted",
                        "InputChanged",
                    ),
                    suspect=False,
                )
            )
            return
        filename = f"conjure_{digest[:16]}{path.suffix or '.png'}"
        try:
            uploaded = await self._client().upload_image(data, filename)
        except cerr.ClientError as exc:
            await self._report(_Failed(token, AttemptFailure("retryable", f"upload failed: {exc}")))
            return
        roles = self._roles()
        await self._report(
            _Uploaded(token, roles.input_image or "", str(uploaded.reference), digest, len(data))
        )

    def _input_path(self, recorded: str, sha256: str | None) -> Path | None:
        """Where the job's kept input is: the recorded path (absolute since issue 17; an older
        log's relative path is tried as it is), else its content-addressed copy under this
        run's inputs folder. None: it is really gone."""
        path = Path(recorded)
        if path.is_file():
            return path
        if sha256 is not None:
            for candidate in (self.ctx.inputs_dir / path.name, self.ctx.inputs_dir / sha256):
                if candidate.is_file():
                    return candidate
        return None

    async def _post(
        self, token: int, prompt: dict[str, Any], prompt_id: str, client_id: str
    ) -> None:
        lease = self._lease
        client = self._client()
        check = self.ctx.prompt_check
        machine = self.ctx.state.machines.get(lease.server_id) if lease is not None else None
        if (
            check is not None
            and machine is not None
            and machine.workflow_version not in (None, check.version)
        ):
            check = None  # a machine of another version (a resumed job's): not its catalogue
        refused = await check.refusal(client, prompt) if check is not None else None
        if refused is not None:  # the machine's own catalogue refuses it: not sent, not run
            await self._report(
                _Rejected(
                    token,
                    "catalogue_check",
                    refused.message,
                    node_id=refused.node_id,
                    class_type=refused.class_type,
                )
            )
            return
        extra = self.side.extra_data.get(self.job_id) if self.side is not None else None
        api = self.ctx.state.service.api_jobs.get(self.job_id)
        if extra is None and api is not None and api.extra_data_keys:
            # Its extra_data (a credential, in memory only) went with a restart, and this
            # prompt is new (its machine lost, a retry): not sent without it, whose partner
            # node would fail on this paid machine (the restart fails the others first).
            lost = se.extra_data_lost(api.extra_data_keys)
            await self._report(_Rejected(token, "not_resumable", lost, failed_as="NotResumable"))
            return
        try:
            answer = await self._post_settled(client, prompt, prompt_id, client_id, extra)
        except cerr.PromptRejectedError as exc:
            first = exc.node_errors[0] if exc.node_errors else None
            message = str(exc)
            if exc.error_type == "invalid_prompt" and machine and machine.workflow_version:
                # A class the server lacks: a workflow version is a machine image, say which.
                message = f"workflow version {machine.workflow_version}'s machine: {message}"
            await self._report(
                _Rejected(
                    token,
                    exc.error_type,
                    message,
                    node_id=first.node_id if first is not None else None,
                    class_type=first.class_type or None if first is not None else None,
                )
            )
            return
        except cerr.OutcomeUnknownError:
            # Never resubmit blindly: look the id up first. Not found (or not looked up:
            # the lookup failed, the attempt ended), the job gives it up, but its POST may
            # still land: the pool watches for it, and stops it if it does.
            where = "unknown"
            try:
                where = str(await client.find_prompt(prompt_id))
            except cerr.ClientError as exc:
                await self._report(
                    _Failed(token, AttemptFailure("retryable", f"looking up prompt: {exc}"))
                )
                return
            finally:
                if where == "unknown":
                    self._give_up(lease, prompt_id)
            if where == "unknown":
                await self._report(
                    _Failed(
                        token,
                        AttemptFailure(
                            "retryable", "prompt submission outcome unknown and not found"
                        ),
                    )
                )
                return
            answer = None
        except cerr.ClientError as exc:
            await self._report(_Failed(token, AttemptFailure("retryable", f"submit failed: {exc}")))
            return
        warnings = tuple(getattr(answer, "warnings", ()) or ())
        if warnings:
            # Queued without the outputs those node errors drop: a failure, so the rest of
            # the prompt is not left to run (and bill) for nothing.
            await self._interrupt_prompt(self._lease, prompt_id)
            failure = decide.dropped_outputs([_node_problem(w) for w in warnings])
            await self._report(
                _Rejected(
                    token,
                    failure.error_type,
                    failure.reason,
                    failure.error_type,
                    node_id=str(warnings[0].node_id),
                    class_type=str(warnings[0].class_type) or None,
                )
            )
            return
        number = getattr(answer, "number", None)
        await self._report(_Submitted(token, float(number if number is not None else -1)))
        # This child goes on as the prompt's follower: its reports follow _Submitted in the
        # mailbox, so PromptSubmitted is written before anything the follow reports.
        await self._become("submit", "follow")
        await self._follow(token, prompt_id, True)

    async def _post_settled(
        self,
        client: Any,
        prompt: dict[str, Any],
        prompt_id: str,
        client_id: str,
        extra: Any,
    ) -> Any:
        """``POST /prompt``, not cut by the attempt's end (bounded by POST_PATIENCE): bytes
        already on the wire may reach ComfyUI after our ``DELETE``/``/interrupt``, and the
        prompt would then run unfollowed on the paid machine. The cleanup waits for this."""
        # Its attempt ended before the request left (the child never ran until now): not
        # sent at all, or it would land after the attempt's cleanup (no schedule point here).
        await trio.lowlevel.checkpoint_if_cancelled()
        posted = self._posts[prompt_id] = trio.Event()
        lost = self._lease.lost if self._lease is not None else None
        try:
            # Not cut by the attempt's end; bounded by the client's own timeouts and retries
            # while the attempt lives, and by POST_PATIENCE from its end (_bound_posts).
            # A cap for a forced stop (no _bound_posts): past the client's longest wait. The
            # deadline is given to the constructor, once (a scope's deadline setter costs a
            # context manager of trio's each time, issue 16).
            deadline = trio.current_time() + POST_CAP
            if self._attempt_on:  # its deadline (the attempt's or the job's) ends it too
                deadline = min(deadline, self._watch_at + POST_PATIENCE)
            with trio.CancelScope(shield=True, deadline=deadline) as shield:
                self._post_scopes[prompt_id] = shield
                if not self._attempt_on:  # the attempt ended already
                    self._bound_posts()
                # The machine stopped or vanished: nothing can run there, stop waiting.
                if lost is not None:
                    lost.watch(posted, shield.cancel)
                return await client.submit(
                    prompt, prompt_id=prompt_id, client_id=client_id, extra_data=extra
                )
            raise cerr.OutcomeUnknownError(
                "POST /prompt given up: its attempt ended, its machine is gone, or it took"
                f" {POST_CAP:g} s"
            )
        finally:
            if lost is not None:
                lost.unwatch(posted)
            posted.set()
            if self._posts.get(prompt_id) is posted:
                del self._posts[prompt_id]
                self._post_scopes.pop(prompt_id, None)

    def _give_up(self, lease: Lease | None, prompt_id: str) -> None:
        """This job will not follow ``prompt_id``, whose POST may still reach its machine:
        the pool watches for it there and stops it if it lands (``LatePromptStopped``)."""
        if lease is not None:
            self.pool.watch_late_prompt(lease.server_id, prompt_id, self.job_id)

    def _bound_posts(self) -> None:
        """The attempt (or the incarnation) ended: a POST still on the wire may take
        POST_PATIENCE more, no longer."""
        if not self._post_scopes:  # the usual case: no clock read (issue 16)
            return
        until = trio.current_time() + POST_PATIENCE
        for scope in self._post_scopes.values():
            if until < scope.deadline:  # (the setter runs a context manager of trio's)
                scope.deadline = until

    async def _follow(self, token: int, prompt_id: str | None, use_ws: bool) -> None:
        """Follow the prompt (``_follow_on``). A prompt re-attached after a restart was
        submitted with the client id of the dead process's socket: ComfyUI sends its frames
        (progress, SaveImageWebsocket images) only to a socket of that id, so it is followed
        over a socket under that id while one can be had, shared with the machine's other
        prompts re-attached under it (``ComfyUIClient.open_prompt_events``: one connection
        per id, checked for P3's silence);
        polling ``/history`` decides its outcome all the same."""
        lease = self._lease
        old_id = self.job.client_id
        if (
            use_ws
            and self._reattach
            and old_id
            and lease is not None
            and hasattr(lease.client, "open_prompt_events")
            and (lease.events is None or lease.events.client_id != old_id)
        ):
            # Shared with the other prompts re-attached on this machine under that id.
            async with lease.client.open_prompt_events(old_id) as own:
                await self._follow_on(token, prompt_id, use_ws, own)
            return
        await self._follow_on(token, prompt_id, use_ws, None)

    async def _follow_on(self, token: int, prompt_id: str | None, use_ws: bool, own: Any) -> None:
        """Report the prompt's updates until its outcome. A transient error (a 429, a dropped
        connection) follows the *same* prompt again after a pause, by polling: submitting it
        again would run the work twice. The attempt's deadline bounds the whole. ``own``:
        the socket to follow it over (else the machine's), while ``use_ws``."""
        assert prompt_id is not None
        poll = min(1.0, self.ctx.config.pool.poll_interval)
        pause = FOLLOW_RETRY_DELAY
        ws_nodes = self._ws_nodes()
        frames: dict[str, int] = {}  # SaveImageWebsocket images saved so far, by node
        sent: dict[str, int] = {}  # the images each one announced (its progress bar's max)
        running: str | None = None  # the node a frame without metadata comes from
        # By exact type (the follow updates are flat attrs classes): one set lookup per
        # update, not an isinstance chain (issue 16).
        streamed = frozenset(
            (cu.PromptStarted, cu.NodesCached, cu.NodeStarted, cu.NodeProgress, cu.NodeExecuted)
        )
        batch: _Streamed | None = None  # the last report, while it can take more updates

        def absorb(update: Any) -> bool:
            """A streamed update (started, cached, node started / progress / executed), taken
            in the socket's task while this child waits, as the loop below would take it:
            appended to the open batch, or reported in a new one straight to the actor
            (False: the mailbox is full or closed; the child takes it). In order: ``follow``
            offers an update only while this child has reported every one it was given and
            waits for the next."""
            nonlocal running, batch
            if type(update) not in streamed:
                return False
            if batch is None or batch.taken:
                fresh = _Streamed([update])
                try:  # no wake-up of this child per frame (issue 16)
                    self.ref.tell_nowait(_Progress(token, fresh))
                except (MailboxFullError, ActorStoppedError):
                    return False
                batch = fresh
            else:
                batch.updates.append(update)
            if type(update) is cu.NodeStarted:
                running = update.node
            elif type(update) is cu.NodeProgress and update.node in ws_nodes:
                sent[update.node] = max(sent.get(update.node, 0), int(update.max))
            return True

        while True:
            lease = self._lease
            events = lease.events if (use_ws and lease is not None) else None
            if use_ws and own is not None:
                events = own
            succeeded: cu.PromptSucceeded | None = None
            try:
                async with contextlib.aclosing(
                    self._client().follow(
                        prompt_id, events=events, poll_interval=poll, absorb=absorb
                    )
                ) as updates:
                    async for update in updates:
                        if type(update) in streamed:
                            if type(update) is cu.NodeStarted:
                                running = update.node
                            elif type(update) is cu.NodeProgress and update.node in ws_nodes:
                                sent[update.node] = max(sent.get(update.node, 0), int(update.max))
                            if batch is not None and not batch.taken:
                                batch.updates.append(update)
                            else:
                                batch = _Streamed([update])
                                await self._report(_Progress(token, batch))
                            continue
                        if type(update) is cu.PreviewImage:
                            node = update.node or running
                            if self.side is not None:
                                self.side.preview(self.job_id, node, update.image_type, update.data)
                            if node in ws_nodes and node is not None:
                                index = frames.get(node, 0)
                                frames[node] = index + 1
                                batch = None  # it reports: what follows goes after it
                                await self._save_ws_image(token, node, index, update)
                            continue
                        batch = None
                        if isinstance(update, cu.PromptSucceeded):
                            have, announced = self._ws_saved(frames), self._ws_sent(sent)
                            lost = ws_images_lost(ws_nodes, have, announced)
                            if lost is not None:
                                failure = AttemptFailure("retryable", lost, "WebSocketImagesLost")
                                await self._report(_Failed(token, failure, suspect=False))
                                return
                        await self._report(_Progress(token, update))
                        if isinstance(update, cu.PromptSucceeded):
                            succeeded = update
                            break  # the follow is closed (its outcome known) first
                        if isinstance(update, cu.PromptFailed | cu.PromptInterrupted):
                            return
            except cerr.PromptLostError as exc:
                await self._report(
                    _Failed(token, AttemptFailure("retryable", f"prompt lost: {exc}"))
                )
                return
            except cerr.ClientError as exc:
                log.info(
                    "job %s: following prompt %s failed (%s); following it again in %g s",
                    self.job_id,
                    prompt_id[:8],
                    exc,
                    pause,
                )
                await trio.sleep(pause)
                pause = min(FOLLOW_RETRY_MAX, pause * 2)
                # The error is HTTP's: a prompt whose SaveImageWebsocket images come only
                # over its socket stays on it (its frames meanwhile wait, buffered by
                # prompt id, for the next subscription); the others poll.
                use_ws = use_ws and bool(ws_nodes)
                continue
            if succeeded is not None:
                # This child goes on downloading the outputs (one task, not two: issue 16);
                # the actor wrote ExecutionSucceeded from the report above first.
                await self._become("follow", "download")
                await self._download(token, list(succeeded.outputs))
                return
            await self._report(
                _Failed(token, AttemptFailure("retryable", "progress ended without an outcome"))
            )
            return

    async def _save_ws_image(self, token: int, node_id: str, index: int, image: Any) -> None:
        """A SaveImageWebsocket image (a binary WebSocket frame, never in ``/history``) is an
        output like any: saved as OUT/<job>/websocket/<node>_<index>.<ext>."""
        kind = str(image.image_type or "").lower()
        ext = ".jpg" if "jpeg" in kind or "jpg" in kind else ".webp" if "webp" in kind else ".png"
        filename = f"{node_id}_{index:05d}{ext}"
        digest = hashlib.sha256(image.data).hexdigest()
        try:
            path = files.output_path(self.ctx.out_dir / self.job_id, WS_SUBFOLDER, filename)
            if any(
                o.path == str(path) and o.sha256 == digest for o in self.job.outputs
            ) and files.intact(path, digest):
                return  # an earlier attempt saved this very image (a re-run sends them all)
            await files.commit_atomic(self.ctx.committer(), path, image.data)
        except (OSError, cerr.UnsafeOutputNameError) as exc:
            failure = self._save_failure(exc, f"node {node_id}: cannot save {filename}: {exc}")
            await self._report(_Failed(token, failure, suspect=False))
            return
        await self._report(
            _Saved(token, node_id, filename, str(path), len(image.data), digest, "image")
        )

    async def _download(self, token: int, outputs: list[Any]) -> None:
        """Stream every output not already saved intact to OUT/<job>/<subfolder>/<filename>
        (capped, stall-bounded, verified, durable: ``ComfyUIClient.download_to``)."""
        out = self.ctx.out_dir / self.job_id
        saved = {o.path: o for o in self.job.outputs}
        last: _Saved | None = None
        for output in outputs:
            node_id = str(output.node_id)
            filename = str(output.filename)
            try:  # the subfolder is kept under OUT/<job>/; a hostile name fails the job once
                path = files.output_path(out, str(output.subfolder), filename)
            except cerr.UnsafeOutputNameError as exc:
                failure = AttemptFailure("fatal", f"node {node_id}: {exc}", "UnsafeOutputName")
                if last is not None:
                    await self._report(last)
                await self._report(_Failed(token, failure, suspect=False))
                return
            prior = saved.get(str(path))
            if prior is not None and files.intact(Path(prior.path), prior.sha256):
                continue
            if last is not None:  # reported before the next download starts
                await self._report(last)
                last = None
            try:
                size, digest = await self._client().download_to(
                    output,
                    path,
                    max_bytes=self.ctx.config.downloads.max_bytes,
                    stall_timeout=self.ctx.config.downloads.stall_seconds,
                    disk=self.ctx.committer(),
                )
            except cerr.LocalSaveError as exc:
                # This machine's disk, not the GPU's: running the prompt again (and paying for
                # it) would end the same way. The job fails, saying what to fix.
                reason = f"{exc}: free space in (or fix) the output folder and run the job again"
                failure = self._save_failure(exc, reason, "LocalSaveFailed")
                await self._report(_Failed(token, failure, suspect=False))
                return
            except cerr.ClientError as exc:
                if isinstance(exc, cerr.DownloadError) and exc.status in REFUSED_NAME_STATUSES:
                    # ComfyUI's /view refuses the name itself (a file name holding "..", a
                    # subfolder outside its output folder): every attempt would run the whole
                    # paid graph to the same answer (QA7: three attempts, three runs).
                    reason = f"download of {filename} refused: {exc}; the file's name is not one"
                    reason += " ComfyUI gives out: name its save node's outputs plainly"
                    failure = AttemptFailure("fatal", reason, "DownloadRefused")
                    await self._report(_Failed(token, failure, suspect=False))
                    return
                await self._report(
                    _Failed(
                        token, AttemptFailure("retryable", f"download of {filename} failed: {exc}")
                    )
                )
                return
            last = _Saved(token, node_id, filename, str(path), size, digest, _kind_of(filename))
        # The last file saved comes with the end (its OutputSaved and JobSucceeded then go
        # in one append); those before it were reported as each was saved.
        await self._report(_Downloaded(token, last))

    def _save_failure(
        self, exc: BaseException, reason: str, error_type: str | None = None
    ) -> AttemptFailure:
        """The failure of a job whose output could not be saved here: when the output
        folder's disk refused it (:data:`FOLDER_REFUSALS`, not a problem of this one file),
        ``OutputFolderRefused``, said as the server operator's problem, and the job service
        is told (``JobSide.output_refused``); else ``reason`` (and ``error_type``)."""
        code = _folder_refusal(exc)
        if code is None:
            if error_type is None:
                return AttemptFailure("fatal", reason)
            return AttemptFailure("fatal", reason, error_type)
        if self.side is not None:
            self.side.output_refused(code)
        cause = os.strerror(code)
        return AttemptFailure(
            "fatal",
            f"the server's output folder refuses writes ({cause}): the outputs of this job"
            " could not be saved; the server's operator must free space on its disk (or make"
            " it writable), then submit the job again",
            "OutputFolderRefused",
        )


FOLDER_REFUSALS: Final = frozenset(
    {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS}
)
"""The errors of a save that the output folder's disk refuses whatever the file (full, over
quota, read-only), as opposed to one file's problem (a bad name, a file in the way)."""


def _folder_refusal(exc: BaseException) -> int | None:
    """The errno of :data:`FOLDER_REFUSALS` behind ``exc`` (itself or a cause), or None."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in FOLDER_REFUSALS:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    return None


REFUSED_NAME_STATUSES: Final = frozenset({400, 403})
"""What ComfyUI's ``/view`` answers for a name it will never give out (400: a file name
holding ``..``, an empty one; 403: a subfolder outside its output folder)."""


def _streamed_events(updates: Iterable[Any], jid: str, pid: str, now: float) -> list[Any]:
    """The events of streamed follow updates (a ``_Streamed`` batch), one each, in order."""
    events: list[Any] = []
    for u in updates:
        match u:
            case cu.NodeProgress(node=node, value=value, max=mx):
                events.append(
                    ev.NodeProgress(
                        job_id=jid, prompt_id=pid, node_id=node, value=value, max=mx, at=now
                    )
                )
            case cu.NodeStarted(node=node):
                events.append(ev.NodeStarted(job_id=jid, prompt_id=pid, node_id=node, at=now))
            case cu.NodeExecuted(node=node):
                events.append(ev.NodeExecuted(job_id=jid, prompt_id=pid, node_id=node, at=now))
            case cu.PromptStarted():
                events.append(ev.ExecutionStarted(job_id=jid, prompt_id=pid, at=now))
            case cu.NodesCached(nodes=nodes):
                events.append(ev.NodeCached(job_id=jid, prompt_id=pid, nodes=tuple(nodes), at=now))
            case _:
                raise TypeError(f"not a streamed follow update: {type(u).__name__}")
    return events


def _ws_save_nodes(graph: dict[str, Any]) -> frozenset[str]:
    return frozenset(
        str(node_id)
        for node_id, node in graph.items()
        if isinstance(node, dict) and node.get("class_type") == WS_SAVE_CLASS
    )


def ws_images_lost(
    ws_nodes: AbstractSet[str], saved: dict[str, int], sent: dict[str, int]
) -> str | None:
    """Why a prompt that succeeded is short of SaveImageWebsocket images (None: it is not).

    Each such node sends its images only as binary frames to the socket of the prompt's
    ``client_id``, while it runs; ComfyUI keeps no copy (no ``/history`` entry, no file), so
    frames sent while the socket was down are gone. The node announces how many it sends
    (its progress bar's max); one that ran (it always runs: its ``IS_CHANGED`` is the time)
    sends at least one. The same prompt again sends them again: the node re-runs, and the
    nodes before it are answered from ComfyUI's cache (same inputs, same seed), so the
    images are the same ones, at the cost of the save alone."""
    for node in sorted(ws_nodes, key=node_sort_key):
        got = saved.get(node, 0)
        announced = sent.get(node)
        if (announced is not None and got >= announced) or (announced is None and got):
            continue
        what = f"{announced - got} of {announced} images" if announced is not None else "its images"
        return (
            f"node {node} ({WS_SAVE_CLASS}): {what} sent while the WebSocket was down are lost:"
            f" ComfyUI keeps no copy of {WS_SAVE_CLASS} output; rerun (that node always runs"
            " again; on the same machine the nodes before it come from ComfyUI's cache)"
        )
    return None


def _node_problem(error: Any) -> str:
    """One ComfyUI node error as ``node 9 (SaveImage) images: message: details``."""
    where = f"node {error.node_id} ({error.class_type})"
    if error.input_name:
        where += f" {error.input_name}"
    text = f"{where}: {error.message}"
    details = str(error.details or "").strip()
    if details and details not in text:
        text += f": {details}"
    return _one_line(text, 200)


def _kind_of(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith((".glb", ".gltf", ".obj", ".ply")):
        return "mesh"
    mime, _ = mimetypes.guess_type(lower)
    if mime and mime.startswith("image/"):
        return "image"
    if mime and mime.startswith("video/"):
        return "video"
    return "file"
