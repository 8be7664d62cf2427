"""A stopped machine whose DELETEs answer 200 without taking (the answer still shows it
up) runs and bills on: a listing that leaves it out (RunComfy's listing misses a machine
now and then) is no proof that it went. It stays watched (DELETE again once listed up) until
a listing shows it going, or its lease is over."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.domain import events as ev


def _deletes_and_listings(rig: Rig) -> tuple[list[bool], set[str]]:
    """DELETEs answer 200 still up while ``taking[0]`` is False; servers in the returned
    set are left out of every listing."""
    rc = rig.ctx.runcomfy
    real_stop, real_list = rc.stop, rc.list_servers
    taking = [False]
    hidden: set[str] = set()

    async def stop(server_id: str, **kwargs: Any) -> Any:
        if taking[0]:
            return await real_stop(server_id, **kwargs)
        return await rc.status(server_id)  # 200, the machine still Ready: did not take

    async def list_servers() -> Any:
        return [s for s in await real_list() if s.server_id not in hidden]

    rc.stop = stop
    rc.list_servers = list_servers
    return taking, hidden


async def _used_once(rig: Rig) -> str:
    """One job leases a machine and lets it go (the idle timeout then stops it): its id."""
    j = await rig.job()
    lease = await rig.lease(j)
    await rig.release(lease.server_id, j)
    return str(lease.server_id)


async def _stopped_idle(rig: Rig) -> str:
    """As :func:`_used_once`, until the log says the machine stopped: its id."""
    sid = await _used_once(rig)
    while rig.state.machines[sid].status != "stopped":  # noqa: ASYNC110 - pool rig
        await trio.sleep(1)
    return sid


async def _ends_billed_as_the_cloud_bills(rig: Rig, sid: str) -> None:
    """Past any lease: nothing runs, and the ledger is the cloud's bill."""
    await trio.sleep(1800)
    assert rig.sim.running() == []
    bills = {b.server_id: (b.billed_seconds, b.reason) for b in rig.sim.billing()}
    ours = rig.state.machines[sid]
    assert rig.ledger_matches_sim(), (bills, ours.billed_seconds, ours.cost_micros)


@pytest.mark.slow
async def test_a_machine_whose_delete_did_not_take_left_out_of_a_listing_is_not_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped idle; its DELETEs answer 200 still Ready (sent again at every listing) for
    290 s; then three listings leave it out, across the end of its 300 s recheck; then it
    is listed Ready again, and DELETEs take again. Before: the recheck ran out while it was
    left out and it was forgotten: it billed on until its lease ended (1800 s), the ledger
    stopped at the listing that left it out."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=1800.0) as rig:
        taking, hidden = _deletes_and_listings(rig)
        sid = await _stopped_idle(rig)
        await trio.sleep(290)
        hidden.add(sid)
        await trio.sleep(15)
        hidden.clear()
        taking[0] = True
        await _ends_billed_as_the_cloud_bills(rig, sid)
        assert [e.found for e in rig.events(ev.MachineStoppedAgain)][-1] is True


async def test_the_stop_of_every_machine_does_not_answer_nothing_left_over_a_machine_left_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At the stop of every machine (how every run ends) the DELETE answers 200 still
    Ready (it did not take) and the next listing leaves the machine out: that listing is
    no proof it went. The reply must not say 'nothing left' while it runs and bills: it
    waits for a listing that shows it, and sends the DELETE again (or names it)."""
    async with pool_rig(idle_timeout=3600.0, stop_patience=120.0) as rig:
        taking, hidden = _deletes_and_listings(rig)
        hidden.add(await _used_once(rig))
        async with trio.open_nursery() as nursery:

            async def then_listed_and_taking() -> None:
                await trio.sleep(12)  # two listings leave it out
                hidden.clear()
                taking[0] = True

            nursery.start_soon(then_listed_and_taking)
            left = await rig.stop_all("shutdown")
        assert left != [] or rig.sim.running() == [], (left, rig.sim.running())


async def test_a_machine_whose_delete_did_not_take_hidden_from_every_listing_is_looked_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped idle; its DELETE answers 200 still Ready (did not take); from then on every
    listing leaves it out, while GET /servers/{id} still finds it Ready (the soak's seed
    1196). Before: the first listing without it billed it as gone by itself to then, and it
    ran on, unwatched, until its lease ended. Now the lookup finds it up, the DELETE is sent
    again (and takes), and the ledger matches the cloud."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=1800.0) as rig:
        taking, hidden = _deletes_and_listings(rig)
        sid = await _stopped_idle(rig)
        hidden.add(sid)
        taking[0] = True  # the DELETEs sent from now on take
        await _ends_billed_as_the_cloud_bills(rig, sid)


async def test_a_resume_looks_up_a_machine_whose_delete_did_not_take_left_out_of_its_listing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped idle; its DELETE answers 200 still Ready (did not take, logged still_up);
    the run goes down and resumes; from then on every listing leaves it out, while
    GET /servers/{id} still finds it Ready. Before: the recovery billed it as gone by
    itself at once (still_up cleared), so no lookup was ever sent for it: it ran on,
    unwatched, until its lease ended (ledger short of the cloud's bill). Now the lookup
    decides, as in a run that did not go down: up -> DELETE again (it takes)."""
    from conjure_actors.actors.messages import Reply
    from conjure_actors.actors.pool import Reconcile

    async with pool_rig(idle_timeout=30.0, lease_seconds=1800.0) as rig:
        taking, hidden = _deletes_and_listings(rig)
        sid = await _stopped_idle(rig)
        assert rig.state.machines[sid].stop_still_up
        # The restart: the log is kept, the pool's memory of each machine is not.
        pool = rig.pool
        for kept in (pool.recheck, pool.recheck_ready, pool.live):
            kept.clear()
        pool.unconfirmed.clear()
        pool.not_taken.clear()
        hidden.add(sid)
        taking[0] = True  # the DELETEs sent from now on take
        reply: Reply[None] = Reply()
        await rig.machines.tell(Reconcile(reply))
        with trio.fail_after(600):
            await reply.wait()
        await _ends_billed_as_the_cloud_bills(rig, sid)


