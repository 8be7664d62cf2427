"""A start on a log with a budget changed at run time (PUT /api/conjure/budget): the same
--budget as the log's last start keeps it (a supervisor's restart must not undo the
operator's change), another --budget replaces it; a log that does not record its last
start's budget keeps the old rule (the flag wins, said). Each says so in one line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import msgspec
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import budget_micros
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply_all, initial_state, state_to_builtins

LOGGER = "conjure_actors.actors.conjure"


def _budget_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget:")]


@attrs.frozen
class _Restarts:
    """One simulated cloud and one log that runs start on, one after another."""

    cloud: Any
    log: eventlog.MemoryLog[Any]
    tmp_path: Path
    wall: TrioWallClock

    def run(
        self, budget: float | None = None, log: eventlog.MemoryLog[Any] | None = None
    ) -> AbstractAsyncContextManager[Any]:
        """A start with ``--budget budget`` (none: no flag) on the log (or on ``log``)."""
        config = sim_config(self.cloud) if budget is None else sim_config(self.cloud, budget=budget)
        return run_conjure(self.cloud, log or self.log, self.tmp_path, config, self.wall)

    async def started_then_lowered(self) -> None:
        """A run started with --budget 1.00 whose budget was lowered to 0.03 at run time."""
        async with self.run(budget=1.0) as conjure:
            await conjure.set_budget(0.03)  # PUT /api/conjure/budget


@asynccontextmanager
async def _restarts(tmp_path: Path) -> AsyncIterator[_Restarts]:
    wall = TrioWallClock()
    with trio.fail_after(600):
        async with open_test_cloud(wall.now) as cloud:
            yield _Restarts(cloud, eventlog.MemoryLog(Event), tmp_path, wall)


async def test_a_restart_with_the_same_budget_flag_keeps_the_budget_set_at_run_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """serve restarted with its usual --budget 1.00 keeps the $0.03 set at run time."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with r.run(budget=1.0) as conjure:
                assert conjure.state.budget.limit_micros == budget_micros(0.03)
    assert _budget_lines(caplog) == [
        "budget: keeping the $0.03 set at run time (PUT /api/conjure/budget); --budget 1.00"
        " is what this log was started with: pass a different --budget to replace it"
    ]


async def test_every_restart_with_the_same_budget_flag_keeps_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A second restart with the same --budget still keeps the run-time budget."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        async with r.run(budget=1.0):
            pass
        async with r.run(budget=1.0) as conjure:
            assert conjure.state.budget.limit_micros == budget_micros(0.03)


async def test_a_restart_with_the_same_budget_flag_keeps_no_limit_set_at_run_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A budget lifted at run time (PUT null) stays lifted across a restart, said."""
    async with _restarts(tmp_path) as r:
        async with r.run(budget=1.0) as conjure:
            await conjure.set_budget(None)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with r.run(budget=1.0) as conjure:
                assert conjure.state.budget.limit_micros is None
    assert _budget_lines(caplog) == [
        "budget: keeping no limit, as set at run time (PUT /api/conjure/budget); --budget"
        " 1.00 is what this log was started with: pass a different --budget to replace it"
    ]


async def test_a_restart_with_another_budget_flag_replaces_the_budget_set_at_run_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A --budget changed since the log's last start wins over the run-time budget."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with r.run(budget=0.5) as conjure:
                assert conjure.state.budget.limit_micros == budget_micros(0.5)
                assert conjure.state.budget.start_micros == budget_micros(0.5)
    assert _budget_lines(caplog) == [
        "budget: --budget 0.50 replaces the $0.03 budget this log ends with (its last start"
        " had --budget 1.00); start without --budget to keep the log's"
    ]


async def test_a_restart_back_to_an_earlier_budget_flag_replaces_the_log_budget(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """--budget 1.00, then 0.50, then 1.00 again: the last start changed the flag, it wins."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        async with r.run(budget=0.5):
            pass
        async with r.run(budget=1.0) as conjure:
            assert conjure.state.budget.limit_micros == budget_micros(1.0)


async def test_a_restart_without_a_budget_flag_keeps_the_logs_budget_silently(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No --budget: the log's budget, as before, and no line."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with r.run() as c:
                assert c.state.budget.limit_micros == budget_micros(0.03)
    assert _budget_lines(caplog) == []


def _as_written_before_the_record(log: eventlog.MemoryLog[Any]) -> eventlog.MemoryLog[Any]:
    """The same log as a version that did not record a start's budget wrote it: every
    ``BudgetSet`` without ``from_start`` (decoded from such a log: its default)."""
    old: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    for record in log.records():
        event = record.event
        if isinstance(event, ev.BudgetSet):
            event = msgspec.structs.replace(event, from_start=False)
        old.append(event)
    return old


async def test_a_restart_on_a_log_without_the_record_lets_the_flag_win_and_says_so(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older version's log does not say its last start's budget: the flag wins, said."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        old = _as_written_before_the_record(r.log)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with r.run(budget=1.0, log=old) as conjure:
                assert conjure.state.budget.limit_micros == budget_micros(1.0)
                # From now on the log records it: the next restart keeps a later change.
                assert conjure.state.budget.start_micros == budget_micros(1.0)
    assert _budget_lines(caplog) == [
        "budget: --budget 1.00 replaces the $0.03 budget this log ends with (set at run"
        " time, e.g. PUT /api/conjure/budget, or by an earlier start); start without"
        " --budget to keep the log's"
    ]


async def test_an_upgraded_log_restarted_with_its_own_budget_records_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """An old log whose budget is the flag's: the restart records the flag, so a run-time
    change after the upgrade outlives the next restart."""
    async with _restarts(tmp_path) as r:
        async with r.run(budget=1.0):
            pass
        old = _as_written_before_the_record(r.log)
        async with r.run(budget=1.0, log=old) as conjure:
            assert conjure.state.budget.limit_micros == budget_micros(1.0)
            await conjure.set_budget(0.03)
        sets = [r.event for r in old.records() if isinstance(r.event, ev.BudgetSet)]
        assert [(e.limit_micros, e.from_start) for e in sets] == [
            (budget_micros(1.0), False),
            (budget_micros(1.0), True),  # the restart's record, the budget unchanged
            (budget_micros(0.03), False),
        ]
        async with r.run(budget=1.0, log=old) as conjure:
            assert conjure.state.budget.limit_micros == budget_micros(0.03)


async def test_a_restart_with_the_logs_own_budget_says_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same --budget as the budget in force: no line, no new BudgetSet."""
    async with _restarts(tmp_path) as r:
        async with r.run(budget=1.0):
            pass
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            async with r.run(budget=1.0):
                pass
    assert not _budget_lines(caplog)
    sets = [r.event for r in r.log.records() if isinstance(r.event, ev.BudgetSet)]
    assert len(sets) == 1


async def test_the_log_of_restarts_replays_to_the_live_state(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """After restarts that keep and that replace, the log's replay is the live state."""
    async with _restarts(tmp_path) as r:
        await r.started_then_lowered()
        async with r.run(budget=1.0):
            pass
        async with r.run(budget=0.5) as conjure:
            live = state_to_builtins(conjure.state)
            replayed = apply_all(initial_state(), [r.event for r in r.log.records()])
            assert state_to_builtins(replayed) == live
