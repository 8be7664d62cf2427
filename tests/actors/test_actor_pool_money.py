"""The MachineActor where money leaks when a machine, a launch or a stop does not go as
planned: a Ready machine listed in a strange status, a launch that lands late, a stale
report after a restart, a DELETE that does not take, a foreign machine on the account.
Each test: the cloud stops billing what we think stopped (or never touched what is not
ours), and our ledger equals the simulator's bill."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy as policy


@pytest.mark.parametrize("status", ["Initializing", "Error", "Provisioning"])
async def test_a_ready_machine_listed_neither_ready_nor_going_away_is_stopped(
    autojump_clock: trio.testing.MockClock, status: str
) -> None:
    """A Ready machine the listing shows in a status neither Ready nor on its way out (a
    restart on RunComfy's side, ``Error``, an unknown string) may still bill: it is
    stopped (DELETE) and billed from the DELETE's answer, not forgotten as lost."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        rig.sim._machines[lease.server_id].status = status  # still up, still billing
        await rig.poll()
        await trio.sleep(120)
        assert rig.sim.running() == []
        assert lease.lost.is_set()
        assert rig.state.machines[lease.server_id].stop_reason == f"not ready ({status})"
        assert rig.ledger_matches_sim()


async def test_a_stale_approval_after_a_restart_neither_passes_max_machines_nor_leaks(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MachineActor crashes while a launch approval is in flight; its answer was
    already queued (the mailbox outlives the crash). The next incarnation never counted
    it: acting on it would drive ``_approving`` to -1 and ``max_machines=1`` launch two
    machines. It is ignored, its reservation given back, and the demand asked anew."""
    from conjure_actors.actors import pool as pool_mod

    async with pool_rig(max_machines=1) as rig:
        gate = trio.Event()
        approve = rig.pool.approve_launch
        given_back: list[str] = []

        async def gated(job_id: str, server_type: str) -> bool:
            await gate.wait()
            return await approve(job_id, server_type)

        async def unused(job_id: str) -> None:
            given_back.append(job_id)

        rig.pool.approve_launch = gated
        rig.pool.approval_unused = unused
        real_assign = pool_mod.MachineActor._assign
        armed = [True]

        async def assign(self: Any) -> None:
            if armed[0] and self._approving == 1:  # an approval in flight
                armed[0] = False
                gate.set()
                await trio.sleep(1)  # the approval's answer is queued meanwhile
                raise RuntimeError("injected crash of the MachineActor")
            await real_assign(self)

        monkeypatch.setattr(pool_mod.MachineActor, "_assign", assign)
        a, b = await rig.job(), await rig.job()
        first = await rig.ask_lease(a)
        await rig.ask_lease(b)
        with trio.fail_after(600):
            await first.wait()
        await trio.sleep(300)
        assert len(rig.sim.billing()) == 1
        assert len(given_back) == 1


async def test_a_launch_of_unknown_outcome_that_lands_late_is_adopted_not_orphaned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``POST /servers`` times out (``OutcomeUnknownError``) while RunComfy still creates
    the machine; it shows in the listing seconds later. The listings in between leave the
    intent open (``LAUNCH_LAND_GRACE``), so the machine is adopted (then used, stopped and
    billed) instead of billing its whole lease unaccounted for."""
    from conjure_actors.clients.errors import OutcomeUnknownError

    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=30.0) as rig:
        rc = rig.ctx.runcomfy
        real_launch = rc.launch
        landed: list[str] = []

        async def lands_after_the_timeout(*args: Any) -> Any:
            rc.launch = real_launch
            body = json.dumps(
                {
                    "workflow_version_id": args[0],
                    "server_type": args[1],
                    "estimated_duration": args[2],
                }
            ).encode()

            async def lands_late() -> None:
                await trio.sleep(8)
                landed.append(rig.sim._launch(body)["server_id"])

            rig.sim._nursery.start_soon(lands_late)
            raise OutcomeUnknownError("RunComfy launch: no answer within 30 s")

        rc.launch = lands_after_the_timeout
        j = await rig.job()
        with trio.fail_after(600):
            lease = await (await rig.ask_lease(j)).wait()
        (orphan,) = landed
        assert lease.server_id == orphan
        assert rig.state.machines[orphan].adopted
        assert rig.events(ev.MachineLaunchFailed) == []
        await rig.release(orphan, j)
        await trio.sleep(120)
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_launch_of_unknown_outcome_that_never_landed_is_closed_after_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No server ever appears for an intent of unknown outcome: it is closed once
    ``LAUNCH_LAND_GRACE`` has passed (not left open forever), and the job gets a machine
    from a new launch."""
    from conjure_actors.clients.errors import OutcomeUnknownError
    from conjure_actors.domain.machines_policy import LAUNCH_LAND_GRACE

    async with pool_rig(lease_seconds=600.0, max_machines=1) as rig:
        rc = rig.ctx.runcomfy
        real_launch = rc.launch

        async def lost(*args: Any) -> Any:
            rc.launch = real_launch
            raise OutcomeUnknownError("RunComfy launch: no answer within 30 s")

        rc.launch = lost
        j = await rig.job()
        t0 = rig.ctx.now()
        with trio.fail_after(3600):
            lease = await (await rig.ask_lease(j)).wait()
        (closed,) = rig.events(ev.MachineLaunchFailed)
        assert closed.reason == "no server found for this launch"
        assert closed.at - t0 >= LAUNCH_LAND_GRACE
        assert rig.state.launch_requests == {}
        assert lease.server_id in rig.sim.running()


async def test_an_intent_left_by_a_crash_adopts_a_server_listed_soon_after_the_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An intent left by a crashed run (its POST reached RunComfy just before the crash)
    whose server is not listed at the first look: kept open for ``NOT_VISIBLE_GRACE``, so
    the server listed 20 s later is adopted (and stopped as idle), not orphaned."""
    body = b'{"workflow_version_id": "v1", "server_type": "medium", "estimated_duration": 600}'
    async with pool_rig(idle_timeout=30.0) as rig:
        await rig.ctx.emit(
            ev.MachineLaunchRequested(
                request_key="k1",
                server_type="medium",
                workflow_version="v1",
                estimated_duration=600,
                at=rig.ctx.now(),
            )
        )
        await rig.poll()
        assert "k1" in rig.state.launch_requests
        await trio.sleep(20)
        sid = rig.sim._launch(body)["server_id"]
        await trio.sleep(300)
        assert rig.state.machines[sid].request_key == "k1"
        assert rig.state.launch_requests == {}
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_an_open_launch_intent_leaves_another_clients_machine_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An open launch intent (its POST never reached RunComfy) and, on the same account,
    a machine of the same type and version that another client launched: the intent's
    marker (its ``estimated_duration``) is not that machine's, so it is neither adopted
    nor stopped; the intent is closed after its grace."""
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        body = b'{"workflow_version_id": "v1", "server_type": "medium", "estimated_duration": 600}'
        foreign = rig.sim._launch(body)["server_id"]
        await rig.ctx.emit(
            ev.MachineLaunchRequested(
                request_key="k1",
                server_type="medium",
                workflow_version="v1",
                estimated_duration=583,
                at=rig.ctx.now(),
            )
        )
        await rig.poll()
        await trio.sleep(300)
        assert foreign not in rig.state.machines
        assert foreign in rig.sim.running()
        assert rig.state.launch_requests == {}


async def test_a_launch_asks_for_its_lease_marked_by_a_few_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pool's launch asks for its lease less a few seconds (its marker), logged in
    its intent and echoed by the server."""
    async with pool_rig(lease_seconds=600.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        (intent,) = rig.events(ev.MachineLaunchRequested)
        assert 600 - policy.LAUNCH_MARKER_SPREAD < intent.estimated_duration <= 600
        server = await rig.ctx.runcomfy.status(lease.server_id)
        assert server.estimated_duration == intent.estimated_duration


def _first_stop_does_not_take(rig: Any) -> list[int]:
    """The rig's first DELETE answers 200 with the server object still Ready (it did not
    take); later ones stop for real. Returns the count of DELETEs sent, kept up to date."""
    rc = rig.ctx.runcomfy
    real_stop = rc.stop
    calls = [0]

    async def stop_that_does_not_take(server_id: str, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > 1:
            return await real_stop(server_id, **kwargs)
        return await rc.status(server_id)

    rc.stop = stop_that_does_not_take
    return calls


async def test_a_machine_still_listed_up_after_its_delete_answered_is_stopped_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The DELETE answers 200 but the machine stays up (listed Ready, billing): the
    listings after a stop see it and send a DELETE again."""
    async with pool_rig(idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        calls = _first_stop_does_not_take(rig)
        await rig.release(lease.server_id, j)
        await trio.sleep(300)
        assert calls == [2]
        assert rig.sim.running() == []
        assert rig.state.machines[lease.server_id].status == "stopped"


async def test_a_machine_stopped_again_is_billed_until_the_second_delete_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The DELETE answers 200 but the machine stays listed Ready, billing, until the
    DELETE sent again: the logged bill ends at that second answer (MachineStoppedAgain),
    so the ledger and the cost so far equal the cloud's bill, not the first answer's."""
    from conjure_actors.domain import cost_policy

    async with pool_rig(idle_timeout=30.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        calls = _first_stop_does_not_take(rig)
        await rig.release(lease.server_id, j)
        await trio.sleep(300)
        assert calls == [2]
        (first,) = rig.events(ev.MachineStopped)
        (again,) = rig.events(ev.MachineStoppedAgain)
        assert again.stopped_at > first.stopped_at
        assert again.cost_micros > first.cost_micros
        assert rig.ledger_matches_sim(), rig.sim.billing()
        bill = sum(b.cost_micros for b in rig.sim.billing())
        assert rig.state.ledger.total_micros == bill
        assert cost_policy.spent_micros(rig.state, rig.ctx.now()) == bill


async def test_the_stop_deadline_names_a_launch_still_waiting_for_its_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The stop of every machine reaches ``stop_patience`` while a ``POST /servers`` still
    waits for its answer (the cloud started the machine): the reply, which run and serve
    print as what may still be running, names that launch."""
    async with pool_rig(stop_patience=120.0) as rig:
        rc = rig.ctx.runcomfy
        launch = rc.launch

        async def slow_answer(*args: Any) -> Any:
            server = await launch(*args)  # the cloud has started it...
            await trio.sleep(3600)  # ...the answer is very late
            return server

        rc.launch = slow_answer
        j = await rig.job()
        await rig.ask_lease(j)
        await trio.testing.wait_all_tasks_blocked()
        await rig.cancel(j)
        left = await rig.stop_all("interrupted")
        (key,) = rig.state.launch_requests
        assert left == [f"a launch without answer ({key[:8]})"]
        assert rig.pool.launches_unanswered() == left


async def test_two_open_intents_of_an_old_log_adopt_their_two_servers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A log written before the launch marker: every intent asked for the plain lease. The
    run crashed with two launches whose POSTs reached RunComfy; both servers are listed at
    the resume. Each is ours (one per intent): both are adopted, then stopped as idle, not
    left billing as 'not provably ours'."""
    body = b'{"workflow_version_id": "v1", "server_type": "medium", "estimated_duration": 600}'
    async with pool_rig(idle_timeout=30.0, lease_seconds=600.0) as rig:
        s1 = rig.sim._launch(body)["server_id"]
        s2 = rig.sim._launch(body)["server_id"]
        for key in ("k1", "k2"):
            await rig.ctx.emit(
                ev.MachineLaunchRequested(
                    request_key=key,
                    server_type="medium",
                    workflow_version="v1",
                    estimated_duration=600,
                    at=rig.ctx.now(),
                )
            )
        await rig.poll()
        await trio.sleep(300)
        assert s1 in rig.state.machines
        assert s2 in rig.state.machines
        assert rig.sim.running() == []


async def test_a_delete_that_did_not_take_during_the_stop_of_every_machine_is_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At the stop of every machine (how every run ends) a DELETE answers 200 but the
    machine stays Ready: the reply waits for a listing to show it going, so the recheck
    sends the DELETE again (or the reply names it), never 'nothing left' over a billing
    machine."""
    async with pool_rig(idle_timeout=3600.0, stop_patience=120.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        calls = _first_stop_does_not_take(rig)
        left = await rig.stop_all("shutdown")
        # What run/serve print as "may still be running" when they exit:
        assert left != [] or rig.sim.running() == [], (left, rig.sim.running(), calls)
        assert calls == [2]  # the confirming listing saw it up: DELETE sent again


async def test_a_launch_in_flight_when_the_machine_actor_crashes_does_not_pass_max_machines(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MachineActor crashes while a POST /servers is on the wire (the cloud already
    started the machine; the crashed incarnation's child and its answer are gone): the
    next incarnation launches no second machine for the same demand (max_machines=1)."""
    from conjure_actors.actors import pool as pool_mod

    async with pool_rig(max_machines=1, lease_seconds=600.0) as rig:
        rc = rig.ctx.runcomfy
        real_launch = rc.launch
        calls = 0

        async def slow_answer(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            server = await real_launch(*args)  # the cloud has started it...
            if calls == 1:
                await trio.sleep(20)  # ...its answer is still on the wire
            return server

        rc.launch = slow_answer
        real_assign = pool_mod.MachineActor._assign
        armed = [True]

        async def assign(self: Any) -> None:
            if armed[0] and self._launching and calls == 1:
                armed[0] = False
                await trio.sleep(5)
                raise RuntimeError("injected crash of the MachineActor")
            await real_assign(self)

        monkeypatch.setattr(pool_mod.MachineActor, "_assign", assign)
        j = await rig.job()
        first = await rig.ask_lease(j)
        with trio.fail_after(900):
            await first.wait()
        await trio.sleep(120)
        assert calls == 1, f"{calls} launches for one job with max_machines=1"
        assert len(rig.sim.billing()) <= 1, rig.sim.billing()


async def test_the_stop_of_every_machine_is_answered_once_a_listing_shows_the_stops_took(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The stop's reply waits for a listing to confirm each DELETE's 200: one listing, not
    ``stop_patience`` (a run's exit waits for it)."""
    async with pool_rig(stop_patience=600.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        start = trio.current_time()
        assert await rig.stop_all() == []
        assert trio.current_time() - start < 30.0
        assert rig.sim.running() == []


@pytest.mark.parametrize("unlisted_for", [90.0, 450.0])
async def test_a_machine_lost_while_not_listed_yet_that_shows_up_later_is_stopped(
    autojump_clock: trio.testing.MockClock, unlisted_for: float
) -> None:
    """A new machine missing from the listings past NOT_VISIBLE_GRACE is taken for lost
    (another is launched for the job); when a listing shows it after all (up, billing), it
    is stopped, not left billing until its lease ends, and the ledger equals the bill. At
    450 s nothing else is watched any more (the job's machine stopped idle, its stop
    checked): the listings go on for the lost machine all the same."""
    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, unlisted_for)
        j = await rig.job()
        with trio.fail_after(600):
            lease = await (await rig.ask_lease(j)).wait()
        (first,) = late
        assert lease.server_id != first
        assert rig.state.machines[first].lost_reason == "vanished (404)"
        await rig.release(lease.server_id, j)
        await trio.sleep_until(late[first] + 30.0)  # its lease (600 s) still runs
        assert first not in rig.sim.running()
        await trio.sleep(60)
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()
        assert rig.state.machines[first].cost_micros > 0  # it did bill, from its Ready
        assert rig.state.anomalies == []


def _lost_first_launch(rig: Any, unlisted_for: float) -> dict[str, float]:
    """The rig's first launch is missing from the listings for ``unlisted_for`` s, its
    lookup (``GET /servers/{id}``) answering 404 too (so it is taken for lost past
    NOT_VISIBLE_GRACE), then listed up: its id -> when it shows up."""
    from conjure_actors.clients.errors import ServerNotFoundError

    rc = rig.ctx.runcomfy
    real_launch, real_list, real_status = rc.launch, rc.list_servers, rc.status
    late: dict[str, float] = {}

    async def launch(*args: Any) -> Any:
        server = await real_launch(*args)
        if not late:
            late[server.server_id] = trio.current_time() + unlisted_for
        return server

    async def lagging_listing() -> Any:
        now = trio.current_time()
        return [s for s in await real_list() if late.get(s.server_id, 0.0) <= now]

    async def lagging_status(server_id: str) -> Any:
        if late.get(server_id, 0.0) > trio.current_time():
            raise ServerNotFoundError(f"server {server_id} not found (HTTP 404)", status=404)
        return await real_status(server_id)

    rc.launch, rc.list_servers, rc.status = launch, lagging_listing, lagging_status
    return late


async def _run_one_job_on_the_second_machine(rig: Any, late: dict[str, float]) -> str:
    """One job: its first machine is taken for lost, it runs on the second, released."""
    j = await rig.job()
    with trio.fail_after(600):
        lease = await (await rig.ask_lease(j)).wait()
    (first,) = late
    assert rig.state.machines[first].lost_reason == "vanished (404)"
    await rig.release(lease.server_id, j)
    return first


async def test_a_lost_machine_found_up_then_gone_at_its_delete_is_billed_past_its_loss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found up 450 s after its loss, it went (404) before our DELETE arrived: it billed at
    least until the listing that showed it up, so the bill of its loss (0: never Ready in
    the log) is replaced by one from that listing's Ready time to the DELETE's answer."""
    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 450.0)
        rc = rig.ctx.runcomfy
        real_stop = rc.stop

        async def stop(server_id: str, *, missing_ok: bool = False) -> Any:
            if server_id in late:  # it stopped by itself just before our DELETE: 404
                await real_stop(server_id, missing_ok=True)
                return None
            return await real_stop(server_id, missing_ok=missing_ok)

        rc.stop = stop
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep_until(late[first] + 90.0)
        assert rig.sim.running() == []
        assert rig.state.machines[first].cost_micros > 0
        assert rig.ledger_matches_sim()
        assert rig.state.anomalies == []


async def test_a_lost_machine_found_up_whose_stop_fails_once_is_stopped_at_the_next_listing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Its DELETE fails once with an error waiting does not cure (409): the listings go on
    for it (nothing else is watched by then) and the next one sends the DELETE again; it
    is not left billing until its lease ends, and the ledger equals the bill."""
    from conjure_actors.clients.errors import ClientError

    async with pool_rig(lease_seconds=3600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 450.0)
        rc = rig.ctx.runcomfy
        real_stop = rc.stop
        failed: list[str] = []

        async def stop(server_id: str, *, missing_ok: bool = False) -> Any:
            if server_id in late and not failed:
                failed.append(server_id)
                raise ClientError("409 conflict", status=409)
            return await real_stop(server_id, missing_ok=missing_ok)

        rc.stop = stop
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep_until(late[first] + 120.0)  # well within its 3600 s lease
        assert failed == [first]
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_lost_machine_found_up_whose_delete_does_not_take_is_stopped_again_and_replays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """lost -> found up, DELETE 200 that does not take -> stopped again: the ledger, the
    spend and a replay of the log equal the cloud's bill, and no anomaly."""
    from conjure_actors.domain import cost_policy
    from conjure_actors.domain.state import apply, initial_state

    async with pool_rig(lease_seconds=3600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 450.0)
        rc = rig.ctx.runcomfy
        real_stop = rc.stop
        calls: list[str] = []

        async def stop(server_id: str, *, missing_ok: bool = False) -> Any:
            if server_id in late:
                calls.append(server_id)
                if len(calls) == 1:
                    return await rc.status(server_id)  # 200, did not take
            return await real_stop(server_id, missing_ok=missing_ok)

        rc.stop = stop
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep_until(late[first] + 900.0)
        assert calls == [first, first]
        assert rig.sim.running() == []
        assert rig.events(ev.MachineStoppedAgain)
        assert rig.ledger_matches_sim()
        bill = sum(b.cost_micros for b in rig.sim.billing())
        assert cost_policy.spent_micros(rig.state, rig.ctx.now()) == bill
        replayed = initial_state()
        for r in rig.log.records():
            replayed = apply(replayed, r.event) or replayed
        assert replayed.ledger.total_micros == rig.state.ledger.total_micros == bill
        assert rig.state.anomalies == []
        assert replayed.anomalies == []


async def test_stop_all_waits_for_the_stop_of_a_lost_machine_found_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every machine is to stop (the run's end) while the DELETE of a lost machine found up
    is on its way (a slow gateway): the stop-all reply ("none left billing") waits for it,
    and the machine is stopped."""
    async with pool_rig(lease_seconds=3600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 450.0)
        rc = rig.ctx.runcomfy
        real_stop = rc.stop
        deleting = trio.Event()

        async def stop(server_id: str, *, missing_ok: bool = False) -> Any:
            if server_id in late:
                deleting.set()
                await trio.sleep(20)
            return await real_stop(server_id, missing_ok=missing_ok)

        rc.stop = stop
        first = await _run_one_job_on_the_second_machine(rig, late)
        with trio.fail_after(900):
            await deleting.wait()
        assert first in rig.pool.still_running()
        assert await rig.stop_all() == []
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_lost_machine_whose_stop_gave_up_and_that_went_since_does_not_hold_stop_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The DELETE of a lost machine found up gave up (409), then the machine went (its
    lease ran out, someone stopped it): the next listing shows it gone, so the stop-all
    reply does not wait ``stop_patience`` for it nor name it as still billing."""

    async with pool_rig(
        lease_seconds=3600.0, max_machines=1, idle_timeout=5.0, stop_patience=600.0
    ) as rig:
        first = await found_up_stop_gives_up_then_it_goes(rig)
        start = trio.current_time()
        assert await rig.stop_all() == []
        assert trio.current_time() - start < 60.0
        assert first not in rig.pool.still_running()


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_lost_machine_found_up_after_a_restart_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A crash + --resume after a machine was taken for lost: ``lost_watch`` is memory only
    (a new MachinePool starts with it empty: emulated by clearing it before the resume's
    Reconcile); the reconcile watches the log's losses that may still bill again, so a
    listing that shows it up later stops it, and the ledger equals the bill."""
    from conjure_actors.actors.messages import Reply
    from conjure_actors.actors.pool import Reconcile

    async with pool_rig(lease_seconds=3600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 900.0)
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep(400)  # the job's machine stopped idle, its stop checked
        rig.pool.lost_watch.clear()  # what a restarted run has in memory
        reply: Reply[None] = Reply()
        await rig.machines.tell(Reconcile(reply))
        with trio.fail_after(60):
            await reply.wait()
        assert first in rig.pool.lost_watch
        await trio.sleep_until(late[first] + 120.0)  # well within its 3600 s lease
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()


async def test_a_lost_machine_listed_up_at_the_resume_is_stopped_by_the_reconcile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Already listed up when the run resumes: the reconcile's own listing stops it."""
    from conjure_actors.actors.messages import Reply
    from conjure_actors.actors.pool import Reconcile

    async with pool_rig(lease_seconds=3600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 500.0)
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep_until(late[first] - 1.0)
        rig.pool.lost_watch.clear()  # what a restarted run has in memory
        await trio.sleep(2.0)  # listed up now; nothing watched: no listing but the reconcile's
        assert not rig.pool.recheck
        assert not rig.state.launch_requests
        assert not policy.paid_machines(rig.state)
        reply: Reply[None] = Reply()
        await rig.machines.tell(Reconcile(reply))
        with trio.fail_after(60):
            await reply.wait()
        await trio.sleep(30)
        assert first not in rig.sim.running()


async def test_a_resume_watches_a_machine_the_log_has_lost_without_its_bill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A log whose lost machine has no MachineStopped after its MachineLost (status "lost",
    not "stopped": a crash between the two, or an older log) may still bill: the resume
    watches it too."""
    from conjure_actors.actors.messages import Reply
    from conjure_actors.actors.pool import Reconcile

    async with pool_rig(lease_seconds=3600.0) as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        sid = lease.server_id
        await rig.ctx.emit(ev.MachineLost(server_id=sid, reason="vanished (404)", at=rig.ctx.now()))
        assert rig.state.machines[sid].status == "lost"
        reply: Reply[None] = Reply()
        await rig.machines.tell(Reconcile(reply))
        with trio.fail_after(60):
            await reply.wait()
        await trio.sleep(30)
        assert sid not in rig.sim.running()


def _listed_starting_then_gone_at_its_delete(rig: Any, late: dict[str, float]) -> dict[str, Any]:
    """The lost machine is listed ``Starting`` without a Ready time (as a listing may show
    one on its way up), and goes (404) just before our DELETE: its final record as
    ``GET /servers/{id}`` read it then -> the dict returned (filled at the DELETE)."""
    import attrs

    rc = rig.ctx.runcomfy
    real_list, real_stop, real_status = rc.list_servers, rc.stop, rc.status
    records: dict[str, Any] = {}

    async def listing() -> Any:
        return [
            attrs.evolve(s, status="Starting", service_ready_at=None, estimated_stopping_at=None)
            if s.server_id in late
            else s
            for s in await real_list()
        ]

    async def stop(server_id: str, *, missing_ok: bool = False) -> Any:
        if server_id in late:  # it stopped by itself just before our DELETE: 404
            records[server_id] = await real_status(server_id)
            await real_stop(server_id, missing_ok=True)
            return None
        return await real_stop(server_id, missing_ok=missing_ok)

    rc.list_servers, rc.stop = listing, stop
    return records


async def test_a_lost_machine_listed_starting_then_gone_at_its_delete_is_billed_from_its_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found up 450 s after its loss, listed Starting (no Ready time), it went (404) before
    our DELETE arrived: it had become Ready and billed. Its final record (GET) gives the
    Ready time its bill starts from, not 0; the ledger equals the simulator's bill."""
    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 450.0)
        records = _listed_starting_then_gone_at_its_delete(rig, late)
        rc = rig.ctx.runcomfy
        real_status = rc.status

        async def status(server_id: str) -> Any:
            if server_id in records:  # RunComfy still has the record of the gone machine
                return records[server_id]
            return await real_status(server_id)

        rc.status = status
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep_until(late[first] + 90.0)
        assert first in records
        assert rig.sim.running() == []
        assert rig.state.machines[first].cost_micros > 0
        assert rig.ledger_matches_sim()
        assert rig.state.anomalies == []


async def test_a_lost_machine_listed_starting_gone_with_its_record_keeps_its_bill_and_warns(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The same, but its final record is gone too (404 to the GET): nothing tells when it
    became Ready, so its bill stays the one its loss wrote (0), and a warning says it may
    have billed."""
    from conjure_actors.clients.errors import ServerNotFoundError

    async with pool_rig(lease_seconds=600.0, max_machines=1, idle_timeout=5.0) as rig:
        late = _lost_first_launch(rig, 450.0)
        records = _listed_starting_then_gone_at_its_delete(rig, late)
        rc = rig.ctx.runcomfy
        real_status = rc.status

        async def status(server_id: str) -> Any:
            if server_id in records:  # its record went with it
                raise ServerNotFoundError(f"status of server {server_id}: 404")
            return await real_status(server_id)

        rc.status = status
        first = await _run_one_job_on_the_second_machine(rig, late)
        await trio.sleep_until(late[first] + 90.0)
        assert first in records
        assert rig.sim.running() == []
        assert rig.state.machines[first].cost_micros == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(first in w and "no final record" in w for w in warned), warned


async def found_up_stop_gives_up_then_it_goes(rig: Any) -> str:
    """The rig's first launch is taken for lost, then listed up (after 450 s); its DELETE
    gives up (409), then it goes by itself. Its id, once it went."""
    from conjure_actors.clients.errors import ClientError

    late = _lost_first_launch(rig, 450.0)
    rc = rig.ctx.runcomfy
    real_stop = rc.stop
    failed = trio.Event()

    async def stop(server_id: str, *, missing_ok: bool = False) -> Any:
        if server_id in late:
            failed.set()
            raise ClientError("409 conflict", status=409)
        return await real_stop(server_id, missing_ok=missing_ok)

    rc.stop = stop
    first = await _run_one_job_on_the_second_machine(rig, late)
    with trio.fail_after(900):
        await failed.wait()
    await trio.sleep(1)
    await real_stop(first, missing_ok=True)  # it goes by itself
    return first
