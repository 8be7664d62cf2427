"""The MachineActor (and the CostActor it asks) against the in-memory RunComfy simulator
(MockClock): launch, reuse, idle shutdown, lease renewal, stuck machines, lost machines,
stops (while Starting, between polls, through a 429 storm), early interrupts, and the
ledger equal to the sim's bills to the micro-dollar."""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import eventlog
from conjure_actors.actors.context import Context
from conjure_actors.actors.cost import CostActor, Ledger
from conjure_actors.actors.messages import (
    ApproveLaunch,
    ApproveRenewal,
    CancelLease,
    Lease,
    LeaseFailedError,
    LeaseMachine,
    PollNow,
    ReleaseMachine,
    Reply,
    SetBudget,
    StopAllMachines,
    StopLaunching,
    StopMachine,
)
from conjure_actors.actors.pool import MachineActor, MachinePool, Reconcile
from conjure_actors.clients.runcomfy import RunComfyClient
from conjure_actors.clock import TrioWallClock
from conjure_actors.config import BudgetConfig, Config, PoolConfig, RunComfyConfig, Secret
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.prices import default_price_table
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.runtime import ActorRef, open_actor_system
from conjure_actors.sim.runcomfy import RunComfyFaults, RunComfySim, RunComfyTimings


class _HealthyComfy:
    """Answers the health check; the pool needs nothing else from a machine."""

    async def system_stats(self) -> dict[str, Any]:
        return {"system": {}, "devices": []}


class _SocketNeverOpens(_HealthyComfy):
    """Healthy, but its WebSocket never gets through its first attempt."""

    def events(self) -> Any:
        return self

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep_forever()


@attrs.define
class Rig:
    pool: MachinePool
    machines: ActorRef
    cost: ActorRef
    ctx: Context
    sim: RunComfySim
    log: eventlog.MemoryLog[Any]
    ledger: Ledger
    jobs: int = 0

    @property
    def state(self) -> Any:
        return self.ctx.state

    def events(self, kind: type) -> list[Any]:
        """Every logged event of type ``kind``, in order."""
        return [r.event for r in self.log.records() if isinstance(r.event, kind)]

    async def job(self) -> str:
        """A registered, queued job the pool can lease for."""
        self.jobs += 1
        job_id = f"j{self.jobs}"
        if "w" not in self.state.workflows:
            await self.ctx.emit(
                ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=self.ctx.now())
            )
        await self.ctx.emit(
            ev.JobSubmitted(
                job_id=job_id, workflow_sha256="w", workflow_version="v1", at=self.ctx.now()
            ),
            ev.JobQueued(job_id=job_id, at=self.ctx.now()),
        )
        return job_id

    async def cancel(self, job_id: str) -> None:
        """The job is cancelled (as its WorkflowActor does) and its request withdrawn."""
        await self.ctx.emit(ev.JobCancelled(job_id=job_id, reason="test", at=self.ctx.now()))
        await self.machines.tell(CancelLease(job_id))

    async def dangling_intent(self, key: str) -> None:
        """A launch intent left open (as by a crash) whose server the cloud did start."""
        self.sim._launch(
            b'{"workflow_version_id": "v1", "server_type": "medium", "estimated_duration": 600}'
        )
        await self.ctx.emit(
            ev.MachineLaunchRequested(
                request_key=key,
                server_type="medium",
                workflow_version="v1",
                estimated_duration=600,
                at=self.ctx.now(),
            )
        )

    async def ask_lease(self, job_id: str, version: str | None = "v1") -> Reply[Lease]:
        reply: Reply[Lease] = Reply()
        await self.machines.tell(LeaseMachine(job_id, version, 0, reply))
        return reply

    async def lease(self, job_id: str) -> Lease:
        reply = await self.ask_lease(job_id)
        with trio.fail_after(3600):
            return await reply.wait()

    async def release(self, server_id: str, job_id: str) -> None:
        await self.machines.tell(ReleaseMachine(server_id, job_id))

    async def poll(self) -> None:
        """Return once a listing that began after this call has been acted upon."""
        reply: Reply[None] = Reply()
        await self.machines.tell(PollNow(reply))
        with trio.fail_after(600):
            await reply.wait()

    async def stop_all(self, reason: str = "shutdown") -> list[str]:
        reply: Reply[list[str]] = Reply()
        await self.machines.tell(StopAllMachines(reason, reply))
        with trio.fail_after(7200):
            return await reply.wait()

    def ledger_matches_sim(self) -> bool:
        bills = {b.server_id: b.cost_micros for b in self.sim.billing()}
        ours = {m.server_id: m.cost_micros for m in self.state.machines.values()}
        return bills == ours


