"""Launching stopped on launch failures, then by the budget, then the budget raised: the
next job launches (it failed at once with the old launch failures' reason: their count
outlived the budget's stop), and the health probe's launch problem is not said meanwhile
(the budget's stop is said its own way) (review, session 27)."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.actors.messages import LeaseFailedError, ResumeLaunching, StopLaunching
from conjure_actors.sim.runcomfy import RunComfyFaults


async def test_launch_problem_is_cleared_once_launching_goes_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the budget's resume the first job gets a machine; the problem said last is none."""
    async with pool_rig(
        faults=RunComfyFaults(launch_error_rate=1.0), max_machines=1, max_launch_attempts=2
    ) as rig:
        said: list[str | None] = []
        rig.pool.on_launching = said.append
        reply = await rig.ask_lease(await rig.job())
        with trio.fail_after(3600), pytest.raises(LeaseFailedError):
            await reply.wait()
        assert said
        assert said[-1] is not None
        rig.sim.faults = attrs.evolve(rig.sim.faults, launch_error_rate=0.0)
        await rig.machines.tell(StopLaunching("budget"))
        await rig.machines.tell(ResumeLaunching("budget"))  # budget raised
        launches = len(rig.sim.billing())
        reply = await rig.ask_lease(await rig.job())
        try:
            with trio.fail_after(3600):
                await reply.wait()
            first = "leased"
        except LeaseFailedError as exc:
            first = f"failed: {exc}"
        assert first == "leased"
        assert len(rig.sim.billing()) - launches == 1
        assert said[-1] is None
