"""The machine pool: what the MachineActor does (launch, wait-ready, health, lease, renew,
idle shutdown, stop, lost machines, adoption after a crash).

One :class:`MachinePool` lives for the whole run (in the :class:`Context`'s lifetime); the
MachineActor forwards its commands here, so a restarted actor keeps the waiting requests.

How a lease is served (``_assign``, run after every change):

1. waiting requests in priority order take a Ready, healthy machine of their workflow version
   with a free slot (reuse first);
2. the requests left over are *unmet demand*: launch ``launches_needed(...)`` machines (each
   approved by the CostActor against the budget), at most ``max_machines`` alive;
3. a request that can never be served (budget refused and nothing alive, shutdown) fails.

The cloud is observed with ONE ``GET /servers`` per poll for all machines (the account has
~1 request/s): Starting -> Ready (billing starts at the server's ``service_ready_at``), health
check (``/system_stats``) before the first lease, a 404 (absent from the list) or a
self-stopped machine (lease ran out) -> lost, its jobs requeued. Launch intents are logged
before the POST and stops before the DELETE, so a crash leaves a trace recovery reconciles.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from conjure_actors.actors.context import Context
from conjure_actors.actors.messages import Lease, LeaseFailedError, Reply
from conjure_actors.actors.policy import (
    MachineView,
    launches_needed,
    pick_machine,
    priority_order,
    renewed_duration,
    should_renew,
)
from conjure_actors.clients.errors import (
    AuthError,
    ClientError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerNotFoundError,
    TransportError,
)
from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.errors import DomainError
from conjure_actors.domain.prices import billed_seconds, cost_micros
from conjure_actors.domain.state import M_READY, M_STARTING, M_STOPPING, MACHINE_GONE

log = logging.getLogger("conjure_actors.actors.pool")

HEALTH_ATTEMPTS = 5
MAX_LAUNCH_FAILURES = 5
STOP_DEADLINE = 30.0


def _gone_at(m: Any, now: float, *, stop_sent: bool = False) -> float:
    """When billing most likely ended for a machine found gone at ``now`` (nobody says: a
    gone machine is a 404). A lease that ran out ended at its end. With ``stop_sent`` (a
    resume finds gone a machine whose stop the log shows decided: the ``DELETE`` was in
    flight at the crash) it ended at the logged stop, give or take the ``DELETE``'s own
    latency (if it instead vanished by itself after the stop was decided and before the
    ``DELETE`` arrived, that undercounts: nobody can tell the two apart). Otherwise it
    was billing when last seen, and ``now`` bounds it."""
    until = now
    if m.estimated_stopping_at is not None:
        until = min(until, m.estimated_stopping_at)
    if stop_sent and m.status == M_STOPPING and m.stop_requested_at is not None:
        until = min(until, m.stop_requested_at)
    return until


class _Reported:
    """A ``task_status`` that remembers whether the task reported itself started."""

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status = status
        self.reported = False

    def started(self, value: None = None) -> None:
        self.reported = True
        self._status.started()


def _passing(exc: ClientError) -> bool:
    """A failure that waiting cures: rate limited, unreachable, or the service's own 5xx."""
    if isinstance(exc, AuthError):
        return False
    if isinstance(exc, (RateLimitedError, TransportError, OutcomeUnknownError)):
        return True
    return exc.status is not None and exc.status >= 500


async def list_servers_patiently(
    rc: Any, patience: float, *, what: str, outage_patience: float | None = None
) -> list[Any]:
    """``GET /servers``, waiting out rate limits and outages for up to ``patience`` seconds
    (the client already retried each call a few times); a wrong token fails at once.
    ``outage_patience``, if given, is shorter for an unreachable or failing service (a rate
    limit says the account is there and busy; an outage says nothing).

    Start-up and recovery cannot go on without this listing: giving up would leave the
    machines a crashed run may have launched billing until their lease runs out."""
    start = trio.current_time()
    delay = 2.0
    while True:
        try:
            return list(await rc.list_servers())
        except ClientError as exc:
            limit = patience
            if outage_patience is not None and not isinstance(exc, RateLimitedError):
                limit = min(patience, outage_patience)
            if not _passing(exc) or trio.current_time() + delay > start + limit:
                raise
            log.warning("%s: listing servers failed (%s); trying again in %g s", what, exc, delay)
        await trio.sleep(delay)
        delay = min(60.0, delay * 2)


