"""The CostActor's budget rule acts on an excess until it went through: a stop of every
machine that failed once (the CostActor crashed with it) is done by the next accrual."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import pool_rig

from conjure_actors.actors import cost as cost_mod
from conjure_actors.runtime.errors import ActorError, MailboxFullError


async def test_a_budget_stop_that_failed_once_is_done_by_the_next_accrual(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``on_exceeded`` fails once (a full mailbox): the excess is not marked handled, so
    the restarted CostActor stops every machine at its next accrual, not never."""
    real_init = cost_mod.Ledger.__init__
    calls: list[str] = []

    def init(self: Any, ctx: Any, *, on_exceeded: Any, on_lifted: Any = None) -> None:
        async def fails_once(reason: str) -> None:
            calls.append(reason)
            if len(calls) == 1:
                raise MailboxFullError("mailbox of actor /machines is full")
            await on_exceeded(reason)

        real_init(self, ctx, on_exceeded=fails_once, on_lifted=on_lifted)

    monkeypatch.setattr(cost_mod.Ledger, "__init__", init)
    async with pool_rig(idle_timeout=3600.0, lease_seconds=3600.0) as rig:
        j = await rig.job()
        await rig.lease(j)  # busy: its job holds it
        await trio.sleep(60)
        with pytest.raises(ActorError):  # the CostActor crashed on the failed stop
            await rig.cost.ask(cost_mod.SetBudget(0.001), timeout=60)
        await trio.sleep(600)
        assert rig.state.budget.exceeded
        assert len(calls) == 2
        assert rig.sim.running() == []
        assert rig.ledger_matches_sim()
