"""Launching stopped because launches kept failing is not for ever: the jobs waiting then
fail, saying how the last boot ended, and the next job queued launches again (``serve``
lives on past a cloud's bad hour; it refused every job until restarted). Launching stopped
by the budget or by the run's stop stays stopped."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

from conjure_actors.actors.messages import LeaseFailedError, StopLaunching
from conjure_actors.sim.runcomfy import RunComfyFaults


async def _fails(rig: Rig, job: str) -> LeaseFailedError:
    reply = await rig.ask_lease(job)
    with trio.fail_after(3600), pytest.raises(LeaseFailedError) as info:
        await reply.wait()
    return info.value


async def test_after_boots_in_error_the_next_job_launches_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three boots end in Error: the waiting job fails, naming how the last one ended; the
    cloud heals; the next job gets a machine (before, it failed at once, for ever)."""
    async with pool_rig(
        faults=RunComfyFaults(launch_error_rate=1.0), max_machines=1, max_launch_attempts=3
    ) as rig:
        error = await _fails(rig, await rig.job())
        assert "3 launches in a row never became Ready" in str(error)
        assert "ended in status Error" in str(error)
        assert len(rig.sim.billing()) == 3
        rig.sim.faults = attrs.evolve(rig.sim.faults, launch_error_rate=0.0)
        j = await rig.job()
        with trio.fail_after(3600):
            lease = await rig.lease(j)
        assert lease.server_id in rig.sim.running()
        await rig.release(lease.server_id, j)


async def test_while_boots_keep_failing_each_new_job_fails_after_its_own_tries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The cloud stays broken: a job queued after the stop tries a new series of
    ``max_launch_attempts`` boots (unbilled: none became Ready) and fails saying so."""
    async with pool_rig(
        faults=RunComfyFaults(launch_error_rate=1.0), max_machines=1, max_launch_attempts=2
    ) as rig:
        await _fails(rig, await rig.job())
        assert len(rig.sim.billing()) == 2
        error = await _fails(rig, await rig.job())
        assert "2 launches in a row never became Ready" in str(error)
        assert len(rig.sim.billing()) == 4
        assert all(b.cost_micros == 0 for b in rig.sim.billing())


async def test_launching_stopped_by_the_budget_stays_stopped_for_a_new_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The budget's stop is lifted by the budget only: a new job launches nothing."""
    async with pool_rig(max_machines=1) as rig:
        await rig.machines.tell(StopLaunching("budget"))
        error = await _fails(rig, await rig.job())
        assert "budget" in str(error)
        assert rig.sim.billing() == []


async def test_the_runs_own_stop_says_nothing_of_launches_stopping(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop at a run's end stops launching without the launch failures' line (it was
    printed at the end of every run)."""
    async with pool_rig() as rig:
        j = await rig.job()
        lease = await rig.lease(j)
        await rig.release(lease.server_id, j)
        await rig.stop_all("done")
    assert "launching stopped" not in caplog.text