@asynccontextmanager
async def pool_rig(
    *,
    faults: RunComfyFaults | None = None,
    budget: float | None = None,
    comfy: type[_HealthyComfy] = _HealthyComfy,
    ready_delay: float = 60.0,
    warn_fraction: float = 0.8,
    server_type: str = "medium",
    **pool: Any,
) -> AsyncIterator[Rig]:
    wall = TrioWallClock()
    sim = RunComfySim(
        wall=wall.now, faults=faults, timings=RunComfyTimings(ready_delay=ready_delay)
    )
    config = Config(
        runcomfy=RunComfyConfig(
            user_id="sim-user",
            api_token=Secret("sim-token"),
            base_url="http://rc.sim.invalid",
            workflow_version="v1",
            server_type=server_type,
        ),
        pool=PoolConfig(**{"poll_interval": 5.0, **pool}),
        budget=BudgetConfig(warn_fraction=warn_fraction),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.asgi)) as http,
            eventlog.open_journal(
                log, Event, apply=apply, initial=initial_state(), clock=wall.now
            ) as journal,
        ):
            rc = RunComfyClient(
                config.runcomfy.base_url, "sim-user", "sim-token", http=http, rng=random.Random(0)
            )
            ctx = Context(
                config=config,
                journal=journal,
                wall=wall,
                table=default_price_table(),
                out_dir=Path("/nonexistent"),
                http=http,
                ws_connect=None,
                runcomfy=rc,
                rng=random.Random(0),
                inputs_dir=Path("/nonexistent"),
            )
            async with open_actor_system(journal=journal, clock=wall, rng=0) as system:
                refs: dict[str, ActorRef] = {}

                async def exceeded(reason: str) -> None:
                    refs["machines"].tell_nowait(StopAllMachines(reason))

                ledger = Ledger(ctx, on_exceeded=exceeded)
                cost = await system.spawn(functools.partial(CostActor, ledger), name="cost")

                async def approve_launch(job_id: str, server_type: str) -> bool:
                    return bool(await cost.ask(ApproveLaunch(job_id, server_type), timeout=60))

                async def approve_renewal(server_id: str, seconds: float) -> float | None:
                    granted = await cost.ask(ApproveRenewal(server_id, seconds), timeout=60)
                    return None if granted is None else float(granted)

                memory = MachinePool(
                    ctx,
                    approve_launch=approve_launch,
                    approve_renewal=approve_renewal,
                    make_client=lambda sid, url: comfy(),
                )
                machines = await system.spawn(
                    functools.partial(MachineActor, memory), name="machines"
                )
                refs["machines"] = machines
                if budget is not None:
                    await cost.ask(SetBudget(budget), timeout=60)
                yield Rig(memory, machines, cost, ctx, sim, log, ledger)
        nursery.cancel_scope.cancel()


async def test_launches_one_machine_and_reuses_it(autojump_clock: trio.testing.MockClock) -> None:
    """Two jobs one after the other run on the same machine: one launch."""
    async with pool_rig(max_machines=2) as rig:
        a = await rig.job()
        lease = await rig.lease(a)
        await rig.release(lease.server_id, a)
        b = await rig.job()
        again = await rig.lease(b)
        assert again.server_id == lease.server_id
        assert len(rig.sim.billing()) == 1
        await rig.release(again.server_id, b)


async def test_unmet_demand_launches_up_to_max(autojump_clock: trio.testing.MockClock) -> None:
    """Five waiting jobs with max_machines=3 launch exactly three machines."""
    async with pool_rig(max_machines=3) as rig:
        jobs = [await rig.job() for _ in range(5)]
        async with trio.open_nursery() as nursery:
            for j in jobs[:3]:
                nursery.start_soon(rig.lease, j)
        assert len(rig.sim.billing()) == 3
        assert {m.status for m in rig.state.machines.values()} == {"ready"}


