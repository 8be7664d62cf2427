"""Machines that went while we were not looking: a lost machine found up whose stop gave up,
a machine stopped while Starting that became Ready, a DELETE sent again that answers 404.
Each is billed as the cloud billed it."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from test_actor_pool import pool_rig
from test_actor_pool_money import found_up_stop_gives_up_then_it_goes


async def _until(done: Any, step: float) -> None:
    """Poll ``done`` every ``step`` s of mock time (the autojump clock makes it free)."""
    while not done():  # noqa: ASYNC110 - a pool rig's state has no event to wait on
        await trio.sleep(step)


async def test_a_found_up_machine_whose_stop_gave_up_and_that_went_since_is_billed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The DELETE of a lost machine found up gives up (409); the machine then goes (it is
    stopped by someone else, or its lease ends). The listing showed it up, so it billed
    at least until then: the ledger must equal the cloud's bill (the loss's bill is 0)."""

    async with pool_rig(lease_seconds=3600.0, max_machines=1, idle_timeout=5.0) as rig:
        first = await found_up_stop_gives_up_then_it_goes(rig)
        await trio.sleep(120)  # listings see it gone
        assert first not in rig.pool.found_up
        assert rig.sim.running() == []
        cloud = {b.server_id: b.cost_micros for b in rig.sim.billing()}
        print("cloud", cloud[first], "ledger", rig.state.machines[first].cost_micros)
        ours = rig.state.machines[first].cost_micros
        # Nobody says when it went: billed to the listing that saw it gone at most (as a
        # 404 to its DELETE is), so never less than the cloud's bill, and close to it.
        assert cloud[first] <= ours <= cloud[first] * 1.05
        assert rig.state.anomalies == []


async def test_a_resume_rechecks_a_machine_stopped_while_starting_until_its_lease_from_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped while Starting (never Ready in the log), its DELETE's 200 does not take and
    the run goes down before a listing sees it. It becomes Ready after that stop and
    RunComfy bills it for a whole lease FROM READY. A resume between stop + lease and
    ready + lease must still recheck it (_stopped_in_lease counts the lease from the stop)."""
    from conjure_actors.actors.messages import Reply, StopMachine
    from conjure_actors.actors.pool import Reconcile

    async with pool_rig(lease_seconds=600.0, ready_delay=200.0, max_machines=1) as rig:
        rc = rig.ctx.runcomfy
        real_stop = rc.stop
        calls: list[str] = []

        async def stop(server_id: str, **kw: Any) -> Any:
            calls.append(server_id)
            if len(calls) == 1:
                return await rc.status(server_id)  # 200, did not take
            return await real_stop(server_id, **kw)

        rc.stop = stop
        j = await rig.job()
        await rig.ask_lease(j)
        with trio.fail_after(60):
            await _until(lambda: bool(rig.state.machines), 1)
        (sid,) = rig.state.machines
        await rig.cancel(j)
        await rig.machines.tell(StopMachine(sid, "user"))
        with trio.fail_after(60):
            await _until(lambda: rig.state.machines[sid].status == "stopped", 0.1)
        stopped = trio.current_time()
        rig.pool.recheck.clear()  # the crash: the recheck is memory only
        rig.pool.unconfirmed.clear()
        assert rig.state.machines[sid].service_ready_at is None
        await trio.sleep_until(stopped + 600.0 + 10.0)
        assert sid in rig.sim.running()  # Ready after the stop: its lease runs from then
        reply: Reply[None] = Reply()
        await rig.machines.tell(Reconcile(reply))
        with trio.fail_after(60):
            await reply.wait()
        await trio.sleep(5)
        assert sid not in rig.sim.running()
        assert rig.ledger_matches_sim()
        assert rig.state.anomalies == []


async def test_a_machine_ready_after_its_stop_and_gone_at_the_delete_sent_again_is_billed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped while Starting, its DELETE's 200 does not take; it becomes Ready (listed
    Ready, with its Ready time) and is sent a DELETE again, which answers 404: it went
    meanwhile (its lease ended while that DELETE was held up). RunComfy billed it from
    Ready to its lease's end: MachineStoppedAgain must not bill it 0 (the listing that
    showed it up gave its Ready time, as found_up keeps it for a lost machine)."""
    from conjure_actors.actors.messages import StopMachine
    from conjure_actors.clients.errors import ClientError

    async with pool_rig(lease_seconds=600.0, ready_delay=100.0, max_machines=1) as rig:
        rc = rig.ctx.runcomfy
        real_stop = rc.stop
        calls: list[str] = []

        async def stop(server_id: str, **kw: Any) -> Any:
            calls.append(server_id)
            if len(calls) == 1:
                return await rc.status(server_id)  # 200, did not take
            m = rig.sim._machines[server_id]
            if m.ready_us is None or len(calls) < 8:
                raise ClientError("503 service unavailable", status=503)  # retried
            if server_id in rig.sim.running():
                await real_stop(server_id, missing_ok=True)  # the web UI stopped it
            return None  # our DELETE: 404 (gone by then)

        rc.stop = stop
        j = await rig.job()
        await rig.ask_lease(j)
        with trio.fail_after(60):
            await _until(lambda: bool(rig.state.machines), 1)
        (sid,) = rig.state.machines
        await rig.cancel(j)
        # Stop it once Ready is near, so the recheck's listing sees it Ready.
        await trio.sleep(90)
        await rig.machines.tell(StopMachine(sid, "user"))
        await trio.sleep(1500)
        assert rig.sim.running() == []
        cloud = {b.server_id: b.cost_micros for b in rig.sim.billing()}
        print("cloud", cloud[sid], "ledger", rig.state.machines[sid].cost_micros)
        assert rig.ledger_matches_sim()
