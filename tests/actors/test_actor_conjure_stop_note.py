"""The one line a run whose actor system failed leaves (``_stop_after_failure``)."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.domain import events as ev


async def test_the_note_of_a_failed_run_names_launches_without_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The actor system failed with a launch intent open: the run's one line says a
    launch may have started a machine (its stop is for ``--resume``)."""
    from conjure_actors.actors.conjure import _stop_after_failure

    async with pool_rig() as rig:
        await rig.ctx.emit(
            ev.MachineLaunchRequested(
                request_key="k1",
                server_type="medium",
                workflow_version="v1",
                estimated_duration=600,
                at=rig.ctx.now(),
            )
        )
        note = str(await _stop_after_failure(rig.ctx, RuntimeError("boom")))
    assert note.endswith("1 launch without answer may have started a machine (--resume stops it)")
