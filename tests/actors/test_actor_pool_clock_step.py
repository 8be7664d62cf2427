"""The grace a machine not listed yet gets after its launch (NOT_VISIBLE_GRACE) is counted
from its logged launch (``MachineLaunched.at``, the wall clock) since a restart must not
grant it anew: a step of the wall clock (NTP, a suspended VM, a log resumed on a machine
whose clock differs) must neither stretch that grace without bound nor end it at once."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from test_actor_pool import Rig, pool_rig
from test_actor_pool_landing_grace import _launch_for_a_job, _lost, _restart

from conjure_actors.domain import events as ev


def _step_clock(rig: Rig, seconds: float) -> None:
    """The wall clock of the run jumps by ``seconds`` (trio's clock does not)."""
    rig.ctx.wall._epoch += seconds  # type: ignore[attr-defined]


def _launched(rig: Rig) -> list[Any]:
    return [r.event for r in rig.log.records() if isinstance(r.event, ev.MachineLaunched)]


async def test_a_clock_stepped_forward_right_after_a_launch_does_not_lose_the_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The wall clock steps an hour forward seconds after a launch, while the listing still
    lags (the machine is fine, listed 20 s later). The grace counted from the logged launch
    had run out at once: the machine was taken for lost and the job's lease went to a
    second machine."""
    async with pool_rig(max_machines=1, ready_delay=60.0) as rig:
        reply, sid, hidden = await _launch_for_a_job(rig)
        hidden.add(sid)
        _step_clock(rig, 3600.0)
        await trio.sleep(20)  # the listing catches up within the grace
        hidden.clear()
        with trio.fail_after(600):
            lease = await reply.wait()
        assert lease.server_id == sid
        assert _lost(rig) == []
        assert len(_launched(rig)) == 1


async def test_a_clock_stepped_back_before_a_restart_still_loses_an_unlisted_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Launched, the wall clock steps an hour back, the actor restarts, and the machine
    never shows in a listing (gone). Counted from the logged launch, "now - launched" stayed
    negative: the machine was 'landing' for an hour, and the job waited on it. It must be
    lost within the grace (from the restart, at the latest) and the job served by another."""
    async with pool_rig(max_machines=1, ready_delay=60.0) as rig:
        reply, sid, hidden = await _launch_for_a_job(rig)
        hidden.add(sid)
        _step_clock(rig, -3600.0)
        await _restart(rig)
        with trio.fail_after(300):  # the grace (60 s), a ready delay (60 s), polls
            lease = await reply.wait()
        assert lease.server_id != sid
        (lost,) = _lost(rig)
        assert lost.server_id == sid
