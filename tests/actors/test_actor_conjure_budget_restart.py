"""A start whose --budget differs from the budget its log ends with (one set at run time,
PUT /api/conjure/budget) says that it replaces it, and how to keep the log's (QA G14)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.cost_policy import budget_micros
from conjure_actors.domain.events import Event


async def test_a_restart_with_its_budget_flag_says_it_replaces_the_budget_set_at_run_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(600):
        async with open_test_cloud(wall.now) as cloud:
            config = sim_config(cloud, budget=1.0)
            async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                await conjure.set_budget(0.03)  # PUT /api/conjure/budget
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="conjure_actors.actors.conjure"):
                async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
                    assert conjure.state.budget.limit_micros == budget_micros(1.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget:")]
    assert lines == [
        "budget: --budget $1.0000 replaces the $0.0300 budget this log ends with (set at run"
        " time, e.g. PUT /api/conjure/budget, or by an earlier start); start without"
        " --budget to keep the log's"
    ]


async def test_a_restart_with_the_logs_own_budget_says_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    with trio.fail_after(600):
        async with open_test_cloud(wall.now) as cloud:
            config = sim_config(cloud, budget=1.0)
            async with run_conjure(cloud, log, tmp_path, config, wall):
                pass
            with caplog.at_level(logging.WARNING, logger="conjure_actors.actors.conjure"):
                async with run_conjure(cloud, log, tmp_path, config, wall):
                    pass
    assert not [r for r in caplog.records if r.getMessage().startswith("budget:")]
