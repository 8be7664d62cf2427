"""The grace a machine gets for not being listed right after its launch (RunComfy's listing
lags: NOT_VISIBLE_GRACE) runs from its launch as the log has it (``MachineLaunched.at``),
not from when this actor (re)started: a restart right after a launch does not take the
machine for gone, and one long after it does not give a gone machine the grace again."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.actors.messages import Reply
from conjure_actors.actors.pool import Reconcile
from conjure_actors.domain import events as ev
from conjure_actors.domain.machines_policy import NOT_VISIBLE_GRACE


async def _until(done: Any, step: float) -> None:
    while not done():  # noqa: ASYNC110 - a pool rig's state has no event to wait on
        await trio.sleep(step)


def _hide_from_listings(rig: Rig) -> set[str]:
    """The servers in the returned set are left out of every listing (RunComfy's lag), and
    their lookup (``GET /servers/{id}``) answers 404 too."""
    from conjure_actors.clients.errors import ServerNotFoundError

    rc = rig.ctx.runcomfy
    real, real_status = rc.list_servers, rc.status
    hidden: set[str] = set()

    async def list_servers() -> Any:
        return [s for s in await real() if s.server_id not in hidden]

    async def status(server_id: str) -> Any:
        if server_id in hidden:
            raise ServerNotFoundError(f"server {server_id} not found (HTTP 404)", status=404)
        return await real_status(server_id)

    rc.list_servers, rc.status = list_servers, status
    return hidden


async def _restart(rig: Rig) -> None:
    """What a restart keeps of the pool: the log (its memory of each machine is gone)."""
    rig.pool.live.clear()
    reply: Reply[None] = Reply()
    await rig.machines.tell(Reconcile(reply))
    with trio.fail_after(600):
        await reply.wait()


def _lost(rig: Rig) -> list[Any]:
    return [r.event for r in rig.log.records() if isinstance(r.event, ev.MachineLost)]


async def _launch_for_a_job(rig: Rig) -> tuple[Any, str, set[str]]:
    """A job asks for a lease and a machine is launched for it: (the lease's reply, the
    machine's id, the ids left out of every listing: add one to hide it)."""
    hidden = _hide_from_listings(rig)
    j = await rig.job()
    reply = await rig.ask_lease(j)
    with trio.fail_after(60):
        await _until(lambda: bool(rig.state.machines), 0.1)
    (sid,) = rig.state.machines
    return reply, sid, hidden


async def test_a_restart_right_after_a_launch_does_not_take_the_machine_for_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Launched, then the actor restarts (a resume) before a listing shows the machine.
    Before, the recovery took it for "gone while we were down" at once (MachineLost), then
    found it up and stopped it: the job waited for a second machine's launch. Now it is
    given the rest of its grace from the logged launch, and leased once listed."""
    async with pool_rig(max_machines=1, ready_delay=60.0) as rig:
        reply, sid, hidden = await _launch_for_a_job(rig)
        hidden.add(sid)
        await _restart(rig)
        await trio.sleep(20)  # the listing catches up within the grace
        hidden.clear()
        with trio.fail_after(600):
            lease = await reply.wait()
        assert lease.server_id == sid
        assert _lost(rig) == []
        assert len(rig.sim.billing()) == 1  # one machine launched, not two
        assert rig.state.anomalies == []


async def test_a_restart_long_after_a_launch_gives_no_grace_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The actor restarts once the launch is older than the grace, and the machine is not
    listed: it is lost at once (the grace is not counted again from the restart)."""
    async with pool_rig(max_machines=1, ready_delay=600.0, ready_timeout=3600.0) as rig:
        _, sid, hidden = await _launch_for_a_job(rig)
        await trio.sleep(NOT_VISIBLE_GRACE + 10)
        hidden.add(sid)
        await _restart(rig)
        (lost,) = _lost(rig)
        assert lost.server_id == sid