async def test_the_stop_of_every_machine_answers_once_a_lookup_proves_the_machine_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At the stop of every machine the DELETE answers 200 still Ready (did not take);
    the machine then goes by itself (vanishes): listings leave it out and its lookup
    answers 404. Before: the 404 billed it as gone but left it 'not taken', so the reply
    waited the whole stop_patience (600 s) and named it as still billing. Now the 404 is
    the proof: the reply says nothing is left, at the next listing."""
    from conjure_actors.clients.errors import ServerNotFoundError

    async with pool_rig(idle_timeout=3600.0, lease_seconds=1800.0) as rig:
        _, hidden = _deletes_and_listings(rig)
        rc = rig.ctx.runcomfy
        real_status = rc.status

        async def status(server_id: str) -> Any:
            if server_id in hidden:
                raise ServerNotFoundError(f"server {server_id} not found (HTTP 404)", status=404)
            return await real_status(server_id)

        rc.status = status
        sid = await _used_once(rig)
        async with trio.open_nursery() as nursery:

            async def then_it_vanishes() -> None:
                while not rig.state.machines[sid].stop_still_up:  # noqa: ASYNC110 - pool rig
                    await trio.sleep(0.1)
                rig.sim._stop(rig.sim._machines[sid], rig.sim.wall(), "vanished")
                hidden.add(sid)

            nursery.start_soon(then_it_vanishes)
            started = trio.current_time()
            left = await rig.stop_all("shutdown")
            waited = trio.current_time() - started
        assert rig.sim.running() == []
        assert left == [], left
        assert waited < 60, waited


async def test_failed_recheck_lookups_do_not_count_past_a_listing_that_shows_the_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopped idle, its DELETEs answer 200 still Ready. Left out of listings while
    GET /servers/{id} is out (three lookups fail), then listed Ready again (the DELETE sent
    again does not take either), then left out of every listing while GET works. Before:
    the three old failures still counted, so no lookup was sent any more: the absence was
    trusted, it ran on unwatched until its lease ended (ledger short). Now a listing that
    shows it starts the count anew: looked up, found up, DELETEd again (it takes)."""
    from conjure_actors.clients.errors import TransportError

    async with pool_rig(idle_timeout=30.0, lease_seconds=1800.0) as rig:
        taking, hidden = _deletes_and_listings(rig)
        rc = rig.ctx.runcomfy
        real_status = rc.status
        failing = [0]

        async def status(server_id: str) -> Any:
            if failing[0] > 0 and server_id in hidden:
                failing[0] -= 1
                raise TransportError("no answer")
            return await real_status(server_id)

        rc.status = status
        sid = await _used_once(rig)
        while not rig.state.machines[sid].stop_still_up:  # noqa: ASYNC110 - pool rig
            await trio.sleep(1)
        failing[0] = 3
        hidden.add(sid)
        while failing[0]:  # noqa: ASYNC110 - pool rig
            await trio.sleep(1)
        await trio.sleep(10)  # a listing after the third failure trusts the absence
        hidden.clear()  # listed Ready: DELETEd again, which does not take
        n_again = len(rig.events(ev.MachineStoppedAgain))
        while len(rig.events(ev.MachineStoppedAgain)) == n_again:  # noqa: ASYNC110
            await trio.sleep(1)
        assert rig.state.machines[sid].stop_still_up
        hidden.add(sid)
        taking[0] = True  # GET works; the DELETEs sent from now on take
        await _ends_billed_as_the_cloud_bills(rig, sid)
