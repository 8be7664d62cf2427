"""A launch RunComfy answers with a 5xx (in milliseconds) waits for a listing to show what it
may have started only as long as the listing's lag, not the 180 s a lost answer needs (QA,
session 27, F3: one 5xx stalled every queued job for three minutes, with one unclear line);
and a machine it did start that shows up later still is adopted and, unneeded, stopped while
Starting (unbilled)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.clients.errors import ServerNotFoundError
from conjure_actors.domain import events as ev
from conjure_actors.domain.machines_policy import LAUNCH_LAND_GRACE, NOT_VISIBLE_GRACE
from conjure_actors.sim.runcomfy import RunComfyFaults


def _first_launch_faulty(rig: Rig, faults: RunComfyFaults, hide: set[str] | None = None) -> None:
    """The first ``POST /servers`` meets ``faults`` on the simulator; the later ones none.
    ``hide``: the server it starts, if any, is added to it (see _hide_from_listings)."""
    rc = rig.ctx.runcomfy
    real_launch = rc.launch

    async def launch(*args: Any) -> Any:
        rc.launch = real_launch
        rig.sim.faults = faults
        try:
            return await real_launch(*args)
        finally:
            rig.sim.faults = RunComfyFaults()
            if hide is not None:
                hide.update(b.server_id for b in rig.sim.billing())

    rc.launch = launch


def _hide_from_listings(rig: Rig) -> set[str]:
    """The servers in the returned set are left out of every listing and lookup (RunComfy's
    listing lag)."""
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


async def test_a_launch_answered_5xx_waits_only_the_listing_lag(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """RunComfy answers the launch 500 and starts nothing: the intent is closed once no
    listing has shown a server for NOT_VISIBLE_GRACE (not LAUNCH_LAND_GRACE), a machine is
    launched again, the job gets it; the line says what RunComfy answered and how long the
    jobs wait."""
    caplog.set_level(logging.WARNING, logger="conjure_actors.actors.pool")
    async with pool_rig(max_machines=1, poll_interval=5.0) as rig:
        _first_launch_faulty(rig, RunComfyFaults(launch_reject_rate=1.0))
        j = await rig.job()
        t0 = rig.ctx.now()
        with trio.fail_after(3600):
            lease = await (await rig.ask_lease(j)).wait()
        (closed,) = rig.events(ev.MachineLaunchFailed)
        assert closed.reason == "no server found for this launch"
        assert NOT_VISIBLE_GRACE <= closed.at - t0 < NOT_VISIBLE_GRACE + 10 < LAUNCH_LAND_GRACE
        assert len(rig.events(ev.MachineLaunchRequested)) == 2
        assert lease.server_id in rig.sim.running()
    (line,) = [r.getMessage() for r in caplog.records if "launch" in r.getMessage()]
    assert "RunComfy answered HTTP 500 to launch" in line
    assert "it may have started a machine" in line
    assert f"wait up to {NOT_VISIBLE_GRACE:g} s" in line


async def test_a_machine_a_5xx_launch_started_that_is_listed_late_is_stopped_unbilled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RunComfy answers the launch 502 yet starts the machine, which no listing shows for
    90 s (past the shorter grace): a machine is launched again for the job meanwhile, and
    the late one, adopted while Starting and needed by no job, is stopped unbilled."""
    async with pool_rig(max_machines=1, ready_delay=120.0, idle_timeout=30.0) as rig:
        hidden = _hide_from_listings(rig)
        _first_launch_faulty(rig, RunComfyFaults(launch_ghost_rate=1.0), hidden)
        j = await rig.job()
        reply = await rig.ask_lease(j)
        await trio.sleep(90)
        (ghost,) = hidden
        assert len(rig.events(ev.MachineLaunchRequested)) == 2
        hidden.clear()
        with trio.fail_after(3600):
            lease = await reply.wait()
        assert lease.server_id != ghost
        assert rig.state.machines[ghost].adopted
        (stopping,) = [e for e in rig.events(ev.MachineStopping) if e.server_id == ghost]
        assert stopping.reason == "surplus"
        await rig.release(lease.server_id, j)
        await trio.sleep(120)
        assert rig.sim.running() == []
        assert rig.state.machines[ghost].cost_micros == 0
        assert rig.ledger_matches_sim()


async def test_a_machine_a_5xx_launch_started_listed_late_past_max_machines_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As above with two jobs and ``max_machines=1``: both jobs still wait when the late
    machine is listed, yet with the replacement it would make two machines: it is stopped
    while Starting (unbilled), and the cap holds."""
    async with pool_rig(max_machines=1, ready_delay=120.0, idle_timeout=30.0) as rig:
        hidden = _hide_from_listings(rig)
        _first_launch_faulty(rig, RunComfyFaults(launch_ghost_rate=1.0), hidden)
        jobs = [await rig.job(), await rig.job()]
        replies = [await rig.ask_lease(j) for j in jobs]
        await trio.sleep(90)
        (ghost,) = hidden
        hidden.clear()
        with trio.fail_after(3600):
            lease = await replies[0].wait()
        assert lease.server_id != ghost
        (adopted,) = [e for e in rig.events(ev.MachineAdopted) if e.server_id == ghost]
        (stopping,) = [e for e in rig.events(ev.MachineStopping) if e.server_id == ghost]
        assert (stopping.reason, stopping.at) == ("surplus", adopted.at)
        await rig.release(lease.server_id, jobs[0])
        with trio.fail_after(3600):
            second = await replies[1].wait()
        assert second.server_id == lease.server_id
        await rig.release(second.server_id, jobs[1])
        await trio.sleep(120)
        assert rig.sim.running() == []
        assert rig.state.machines[ghost].cost_micros == 0
        assert rig.ledger_matches_sim()