async def test_idle_machine_is_stopped_and_billed_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After idle_timeout with no lease the machine stops; our bill equals the sim's."""
    async with pool_rig(idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await trio.sleep(17.3)
        await rig.release(lease.server_id, j)
        await trio.sleep(60)
        m = rig.state.machines[lease.server_id]
        assert m.status == "stopped"
        assert m.stop_reason == "idle"
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_lease_renewed_while_work_remains(autojump_clock: trio.testing.MockClock) -> None:
    """A machine busy past its lease gets it renewed (not stopped by RunComfy)."""
    async with pool_rig(lease_seconds=120.0, renew_margin=40.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        first = rig.state.machines[lease.server_id].estimated_stopping_at
        await trio.sleep(400)
        m = rig.state.machines[lease.server_id]
        assert m.status == "ready"
        assert m.estimated_stopping_at > first + 200
        assert rig.sim.running() == [lease.server_id]


async def test_machine_stuck_in_starting_is_stopped(autojump_clock: trio.testing.MockClock) -> None:
    """A machine never Ready is stopped after ready_timeout and costs nothing."""
    faults = RunComfyFaults(stuck_starting_rate=1.0)
    async with pool_rig(faults=faults, ready_timeout=300.0, max_machines=1) as rig:
        j = await rig.job()
        reply = await rig.ask_lease(j)
        await trio.sleep(400)
        first = next(iter(rig.state.machines.values()))
        assert first.status == "stopped"
        assert first.stop_reason == "not_ready"
        assert first.cost_micros == 0
        assert not reply.done or isinstance(reply._error, LeaseFailedError)


async def test_vanished_machine_is_lost_and_lease_signalled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A machine that vanishes (404) mid-job is marked lost; the lease's ``lost`` is set."""
    faults = RunComfyFaults(vanish_rate=1.0, vanish_after=100.0)
    async with pool_rig(faults=faults) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        with trio.fail_after(300):
            await lease.lost.wait()
        m = rig.state.machines[lease.server_id]
        assert m.status in ("lost", "stopped")
        assert m.lost_reason is not None
        assert rig.sim.running() == []


async def test_stop_while_the_websocket_opens_does_not_crash_the_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A machine stopped while its WebSocket is still on its first attempt (as when a
    resume adopts a machine and stops it at once) is stopped and billed; the pool carries
    on (it used to crash: the socket's task ended without reporting itself started)."""
    async with pool_rig(comfy=_SocketNeverOpens) as rig:
        j = await rig.job()
        reply = await rig.ask_lease(j)
        await trio.sleep(61)  # Ready at 60 s; the health check is now opening the socket
        (m,) = rig.state.machines.values()
        assert (m.status, m.healthy) == ("ready", False)
        await rig.machines.tell(StopMachine(m.server_id, "test"))
        with trio.fail_after(600):
            lease = await reply.wait()  # the pool carries on: another machine for the job
        assert lease.server_id != m.server_id
        assert rig.state.machines[m.server_id].status == "stopped"
        assert m.server_id not in rig.sim.running()
        bills = {b.server_id: b.cost_micros for b in rig.sim.billing()}
        assert rig.state.machines[m.server_id].cost_micros == bills[m.server_id]


async def test_a_dangling_launch_intent_is_resolved_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A launch intent left by a crash, with the server it started: a poll that saw the
    intent open, then waited on the cloud while start-up's reconcile adopted the server,
    leaves it alone (it used to die of a KeyError, crashing the machines actor)."""
    async with pool_rig() as rig:
        await rig.dangling_intent("k1")
        rc = rig.ctx.runcomfy
        list_servers = rc.list_servers
        reconciled = trio.Event()

        async def list_then_wait() -> Any:
            servers = await list_servers()
            await reconciled.wait()
            return servers

        rc.list_servers = list_then_wait
        await rig.machines.tell(PollNow())
        await trio.testing.wait_all_tasks_blocked()
        rc.list_servers = list_servers
        reply: Reply[None] = Reply()
        await rig.machines.tell(Reconcile(reply))
        with trio.fail_after(60):
            await reply.wait()
        reconciled.set()
        await rig.poll()
        (m,) = rig.state.machines.values()
        assert m.request_key == "k1"
        assert rig.state.launch_requests == {}
        assert rig.state.anomalies == []


async def test_unpriced_server_type_fails_the_lease_not_the_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server type the price table cannot bill (the CLI refuses it up front): the waiting
    job's lease fails with the reason, nothing is launched, the pool carries on."""
    async with pool_rig() as rig:
        rig.pool.server_type = "gigantic"
        j = await rig.job()
        reply = await rig.ask_lease(j)
        with trio.fail_after(10), pytest.raises(LeaseFailedError, match=r"no price .*gigantic"):
            await reply.wait()
        assert rig.sim.billing() == []
        assert rig.state.launch_requests == {}


async def test_stop_all_resolves_a_dangling_intent_and_stops_its_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Shutting down with a launch intent still open (its outcome unknown): the listing
    finds the server it started, which is adopted and stopped, not left billing."""
    async with pool_rig() as rig:
        await rig.dangling_intent("k1")
        assert await rig.stop_all("shutdown") == []
        assert rig.sim.running() == []
        assert rig.state.launch_requests == {}


async def test_budget_refuses_launch(autojump_clock: trio.testing.MockClock) -> None:
    """A budget smaller than one lease refuses the launch and fails the request."""
    async with pool_rig(budget=0.01) as rig:
        j = await rig.job()
        reply = await rig.ask_lease(j)
        with trio.fail_after(10), pytest.raises(LeaseFailedError, match="budget"):
            await reply.wait()
        assert rig.sim.billing() == []
        assert rig.state.budget.launches_refused == 1


async def test_stop_all_leaves_nothing_running(autojump_clock: trio.testing.MockClock) -> None:
    """stop_all stops every machine, including one still starting."""
    async with pool_rig(max_machines=2) as rig:
        a, b = await rig.job(), await rig.job()
        await rig.lease(a)
        await rig.ask_lease(b)
        await trio.sleep(1)
        left = await rig.stop_all("shutdown")
        assert left == []
        await trio.sleep(5)
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


class _FlakyList:
    """A RunComfy whose listing fails with ``errors`` in turn, then answers ``[]``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def list_servers(self) -> list[Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return []


async def test_patient_listing_waits_out_rate_limits_and_outages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """429s, connection failures and 5xx are waited out; the listing then comes back."""
    from conjure_actors.actors.pool import list_servers_patiently
    from conjure_actors.clients.errors import ClientError, RateLimitedError, TransportError

    rc = _FlakyList(
        RateLimitedError("429", status=429),
        TransportError("down"),
        ClientError("bad gateway", status=502),
    )
    assert await list_servers_patiently(rc, 600.0, what="test") == []
    assert rc.calls == 4


async def test_patient_listing_fails_at_once_on_a_wrong_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A wrong token is not something waiting cures: it is raised on the first call."""
    from conjure_actors.actors.pool import list_servers_patiently
    from conjure_actors.clients.errors import AuthError

    rc = _FlakyList(AuthError("401", status=401))
    start = trio.current_time()
    with pytest.raises(AuthError):
        await list_servers_patiently(rc, 600.0, what="test")
    assert rc.calls == 1
    assert trio.current_time() == start


async def test_patient_listing_gives_up_after_its_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rate limit that outlasts the patience is raised (one clear error, not a hang)."""
    from conjure_actors.actors.pool import list_servers_patiently
    from conjure_actors.clients.errors import RateLimitedError

    rc = _FlakyList(*(RateLimitedError("429", status=429) for _ in range(100)))
    start = trio.current_time()
    with pytest.raises(RateLimitedError):
        await list_servers_patiently(rc, 120.0, what="test")
    assert trio.current_time() - start <= 120.0
    assert rc.calls > 3


async def test_failed_stop_is_sent_again(autojump_clock: trio.testing.MockClock) -> None:
    """A DELETE that fails (after the client's retries) is not the end: the next poll
    finds the machine still up and stops it again; the bill is exact."""
    from conjure_actors.clients.errors import TransportError

    async with pool_rig(idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        rc = rig.ctx.runcomfy
        real_stop = rc.stop
        calls = 0

        async def failing_once(server_id: str, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise TransportError("connection reset")
            return await real_stop(server_id, **kwargs)

        rc.stop = failing_once
        await rig.release(lease.server_id, j)
        await trio.sleep(120)
        assert calls == 2
        assert rig.state.machines[lease.server_id].status == "stopped"
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_launch_the_cloud_refuses_fails_the_waiting_job_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 4xx on the launch (here: no workflow version) will never succeed: the waiting
    request fails at once, naming the cause, and no more launches are tried."""
    async with pool_rig() as rig:
        rig.pool.default_version = None
        j = await rig.job()
        start = trio.current_time()
        reply = await rig.ask_lease(j, None)
        with pytest.raises(LeaseFailedError, match="workflow_version_id") as info:
            with trio.fail_after(3600):
                await reply.wait()
        assert trio.current_time() - start < 5.0
        assert not info.value.retryable
        assert not rig.pool.launching_allowed
        assert rig.sim.billing() == []


async def test_patient_listing_gives_up_sooner_on_an_outage_than_a_rate_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With ``outage_patience``, an unreachable service is given up on after that long,
    while a rate limit is still waited out for the whole patience."""
    from conjure_actors.actors.pool import list_servers_patiently
    from conjure_actors.clients.errors import RateLimitedError, TransportError

    down = _FlakyList(*(TransportError("down") for _ in range(100)))
    start = trio.current_time()
    with pytest.raises(TransportError):
        await list_servers_patiently(down, 600.0, what="test", outage_patience=60.0)
    assert trio.current_time() - start <= 60.0
    busy = _FlakyList(*(RateLimitedError("429", status=429) for _ in range(7)))
    assert await list_servers_patiently(busy, 600.0, what="test", outage_patience=60.0) == []
    assert busy.calls == 8


# ----------------------------------------------------------- billing at every stop point


async def test_stop_while_the_log_says_starting_bills_from_the_servers_ready_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A machine Ready at 60 s that no poll saw Ready, stopped at 90 s: the ledger bills
    30 s from the server's Ready time (its final record), exactly as the cloud does."""
    async with pool_rig(poll_interval=10_000.0) as rig:
        j = await rig.job()
        await rig.ask_lease(j)
        await trio.sleep(90)
        (m,) = rig.state.machines.values()
        assert m.status == "starting"
        await rig.cancel(j)
        await rig.machines.tell(StopMachine(m.server_id, "test"))
        await trio.sleep(1)
        m = rig.state.machines[m.server_id]
        assert (m.status, m.billed_seconds) == ("stopped", 30)
        assert m.cost_micros > 0
        assert rig.ledger_matches_sim()


async def test_stop_of_a_machine_never_ready_bills_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped before the cloud made it Ready: 0 µ$ in the ledger and in the cloud."""
    async with pool_rig(poll_interval=10_000.0) as rig:
        j = await rig.job()
        await rig.ask_lease(j)
        await trio.sleep(30)
        (m,) = rig.state.machines.values()
        await rig.cancel(j)
        await rig.machines.tell(StopMachine(m.server_id, "test"))
        await trio.sleep(1)
        assert rig.state.machines[m.server_id].status == "stopped"
        assert rig.state.machines[m.server_id].cost_micros == 0
        assert rig.ledger_matches_sim()


# A whole pool run an example: the inner loop runs 5 examples, the slow twins 60.
_SLOW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_MANY = settings(_SLOW, max_examples=60)


def _mock_run(fn: Any) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


@_SLOW
@given(
    ready_delay=hst.floats(1.0, 120.0),
    poll_interval=hst.floats(1.0, 60.0),
    stop_after=hst.floats(0.0, 200.0),
)
def test_ledger_equals_the_clouds_bill_whenever_the_stop_comes(
    ready_delay: float, poll_interval: float, stop_after: float
) -> None:
    """Stopped while Starting, Ready between two polls, or Ready and seen: the ledger
    equals the cloud's bill to the micro-dollar, and nothing is left running."""
    _check_ledger_whenever_the_stop_comes(ready_delay, poll_interval, stop_after)


@pytest.mark.slow
@_MANY
@given(
    ready_delay=hst.floats(1.0, 120.0),
    poll_interval=hst.floats(1.0, 60.0),
    stop_after=hst.floats(0.0, 200.0),
)
def test_ledger_equals_the_clouds_bill_whenever_the_stop_comes_over_many_examples(
    ready_delay: float, poll_interval: float, stop_after: float
) -> None:
    """The same property as above, over many more delays."""
    _check_ledger_whenever_the_stop_comes(ready_delay, poll_interval, stop_after)


def _check_ledger_whenever_the_stop_comes(
    ready_delay: float, poll_interval: float, stop_after: float
) -> None:
    async def main() -> None:
        async with pool_rig(ready_delay=ready_delay, poll_interval=poll_interval) as rig:
            j = await rig.job()
            await rig.ask_lease(j)
            await trio.sleep(stop_after)
            assert await rig.stop_all() == []
            assert rig.sim.running() == []
            assert rig.ledger_matches_sim()

    _mock_run(main)


# ------------------------------------------------------------------ issue 17: interrupts


@_SLOW
@given(
    jobs=hst.integers(1, 3),
    ready_delay=hst.floats(1.0, 120.0),
    poll_interval=hst.floats(1.0, 30.0),
    interrupt_after=hst.floats(0.0, 150.0),
)
@pytest.mark.slow
def test_early_interrupt_leaves_no_machine_billing(
    jobs: int, ready_delay: float, poll_interval: float, interrupt_after: float
) -> None:
    """An interrupt at any moment of the launches (as ``Conjure.shutdown`` does it: stop
    launching, cancel the jobs, stop every machine): afterwards no simulated machine runs,
    no launch was requested after the interrupt, and the ledger equals the cloud's bill."""
    _check_early_interrupt(jobs, ready_delay, poll_interval, interrupt_after)


@pytest.mark.slow
@_MANY
@given(
    jobs=hst.integers(1, 3),
    ready_delay=hst.floats(1.0, 120.0),
    poll_interval=hst.floats(1.0, 30.0),
    interrupt_after=hst.floats(0.0, 150.0),
)
def test_early_interrupt_leaves_no_machine_billing_over_many_examples(
    jobs: int, ready_delay: float, poll_interval: float, interrupt_after: float
) -> None:
    """The same property as above, over many more moments."""
    _check_early_interrupt(jobs, ready_delay, poll_interval, interrupt_after)


def _check_early_interrupt(
    jobs: int, ready_delay: float, poll_interval: float, interrupt_after: float
) -> None:
    async def main() -> None:
        async with pool_rig(
            ready_delay=ready_delay, poll_interval=poll_interval, max_machines=3
        ) as rig:
            ids = [await rig.job() for _ in range(jobs)]
            for j in ids:
                await rig.ask_lease(j)
            await trio.sleep(interrupt_after)
            await rig.machines.tell(StopLaunching("interrupted"))
            await rig.poll()  # the interrupt has been handled
            launches = len(rig.events(ev.MachineLaunchRequested))
            for j in ids:
                if rig.state.jobs[j].status != "cancelled":
                    await rig.cancel(j)
            assert await rig.stop_all("interrupted") == []
            await trio.sleep(600)
            assert rig.sim.running() == []
            assert len(rig.events(ev.MachineLaunchRequested)) == launches
            assert rig.ledger_matches_sim()

    _mock_run(main)


async def test_no_launch_is_requested_after_stop_launching(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A launch whose budget approval is still on its way when ``StopLaunching`` arrives
    is not requested: no intent, no server, and the waiting job is told why."""
    async with pool_rig() as rig:
        approve = rig.pool.approve_launch
        release = trio.Event()

        async def slow_approval(job_id: str, server_type: str) -> bool:
            await release.wait()
            return await approve(job_id, server_type)

        rig.pool.approve_launch = slow_approval
        j = await rig.job()
        reply = await rig.ask_lease(j)
        await trio.testing.wait_all_tasks_blocked()
        await rig.machines.tell(StopLaunching("interrupted"))
        await rig.poll()
        release.set()
        with trio.fail_after(60), pytest.raises(LeaseFailedError, match="interrupted"):
            await reply.wait()
        assert rig.events(ev.MachineLaunchRequested) == []
        assert rig.sim.billing() == []


async def test_a_launch_answered_during_the_stop_of_every_machine_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A launch whose answer arrives after the stop of every machine began: its server is
    stopped too, and the stop's reply waits for it."""
    async with pool_rig() as rig:
        rc = rig.ctx.runcomfy
        launch = rc.launch
        answered = trio.Event()

        async def slow_launch(*args: Any) -> Any:
            server = await launch(*args)  # the cloud has started it...
            await answered.wait()  # ...but the answer is late
            return server

        rc.launch = slow_launch
        j = await rig.job()
        await rig.ask_lease(j)
        await trio.testing.wait_all_tasks_blocked()
        await rig.cancel(j)
        reply: Reply[list[str]] = Reply()
        await rig.machines.tell(StopAllMachines("interrupted", reply))
        await rig.poll()
        assert not reply.done
        answered.set()
        with trio.fail_after(60):
            assert await reply.wait() == []
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_stops_outlast_a_429_storm_during_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RunComfy answers 429 for minutes while we shut down: the stops keep trying (past
    the 30 s that used to end them) and every machine is stopped and billed exactly."""
    async with pool_rig(max_machines=2) as rig:
        a, b = await rig.job(), await rig.job()
        await rig.lease(a)
        await rig.lease(b)
        rig.sim.inject_rate_limit_burst(80)
        start = trio.current_time()
        assert await rig.stop_all() == []
        assert trio.current_time() - start > 30.0
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_429_storm_past_the_patience_names_the_machines_still_billing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rate limit that outlasts ``stop_patience``: the stop of every machine answers
    then, with exactly the machines the cloud still bills."""
    async with pool_rig(max_machines=2, stop_patience=120.0) as rig:
        a, b = await rig.job(), await rig.job()
        await rig.lease(a)
        await rig.lease(b)
        rig.sim.inject_rate_limit_burst(1_000_000)
        start = trio.current_time()
        left = await rig.stop_all()
        assert 120.0 <= trio.current_time() - start < 130.0
        assert sorted(left) == sorted(rig.sim.running())
        assert len(left) == 2


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_launches_stuck_in_starting_fail_the_job_after_bounded_tries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every launch stays Starting: after ``max_launch_attempts`` launches (each stopped at
    ``ready_timeout``) the waiting job fails saying so, and nothing more is launched."""
    faults = RunComfyFaults(stuck_starting_rate=1.0)
    async with pool_rig(
        faults=faults, ready_timeout=120.0, max_machines=1, max_launch_attempts=3
    ) as rig:
        j = await rig.job()
        reply = await rig.ask_lease(j)
        with trio.fail_after(3600), pytest.raises(LeaseFailedError) as info:
            await reply.wait()
        assert "3 launches in a row never became Ready" in str(info.value)
        assert "still Starting after 120 s" in str(info.value)
        await trio.sleep(3600)
        assert len(rig.sim.billing()) == 3
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_lease_asked_after_the_stop_of_every_machine_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once every machine is being stopped, a new lease request is refused at once, with
    the reason, and launches nothing."""
    async with pool_rig() as rig:
        assert await rig.stop_all("interrupted") == []
        reply = await rig.ask_lease(await rig.job())
        with trio.fail_after(1), pytest.raises(LeaseFailedError, match="interrupted"):
            await reply.wait()
        assert rig.sim.billing() == []


@pytest.mark.slow
async def test_budget_warning_comes_at_the_configured_fraction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With ``budget.warn_fraction = 0.5`` the CostActor warns once half the budget is spent
    (not at a fixed 80%), and the machine keeps running."""
    async with pool_rig(budget=1.0, warn_fraction=0.5) as rig:
        j = await rig.job()
        await rig.lease(j)
        await trio.sleep(1500)  # $0.99/h: about $0.41 spent
        assert rig.events(ev.BudgetWarning) == []
        await trio.sleep(600)  # about $0.58
        (warning,) = rig.events(ev.BudgetWarning)
        assert 500_000 <= warning.spent_micros < 600_000
        assert rig.events(ev.BudgetExceeded) == []


async def test_the_stop_of_every_machine_does_not_wait_behind_a_hung_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A listing that never answers (it used to hold the pool's lock) does not hold up the
    stop of every machine: the actor handles it at once and the DELETEs go out. With no
    listing to show a DELETE's 200 took, the reply at ``stop_patience`` names the machine
    as not confirmed stopped."""
    async with pool_rig(stop_patience=120.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        rc = rig.ctx.runcomfy

        async def hangs() -> Any:
            await trio.sleep_forever()

        rc.list_servers = hangs
        await rig.machines.tell(PollNow())
        await trio.testing.wait_all_tasks_blocked()
        await rig.release(lease.server_id, j)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            left: list[str] = []

            async def stop_all() -> None:
                left.extend(await rig.stop_all())

            nursery.start_soon(stop_all)
            await trio.sleep(5.0)
            assert rig.sim.running() == []  # the DELETE went out at once
        assert left == [lease.server_id]
        assert trio.current_time() - start <= 121.0
        assert rig.ledger_matches_sim()


async def test_rate_limited_launches_are_waited_out_not_counted_as_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Five launches refused by a rate limit in a row (more than ``max_launch_attempts``):
    the pool backs off and tries again within ``cloud_patience``; the job gets its machine."""
    from conjure_actors.clients.errors import RateLimitedError

    async with pool_rig(max_launch_attempts=3) as rig:
        rc = rig.ctx.runcomfy
        launch = rc.launch
        calls = 0

        async def busy_then_fine(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls <= 5:
                raise RateLimitedError("429 rate_limited", status=429)
            return await launch(*args)

        rc.launch = busy_then_fine
        j = await rig.job()
        lease = await rig.lease(j)
        assert len(rig.events(ev.MachineLaunchFailed)) == 5
        assert rig.pool.launching_allowed
        assert rig.sim.running() == [lease.server_id]


async def test_a_budget_that_does_not_answer_delays_the_launch_without_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The CostActor's answer times out once: the launch is asked again at the next tick,
    the job gets its machine and the MachineActor never crashed."""
    from conjure_actors.lifecycle import ActorCrashed
    from conjure_actors.runtime.errors import AskTimeoutError

    async with pool_rig() as rig:
        approve = rig.pool.approve_launch
        calls = 0

        async def times_out_once(job_id: str, server_type: str) -> bool:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise AskTimeoutError("no answer in 60 s")
            return await approve(job_id, server_type)

        rig.pool.approve_launch = times_out_once
        lease = await rig.lease(await rig.job())
        assert calls == 2
        assert rig.sim.running() == [lease.server_id]
        assert rig.events(ActorCrashed) == []


async def test_hedged_launch_stops_the_slower_machine_unbilled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With launch_hedge=2 a job launches two machines, takes the first Ready and the other
    is stopped while still Starting: billed nothing."""
    faults = RunComfyFaults(slow_ready_rate=0.5, slow_ready_factor=3.0)
    async with pool_rig(max_machines=4, launch_hedge=2, faults=faults) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.poll()
        bills = {b.server_id: b.billed_seconds for b in rig.sim.billing()}
        assert len(bills) == 2
        others = [sid for sid in bills if sid != lease.server_id]
        assert [rig.state.machines[sid].stop_reason for sid in others] == ["surplus"]
        assert [bills[sid] for sid in others] == [0]
        await rig.release(lease.server_id, j)


async def test_warm_pool_keeps_an_idle_machine_past_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With warm_pool=1 the one idle machine outlives idle_timeout and its lease (renewed)."""
    async with pool_rig(
        idle_timeout=30.0, warm_pool=1, lease_seconds=120.0, renew_margin=40.0
    ) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        await trio.sleep(600)
        assert rig.state.machines[lease.server_id].status == "ready"
        assert rig.sim.running() == [lease.server_id]


PRELAUNCH = {"prelaunch_max": 4, "prelaunch_window": 600.0, "prelaunch_service": 600.0}


async def test_a_burst_of_arrivals_prelaunches_machines_for_the_next_jobs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two jobs arriving together (rate 2 per 600 s, factor 2: target 4) launch two machines
    beyond their own; a third job then takes a pre-launched Ready machine, launching none."""
    async with pool_rig(max_machines=6, prelaunch_factor=2.0, **PRELAUNCH) as rig:
        a, b = await rig.job(), await rig.job()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rig.lease, a)
            nursery.start_soon(rig.lease, b)
        await trio.sleep(30)  # the pre-launched machines' start-up (the cloud throttles launches)
        assert len(rig.events(ev.MachineLaunchRequested)) == 4
        assert [m.status for m in rig.state.machines.values()] == ["ready"] * 4
        c = await rig.job()
        with trio.fail_after(1):
            lease = await rig.lease(c)
        assert rig.state.machines[lease.server_id].status == "ready"
        assert len(rig.events(ev.MachineLaunchRequested)) == 4


async def test_prelaunched_machines_nobody_takes_stop_by_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The machines pre-launched for a burst that never comes stop once idle_timeout passes."""
    async with pool_rig(
        max_machines=6, idle_timeout=60.0, prelaunch_factor=2.0, **PRELAUNCH
    ) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        await trio.sleep(600)
        assert len(rig.sim.billing()) == 2
        assert rig.sim.running() == []
        assert {m.stop_reason for m in rig.state.machines.values()} == {"idle"}


async def test_prelaunch_is_off_by_default(autojump_clock: trio.testing.MockClock) -> None:
    """Without pool.prelaunch_max, a burst of jobs launches one machine per job, no more."""
    async with pool_rig(max_machines=6) as rig:
        jobs = [await rig.job() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            for j in jobs:
                nursery.start_soon(rig.lease, j)
        assert len(rig.events(ev.MachineLaunchRequested)) == 3


async def test_prelaunch_asks_the_budget_and_stops_at_its_refusal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With room in the budget for two leases, a job that would pre-launch three more gets
    its own machine and one pre-launch; the budget refuses the next, and nothing else
    launches."""
    async with pool_rig(max_machines=6, budget=0.40, prelaunch_factor=4.0, **PRELAUNCH) as rig:
        j = await rig.job()
        await rig.lease(j)
        await rig.poll()
        assert len(rig.events(ev.MachineLaunchRequested)) == 2
        assert len(rig.sim.billing()) == 2
        assert rig.state.budget.launches_refused == 1
