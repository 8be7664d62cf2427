"""A resume of a log that ends between a machine's "stopping" and "stopped" records (a
kill -9, power loss or OOM-kill while the stop's DELETE is in flight, or a log that lost its
last records), with the machine gone by then (``gone_at`` with ``stop_in_flight``).

Found gone before its lease's end, it was stopped by that DELETE: billed a settle time past
the decision (it was billed to the decision, under the cloud's bill: the DELETE's answer,
where billing ends, comes after). Found gone after its lease's end, nothing tells whether
its DELETE left (the account's rate limit holds the stops decided together one second
apart): billed to its lease's end, never below the cloud's bill. Either way one line says
what it is billed, why, and that RunComfy's bill is exact."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import (
    crash_when,
    open_test_cloud,
    run_conjure,
    sim_config,
    submit_sketches,
    wait_for,
)
from test_actor_pool_resume_cut_log import _rewritten

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import unanswered_stops
from conjure_actors.domain.events import Event
from conjure_actors.domain.machines_policy import STOP_SETTLE
from conjure_actors.domain.prices import machine_cost_micros
from conjure_actors.domain.state import LOST_WHILE_DOWN
from conjure_actors.sim.comfyui import ComfyTimings


def _bills(cloud: Any) -> dict[str, int]:
    return {b.server_id: b.cost_micros for b in cloud.billing()}


async def _cut_after_stopping_then_resume(
    tmp_path: Path, *, lease_seconds: float, down_for: float
) -> tuple[Any, Any, str, float]:
    """One job run to the end; its log cut after the machine's "stopping" record (its
    "stopped" lost); a resume ``down_for`` seconds later: (the resumed state, the cloud,
    the machine, when the resume started)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud, idle_timeout=30.0, lease_seconds=lease_seconds)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            (job,) = await submit_sketches(conjure)
            with trio.fail_after(3600):
                await wait_for(conjure, lambda s: s.jobs[job].status == "succeeded")
                await wait_for(
                    conjure, lambda s: all(m.status == "stopped" for m in s.machines.values())
                )
            await conjure.shutdown()
        assert cloud.running() == []
        cut = next(r.seq for r in log.records() if isinstance(r.event, ev.MachineStopping))
        log = _rewritten(log, lambda r: r.seq <= cut)
        await trio.sleep(down_for)
        resumed_at = wall.now()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await conjure.shutdown()
            state = conjure.state
        (sid,) = state.machines
        return state, cloud, sid, resumed_at


async def test_found_gone_before_its_lease_end_it_is_billed_past_its_stop_never_below(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resumed 2 minutes after the cut, within the machine's lease: billed STOP_SETTLE past
    the logged stop, not below the cloud's bill (it was billed to the stop, under the
    cloud's: the DELETE answered after it) nor to the resume (2 minutes it did not run)."""
    caplog.set_level(logging.WARNING, logger="conjure_actors.actors.pool")
    state, cloud, sid, _ = await _cut_after_stopping_then_resume(
        tmp_path, lease_seconds=3600, down_for=120
    )
    m = state.machines[sid]
    assert (m.status, m.lost_reason) == ("stopped", LOST_WHILE_DOWN)
    assert m.stop_requested_at is not None
    assert m.stopped_at == m.stop_requested_at + STOP_SETTLE
    assert m.cost_micros >= _bills(cloud)[sid]
    (u,) = unanswered_stops(state)
    assert u.upto == "settle"
    (line,) = [r.getMessage() for r in caplog.records if sid in r.getMessage()]
    assert "after that decision" in line
    assert line.endswith("RunComfy's bill is exact")


async def test_found_gone_after_its_lease_end_it_is_billed_at_most_to_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resumed after the lease's end (QA: 546 s billed, the cloud's 18 s): billed to the
    lease's end, not past it nor to the resume; the line says it is the most it can have
    cost, what it cost at the decision, and that RunComfy's bill is exact."""
    caplog.set_level(logging.WARNING, logger="conjure_actors.actors.pool")
    state, cloud, sid, resumed_at = await _cut_after_stopping_then_resume(
        tmp_path, lease_seconds=600, down_for=900
    )
    m = state.machines[sid]
    assert m.estimated_stopping_at is not None
    assert m.estimated_stopping_at < resumed_at
    assert m.stopped_at == m.estimated_stopping_at
    assert m.cost_micros >= _bills(cloud)[sid]
    (line,) = [r.getMessage() for r in caplog.records if sid in r.getMessage()]
    assert "billed at most $" in line
    assert "to its lease's end" in line
    assert line.endswith("RunComfy's bill is exact")


@pytest.mark.slow
async def test_stops_decided_together_may_never_leave_so_past_the_lease_they_bill_to_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The budget set to $0 stops three Ready machines at once; the process dies as soon as
    the three stops are logged, their DELETEs waiting for the account's rate limit (one a
    second). A resume after their leases' ends finds them gone: RunComfy billed the ones
    whose DELETE never left to their lease's end, so each is billed to it, never below the
    cloud's bill (billed a settle time past its stop, such a machine was under it by most
    of a lease: why a bill past the lease's end is not cut to the stop)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now, timings=ComfyTimings(scale=100.0)) as cloud:
        config = sim_config(cloud, max_machines=3, lease_seconds=600)

        async def until_three_stopping(conjure: Any) -> None:
            await submit_sketches(conjure, 3)
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: sum(m.status == "ready" for m in s.machines.values()) == 3,
                )
                await conjure.set_budget(0.0)
                await wait_for(
                    conjure,
                    lambda s: sum(m.status == "stopping" for m in s.machines.values()) == 3,
                )

        await crash_when(cloud, log, tmp_path, config, wall, until_three_stopping)
        await trio.sleep(900)
        log = log.reopen()
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            await conjure.shutdown()
            state = conjure.state
        bills = {b.server_id: b for b in cloud.billing()}
    gone = [m for m in state.machines.values() if m.lost_reason == LOST_WHILE_DOWN]
    assert len(gone) == 3
    ran_out = [m for m in gone if bills[m.server_id].stopped_at == m.estimated_stopping_at]
    assert ran_out, "every DELETE left before the crash: nothing here to prove"
    for m in gone:
        assert m.stopped_at == m.estimated_stopping_at
        assert m.cost_micros >= bills[m.server_id].cost_micros
        assert m.stop_requested_at is not None
        settled = m.stop_requested_at + STOP_SETTLE
        if m in ran_out:  # what a bill cut to a settle time past the stop would have been
            to_settle = machine_cost_micros(m.rate_micros_per_hour, m.service_ready_at, settled)
            assert to_settle < bills[m.server_id].cost_micros