@attrs.define(eq=False)
class _Waiter:
    job_id: str
    workflow_version: str | None
    priority: int
    seq: int
    reply: Reply[Lease]
    only_server: str | None = None


@attrs.define(eq=False)
class _Live:
    """Live (not logged) facts about one machine: its client, its lost signal."""

    client: Any = None
    lost: trio.Event = attrs.Factory(trio.Event)
    launched_at: float = 0.0  # trio time of the launch (ready deadline)
    seen: bool = False  # listed at least once: a 404 from now on means it is gone
    health_task: bool = False
    events: Any = None  # ComfyUIEvents: one WebSocket per machine, shared by its jobs
    events_scope: trio.CancelScope | None = None


ApproveLaunch = Callable[[str, str], Awaitable[bool]]
ApproveRenewal = Callable[[str, float], Awaitable[bool]]


class MachinePool:
    """The pool's logic and live data; driven by the MachineActor."""

    def __init__(
        self,
        ctx: Context,
        *,
        approve_launch: ApproveLaunch,
        approve_renewal: ApproveRenewal,
        make_client: Callable[[str, Any], Any],
    ) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.pool
        self.server_type = ctx.config.runcomfy.server_type
        self.default_version = ctx.config.runcomfy.workflow_version or None
        self._approve_launch = approve_launch
        self._approve_renewal = approve_renewal
        self._make_client = make_client  # (server_id, SecretURL|str) -> ComfyUIClient
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._live: dict[str, _Live] = {}
        self._launching: set[str] = set()  # request keys with a POST in flight
        self._resolving = trio.Lock()  # one resolution of open launch intents at a time
        self._stopping: set[str] = set()
        self.launching_allowed = True
        self.refuse_reason = ""
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._poll_waiters: list[Reply[None]] = []
        self._lock = trio.Lock()
        self._settled = trio.Event()  # pulsed when a launch or a stop ends
        self._launch_failures = 0
        self._failing_since = 0.0
        self._next_launch_at = float("-inf")
        self.polls = 0

    # ------------------------------------------------------------------ lifecycle

    def bind(self, nursery: trio.Nursery) -> None:
        """Background work (launches, stops, health checks) runs in ``nursery``."""
        self._nursery = nursery

    def attach(self, server_id: str, client: Any) -> None:
        """Register the live client of a machine we do not launch (comfyui/dev)."""
        self._live[server_id] = _Live(client=client)

    def client_of(self, server_id: str) -> Any:
        live = self._live.get(server_id)
        return live.client if live is not None else None

    def wake(self) -> None:
        self._wake.set()

    def poll_soon(self, reply: Reply[None] | None = None) -> None:
        """Poll now; answer ``reply`` once a poll that starts after this call has ended."""
        if reply is not None:
            self._poll_waiters.append(reply)
        self.wake()

    def _pulse(self) -> None:
        self._settled.set()
        self._settled = trio.Event()

    async def run_poller(self) -> None:
        """Poll the cloud every ``poll_interval`` (or sooner when woken), forever."""
        while True:
            with trio.move_on_after(self.cfg.poll_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            waiters, self._poll_waiters = self._poll_waiters, []
            try:
                await self.poll_once()
            finally:
                for reply in waiters:
                    reply.set(None)
            await self.assign()

    # ------------------------------------------------------------------ commands

    async def lease(
        self,
        job_id: str,
        version: str | None,
        priority: int,
        reply: Reply[Lease],
        only_server: str | None = None,
    ) -> None:
        # A job that still holds a lease (its actor restarted) gets it back as it is.
        for m in self.ctx.state.machines.values():
            if (
                job_id in m.leases
                and m.status not in MACHINE_GONE
                and (only_server in (None, m.server_id))
            ):
                live = self._live.setdefault(m.server_id, _Live())
                reply.set(Lease(m.server_id, live.client, live.lost, live.events))
                return
        self._waiting.append(
            _Waiter(job_id, version, priority, next(self._seq), reply, only_server)
        )
        await self.assign()

    async def reconcile(self) -> None:
        """Recovery: every machine the log says may exist is listed and adopted or closed;
        launch intents without outcome are matched to unknown servers (or closed)."""
        rc = self.ctx.runcomfy
        state = self.ctx.state
        if rc is None:
            return
        doubtful = [
            m
            for m in state.machines.values()
            if m.kind == "runcomfy" and m.status not in MACHINE_GONE
        ]
        if not doubtful and not state.launch_requests:
            return
        servers = await list_servers_patiently(rc, self.cfg.cloud_patience, what="recovery")
        by_id = {s.server_id: s for s in servers}
        now = self.ctx.now()
        for m in doubtful:
            s = by_id.get(m.server_id)
            if s is None or s.status in ("Deleting", "Stopping"):
                await self._lose(
                    m.server_id, "gone while we were down", _gone_at(m, now, stop_sent=True)
                )
            elif m.status == M_STOPPING:
                await self.adopt(
                    s,
                    request_key=None,
                    server_type=m.server_type or self.server_type,
                    workflow_version=m.workflow_version,
                )
                self._spawn_stop(m.server_id, m.stop_reason or "resume")
            else:
                await self.adopt(
                    s,
                    request_key=None,
                    server_type=m.server_type or self.server_type,
                    workflow_version=m.workflow_version,
                )
        await self._adopt_unknown(servers, set(self.ctx.state.launch_requests))

    async def release(self, server_id: str, job_id: str, *, broken: bool = False) -> None:
        state = self.ctx.state
        machine = state.machines.get(server_id)
        if machine is not None and job_id in machine.leases:
            await self.ctx.emit(decide.release_machine(state, server_id, job_id, at=self.ctx.now()))
        if broken and machine is not None and machine.kind == "runcomfy":
            self._spawn_stop(server_id, "unhealthy")
        await self.assign()

    def cancel_lease(self, job_id: str) -> None:
        for w in [w for w in self._waiting if w.job_id == job_id]:
            self._waiting.remove(w)
            w.reply.fail(
                LeaseFailedError(f"job {job_id} cancelled", retryable=False, reason="cancelled")
            )

    def stop_launching(self, reason: str) -> None:
        self.launching_allowed = False
        self.refuse_reason = reason

    async def stop_all(self, reason: str) -> list[str]:
        """Stop every machine we pay for (shielded, each with a deadline); fail waiters."""
        self.stop_launching(reason)
        for w in self._waiting:
            w.reply.fail(LeaseFailedError(f"no machine: {reason}", retryable=False, reason=reason))
        self._waiting.clear()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(STOP_DEADLINE):
                async with trio.open_nursery() as nursery:
                    for sid in self.still_running():
                        nursery.start_soon(self.stop_machine, sid, reason)
                # Launches still in flight, or intents not resolved yet (an unknown outcome
                # while other launches were in flight): their servers appear at a listing.
                if (self._launching or self.ctx.state.launch_requests) and (
                    self.ctx.runcomfy is not None
                ):
                    while self._launching:
                        await self._settled.wait()
                    await self.poll_once()
                    async with trio.open_nursery() as nursery:
                        for sid in self.still_running():
                            nursery.start_soon(self.stop_machine, sid, reason)
        return self.still_running()

    def still_running(self) -> list[str]:
        """The RunComfy machines we pay for that are not stopped or lost."""
        return [
            m.server_id
            for m in self.ctx.state.machines.values()
            if m.kind == "runcomfy" and m.status not in MACHINE_GONE
        ]

    # ------------------------------------------------------------------ assignment

    def _views(self) -> list[MachineView]:
        out = []
        for m in self.ctx.state.machines.values():
            if m.status in MACHINE_GONE:
                continue
            out.append(
                MachineView(
                    server_id=m.server_id,
                    ready=m.status == M_READY,
                    healthy=m.healthy,
                    workflow_version=None if m.kind != "runcomfy" else m.workflow_version,
                    leases=len(m.leases),
                    stopping=m.status == M_STOPPING or m.server_id in self._stopping,
                )
            )
        return out

    def _limit(self, server_id: str) -> int:
        m = self.ctx.state.machines.get(server_id)
        return m.max_jobs if m is not None else self.cfg.jobs_per_machine

    async def assign(self) -> None:
        """Serve waiting requests from Ready machines; launch for the unmet demand."""
        async with self._lock:
            await self._assign_locked()
            await self._launch_for_demand()

    async def _assign_locked(self) -> None:
        state = self.ctx.state
        # Machines with a free slot now; once none is left, only waiters bound to one
        # machine (recovery) still need a look, so a long queue costs O(free machines).
        views = [
            v
            for v in self._views()
            if v.ready and v.healthy and not v.stopping and v.leases < self._limit(v.server_id)
        ]
        if not views and not any(w.only_server is not None for w in self._waiting):
            return  # nothing free: the waiters keep waiting (launches are decided below)
        order = priority_order([(w.priority, w.seq) for w in self._waiting])
        served: list[_Waiter] = []
        for i in order:
            w = self._waiting[i]
            if w.reply.done:
                served.append(w)
                continue
            if not views and w.only_server is None:
                continue
            sid = pick_machine(
                views, w.workflow_version, self.cfg.jobs_per_machine, only_server=w.only_server
            )
            if sid is not None and len(state.machines[sid].leases) < self._limit(sid):
                job = state.jobs.get(w.job_id)
                if job is None or job.status not in ("pending", "queued", "retrying", "running"):
                    w.reply.fail(
                        LeaseFailedError(
                            f"job {w.job_id} is not active", retryable=False, reason="inactive"
                        )
                    )
                    served.append(w)
                    continue
                await self.ctx.emit(decide.lease_machine(state, sid, w.job_id, at=self.ctx.now()))
                live = self._live.setdefault(sid, _Live())
                w.reply.set(Lease(sid, live.client, live.lost, live.events))
                served.append(w)
                views = [
                    attrs.evolve(v, leases=v.leases + 1) if v.server_id == sid else v for v in views
                ]
                views = [v for v in views if v.leases < self._limit(v.server_id)]
            elif w.only_server is not None:
                m = state.machines.get(w.only_server)
                if m is None or m.status in MACHINE_GONE:
                    w.reply.fail(
                        LeaseFailedError(
                            f"machine {w.only_server} is gone", retryable=True, reason="gone"
                        )
                    )
                    served.append(w)
        if served:
            done = set(map(id, served))
            self._waiting = [w for w in self._waiting if id(w) not in done]

    async def _launch_for_demand(self) -> None:
        if self.ctx.runcomfy is None:
            return
        demand = [w for w in self._waiting if w.only_server is None and not w.reply.done]
        if not demand:
            return
        state = self.ctx.state
        alive = [
            m
            for m in state.machines.values()
            if m.kind == "runcomfy"
            and m.status not in MACHINE_GONE
            and m.server_id not in self._stopping
        ]
        # Machines that will take jobs soon: still starting, or Ready with the health check
        # in progress.
        starting = sum(
            1 for m in alive if m.status == M_STARTING or (m.status == M_READY and not m.healthy)
        ) + len(self._launching)
        n = launches_needed(
            waiting=len(demand),
            starting=starting,
            alive=len(alive) + len(self._launching),
            max_machines=self.cfg.max_machines,
            jobs_per_machine=self.cfg.jobs_per_machine,
        )
        if n <= 0:
            return
        if not self.launching_allowed:
            self._fail_unservable(self.refuse_reason or "launching stopped")
            return
        if trio.current_time() < self._next_launch_at:
            return  # backing off after a failed launch; the poller comes back
        order = priority_order([(w.priority, w.seq) for w in demand])
        for k in range(n):
            w = demand[order[k % len(order)]]
            version = w.workflow_version or self.default_version or ""
            key = self.ctx.ids().hex
            try:
                if not await self._approve_launch(w.job_id, self.server_type):
                    self._fail_unservable("budget")
                    return
                intent = decide.request_launch(
                    state,
                    request_key=key,
                    server_type=self.server_type,
                    workflow_version=version,
                    estimated_duration=int(self.cfg.lease_seconds),
                    table=self.ctx.table,
                    max_jobs=self.cfg.jobs_per_machine,
                    at=self.ctx.now(),
                )
            except DomainError as exc:  # e.g. a server type the price table cannot bill
                self.stop_launching(f"cannot launch: {exc}")
                self._fail_unservable(self.refuse_reason)
                return
            self._launching.add(key)
            await self.ctx.emit(intent)
            self._spawn(self._launch, key, version)

    def _fail_unservable(self, reason: str) -> None:
        """Fail waiting requests when nothing alive can ever serve them."""
        state = self.ctx.state
        alive = [
            m
            for m in state.machines.values()
            if m.status not in MACHINE_GONE and m.server_id not in self._stopping
        ]
        if alive or self._launching:
            return  # they will be served by a machine that exists
        for w in list(self._waiting):
            if w.only_server is None:
                self._waiting.remove(w)
                w.reply.fail(
                    LeaseFailedError(
                        f"no machine for job {w.job_id}: {reason}", retryable=False, reason=reason
                    )
                )

    # ------------------------------------------------------------------ side effects

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("MachinePool is not bound to a nursery")
        self._nursery.start_soon(fn, *args)

    async def _launch(self, key: str, version: str) -> None:
        rc = self.ctx.require_runcomfy()
        try:
            try:
                server = await rc.launch(version, self.server_type, int(self.cfg.lease_seconds))
            except ClientError as exc:
                # An unknown outcome stays an open intent: the next listing adopts what it
                # started. A clear failure closes it.
                if isinstance(exc, OutcomeUnknownError):
                    log.warning("launch %s: outcome unknown; reconciling by listing", key)
                    return
                await self.ctx.emit(
                    ev.MachineLaunchFailed(request_key=key, reason=str(exc), at=self.ctx.now())
                )
                self._launching.discard(key)
                now = trio.current_time()
                self._launch_failures += 1
                if self._launch_failures == 1:
                    self._failing_since = now
                # Back off before the next launch. Give up at once when the cloud refuses
                # the launch itself (a wrong token, an unknown workflow version or server
                # type: a 4xx, nothing will ever launch); after a few failures in a row of
                # another kind; and when a rate limit or an outage has outlasted
                # ``cloud_patience``. Only then do the waiting jobs fail.
                self._next_launch_at = now + min(60.0, 2.0**self._launch_failures)
                refused = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
                patience_out = now - self._failing_since >= self.cfg.cloud_patience
                if (
                    isinstance(exc, AuthError)
                    or refused
                    or (
                        self._launch_failures >= MAX_LAUNCH_FAILURES
                        and (not _passing(exc) or patience_out)
                    )
                ):
                    self.stop_launching(f"launch failed: {exc}")
                    self._fail_unservable(f"launch failed: {exc}")
                return
            self._launch_failures = 0
            await self.ctx.emit(
                decide.machine_launched(
                    self.ctx.state,
                    request_key=key,
                    server_id=server.server_id,
                    at=self.ctx.now(),
                )
            )
            self._live[server.server_id] = _Live(launched_at=trio.current_time())
        finally:
            self._launching.discard(key)
            self._pulse()
            self.wake()

    def _spawn_stop(self, server_id: str, reason: str) -> None:
        if server_id not in self._stopping:
            self._spawn(self.stop_machine, server_id, reason)

    async def stop_machine(self, server_id: str, reason: str) -> None:
        """Stop one RunComfy machine: intent, DELETE, final bill (shielded)."""
        state = self.ctx.state
        m = state.machines.get(server_id)
        if m is None or m.status in MACHINE_GONE or m.kind != "runcomfy":
            return
        if server_id in self._stopping:
            while server_id in self._stopping:
                await self._settled.wait()
            return
        self._stopping.add(server_id)
        try:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(STOP_DEADLINE):
                    if m.status != M_STOPPING:
                        await self.ctx.emit(
                            decide.stop_machine(state, server_id, reason=reason, at=self.ctx.now())
                        )
                    self._mark_lost(server_id)
                    server = await self.ctx.require_runcomfy().stop(server_id, missing_ok=True)
                    now = self.ctx.now()
                    m = self.ctx.state.machines[server_id]
                    # 404: it was gone before the DELETE arrived (vanished, or its lease ran
                    # out), at a moment nobody tells: bill up to now, or the lease's end.
                    stopped_at = now if server is not None else _gone_at(m, now)
                    await self._emit_stopped(server_id, stopped_at)
        except ClientError as exc:
            log.warning("stop of server %s failed: %s", server_id, exc)
        finally:
            self._stopping.discard(server_id)
            self._pulse()

    async def _emit_stopped(self, server_id: str, stopped_at: float) -> None:
        state = self.ctx.state
        m = state.machines.get(server_id)
        if m is None or m.status == "stopped":
            return
        try:
            event = decide.machine_stopped(
                state, server_id, stopped_at=stopped_at, at=self.ctx.now()
            )
        except DomainError:
            return
        await self.ctx.emit(event)

    def _mark_lost(self, server_id: str) -> None:
        live = self._live.get(server_id)
        if live is not None:
            live.lost.set()
            if live.events_scope is not None:
                live.events_scope.cancel()

    async def _lose(self, server_id: str, reason: str, stopped_at: float) -> None:
        """A machine vanished or stopped by itself: lost, final bill, its jobs requeued
        (their WorkflowActors see ``Lease.lost`` and requeue themselves)."""
        m = self.ctx.state.machines.get(server_id)
        if m is None or m.status in MACHINE_GONE:
            return
        await self.ctx.emit(ev.MachineLost(server_id=server_id, reason=reason, at=self.ctx.now()))
        self._mark_lost(server_id)
        seconds = billed_seconds(m.service_ready_at, stopped_at)
        await self.ctx.emit(
            ev.MachineStopped(
                server_id=server_id,
                stopped_at=stopped_at,
                billed_seconds=seconds,
                cost_micros=cost_micros(m.rate_micros_per_hour, seconds),
                at=self.ctx.now(),
            )
        )

    # ------------------------------------------------------------------ observation

    async def poll_once(self) -> None:
        """ONE ``GET /servers`` for every machine; update each from what it says."""
        async with self._lock:
            await self._poll_locked()

    async def _poll_locked(self) -> None:
        rc = self.ctx.runcomfy
        if rc is None:
            return
        state = self.ctx.state
        managed = [
            m
            for m in state.machines.values()
            if m.kind == "runcomfy" and m.status not in MACHINE_GONE
        ]
        open_intents = set(state.launch_requests) - self._launching
        if not managed and not open_intents:
            return
        try:
            servers = await rc.list_servers()
        except ClientError as exc:
            log.warning("listing servers failed: %s", exc)
            return
        self.polls += 1
        by_id = {s.server_id: s for s in servers}
        now = self.ctx.now()
        for m in managed:
            if m.server_id in self._stopping:
                continue
            s = by_id.get(m.server_id)
            live = self._live.setdefault(m.server_id, _Live(launched_at=trio.current_time()))
            if s is None:
                if (
                    m.status == M_STARTING
                    and not live.seen
                    and trio.current_time() - live.launched_at < 60.0
                ):
                    continue  # a 404 right after a launch: not visible yet
                await self._lose(m.server_id, "vanished (404)", _gone_at(m, now))
                continue
            live.seen = True
            if s.status != m.observed_status and not s.is_ready:
                await self.ctx.emit(
                    ev.MachineStatusObserved(server_id=m.server_id, status=s.status, at=now)
                )
            if m.status == M_STARTING:
                if s.is_ready and s.service_ready_at is not None:
                    live.client = self._make_client(m.server_id, s.url)
                    await self.ctx.emit(
                        decide.machine_ready(
                            self.ctx.state,
                            m.server_id,
                            service_ready_at=s.service_ready_at,
                            estimated_stopping_at=s.estimated_stopping_at,
                            table=self.ctx.table,
                            at=now,
                        )
                    )
                    self._start_health(m.server_id)
                elif s.status == "Error" or (
                    trio.current_time() - live.launched_at >= self.cfg.ready_timeout
                ):
                    self._spawn_stop(m.server_id, "not_ready")
            elif m.status == M_STOPPING:
                if s.status not in ("Deleting", "Stopping"):
                    # Our DELETE failed (or never went out): a paid machine must not be left
                    # running until its lease ends. Stop it again.
                    self._spawn_stop(m.server_id, m.stop_reason or "retry")
            elif m.status == M_READY:
                if not s.is_ready:
                    await self._lose(
                        m.server_id, f"stopped by itself ({s.status})", _gone_at(m, now)
                    )
                    continue
                if live.client is None:
                    live.client = self._make_client(m.server_id, s.url)
                if not m.healthy:
                    self._start_health(m.server_id)
                if s.estimated_stopping_at is not None and (
                    m.estimated_stopping_at is None
                    or abs(s.estimated_stopping_at - m.estimated_stopping_at) > 1e-6
                ):
                    await self.ctx.emit(
                        ev.LeaseRenewed(
                            server_id=m.server_id,
                            estimated_stopping_at=s.estimated_stopping_at,
                            at=now,
                        )
                    )
        await self._adopt_unknown(servers, open_intents)
        await self._renew_and_reap(now)

    async def _adopt_unknown(self, servers: list[Any], open_intents: set[str]) -> None:
        """Servers a logged launch intent may have started (crash, or unknown outcome).

        One resolution at a time (start-up's reconcile and the poller both get here), and
        none while a launch is in flight: an unknown server may then be that launch's, whose
        answer has not arrived yet. An intent resolved meanwhile (its launch answered, or an
        earlier resolution) is skipped, as is a server that became known."""
        if not open_intents or self._launching:
            return
        async with self._resolving:
            state = self.ctx.state
            unknown = [
                s
                for s in servers
                if s.server_id not in state.machines and s.status not in ("Deleting", "Stopping")
            ]
            pending = [k for k in open_intents if k in state.launch_requests]
            for key in sorted(pending, key=lambda k: state.launch_requests[k].at):
                if self._launching:
                    break  # a launch began meanwhile: the next poll resolves the rest
                if key not in state.launch_requests:
                    continue
                unknown = [s for s in unknown if s.server_id not in state.machines]
                await self._resolve_intent(key, unknown)

    async def _resolve_intent(self, key: str, unknown: list[Any]) -> None:
        """Adopt the first unknown server that fits launch intent ``key``, or close it."""
        req = self.ctx.state.launch_requests[key]
        match = next(
            (
                s
                for s in unknown
                if (s.server_type in (None, req.server_type))
                and (s.workflow_version_id in (None, req.workflow_version))
            ),
            None,
        )
        if match is None:
            await self.ctx.emit(
                ev.MachineLaunchFailed(
                    request_key=key, reason="no server found for this launch", at=self.ctx.now()
                )
            )
            return
        await self.adopt(
            match,
            request_key=key,
            server_type=req.server_type,
            workflow_version=req.workflow_version,
        )

    async def adopt(
        self, s: Any, *, request_key: str | None, server_type: str, workflow_version: str | None
    ) -> None:
        """Own a server found alive again (recovery): ``MachineAdopted``, then health."""
        ready = s.is_ready and s.service_ready_at is not None
        m = self.ctx.state.machines.get(s.server_id)
        await self.ctx.emit(
            ev.MachineAdopted(
                server_id=s.server_id,
                request_key=request_key,
                server_type=server_type,
                workflow_version=workflow_version,
                status=s.status,
                service_ready_at=s.service_ready_at if ready else None,
                estimated_stopping_at=s.estimated_stopping_at if ready else None,
                rate_micros_per_hour=self.ctx.table.rate(server_type) if ready else 0,
                price_table_version=self.ctx.table.version if ready else "",
                max_jobs=m.max_jobs if m is not None else self.cfg.jobs_per_machine,
                at=self.ctx.now(),
            )
        )
        live = self._live.setdefault(s.server_id, _Live(launched_at=trio.current_time()))
        live.lost = trio.Event()
        live.seen = True
        if ready:
            live.client = self._make_client(s.server_id, s.url)
            self._start_health(s.server_id)

    async def _renew_and_reap(self, now: float) -> None:
        state = self.ctx.state
        for m in list(state.machines.values()):
            if m.kind != "runcomfy" or m.status != M_READY or m.server_id in self._stopping:
                continue
            compatible = any(
                w.workflow_version in (None, m.workflow_version) for w in self._waiting
            )
            work = bool(m.leases) or compatible
            if (
                should_renew(
                    now=now,
                    estimated_stopping_at=m.estimated_stopping_at,
                    renew_margin=self.cfg.renew_margin,
                    work_remains=work,
                )
                and self.launching_allowed
                and await self._approve_renewal(m.server_id, self.cfg.lease_seconds)
            ):
                self._spawn(self._renew, m.server_id)
            if (
                not m.leases
                and not compatible
                and m.idle_since is not None
                and (now - m.idle_since >= self.cfg.idle_timeout)
            ):
                self._spawn_stop(m.server_id, "idle")

    async def _renew(self, server_id: str) -> None:
        m = self.ctx.state.machines.get(server_id)
        if m is None or m.service_ready_at is None or m.status != M_READY:
            return
        seconds = renewed_duration(
            now=self.ctx.now(),
            service_ready_at=m.service_ready_at,
            lease_seconds=self.cfg.lease_seconds,
        )
        try:
            server = await self.ctx.require_runcomfy().extend(server_id, seconds)
        except ServerNotFoundError:
            self.wake()
            return
        except ClientError as exc:
            log.warning("lease renewal of server %s failed: %s", server_id, exc)
            return
        m = self.ctx.state.machines.get(server_id)
        if m is None or m.status != M_READY or m.service_ready_at is None:
            return
        until = server.estimated_stopping_at or (m.service_ready_at + seconds)
        await self.ctx.emit(
            ev.LeaseRenewed(server_id=server_id, estimated_stopping_at=until, at=self.ctx.now())
        )

    async def _start_events(self, live: _Live) -> None:
        """Open the machine's shared WebSocket (followers fall back to polling without it)."""
        if self._nursery is None:
            return
        events = live.client.events()
        scope = trio.CancelScope()
        live.events, live.events_scope = events, scope

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            status = _Reported(task_status)
            with scope:
                await events.run(task_status=status)
            if not status.reported:  # lost (scope cancelled) before the first attempt
                task_status.started()

        with trio.move_on_after(30):
            await self._nursery.start(run)

    def attach_events_later(self, server_id: str) -> None:
        """For attached machines (comfyui/dev): open their WebSocket in the background."""
        live = self._live.get(server_id)
        if live is not None and live.events is None and live.client is not None:
            self._spawn(self._start_events, live)

    def _start_health(self, server_id: str) -> None:
        live = self._live.get(server_id)
        if live is None or live.health_task or live.client is None:
            return
        live.health_task = True
        self._spawn(self._health, server_id)

    async def _health(self, server_id: str) -> None:
        """``/system_stats`` before the first prompt; a machine that never answers is stopped."""
        live = self._live[server_id]
        try:
            for attempt in range(HEALTH_ATTEMPTS):
                try:
                    await live.client.system_stats()
                except ClientError as exc:
                    log.info("health check %d of server %s failed: %s", attempt + 1, server_id, exc)
                    await trio.sleep(min(30.0, 1.0 * 2**attempt))
                    continue
                if live.events is None and hasattr(live.client, "events"):
                    await self._start_events(live)
                m = self.ctx.state.machines.get(server_id)
                if m is not None and m.status not in MACHINE_GONE and not m.healthy:
                    await self.ctx.emit(ev.MachineHealthy(server_id=server_id, at=self.ctx.now()))
                await self.assign()
                return
            m = self.ctx.state.machines.get(server_id)
            if m is not None and m.kind == "runcomfy":
                self._spawn_stop(server_id, "unhealthy")
        finally:
            live.health_task = False
