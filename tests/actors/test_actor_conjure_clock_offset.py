"""A host clock that disagrees with RunComfy's by 15 minutes (QA: qa11 findings 1 and 2):
the runtime bills, renews leases and enforces the budget as with synced clocks.

The simulated RunComfy runs its clock ``clock_offset`` seconds from the host's (its ``Date``
headers, its machines' times and its own billing records); the runtime reads the host's.
Before the client corrected RunComfy's times, 15 min behind billed every machine $0 and let
each lease run out under its job (the lease looked 15 min longer); 15 min ahead billed a
machine up seconds for 15 minutes and declared the budget exceeded at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import run_conjure, sim_config, wait_for

import eventlog
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.sim.cloud import CloudTimings, open_simulated_cloud
from conjure_actors.sim.runcomfy import RunComfyTimings
from conjure_actors.sim.timings import ComfyTimings

OFFSETS = [-900.0, 900.0]
# A job of a few minutes on a 60 s lease: it needs renewals (QA's conjure.toml).
POOL: dict[str, Any] = {
    "max_machines": 1,
    "lease_seconds": 60.0,
    "renew_margin": 20.0,
    "idle_timeout": 10.0,
    "poll_interval": 1.0,
}
JOB_TIMINGS = ComfyTimings.real(scale=1.0)


@asynccontextmanager
async def _cloud(wall: TrioWallClock, offset: float) -> AsyncIterator[Any]:
    timings = CloudTimings(
        runcomfy=RunComfyTimings(ready_delay=30.0, clock_offset=offset), comfyui=JOB_TIMINGS
    )
    async with open_simulated_cloud(seed=3, timings=timings, wall=wall.now) as cloud:
        yield cloud


async def _one_job(
    offset: float, out: Path, budget: float | None = None
) -> tuple[Any, list[Any], list[Any]]:
    """Run one CONJURE job to its end, every machine stopped: (state, the sim's billing
    records, the events)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with _cloud(wall, offset) as cloud:
        config = sim_config(cloud, budget=budget, **POOL)
        async with run_conjure(cloud, log, out, config, wall) as conjure:
            job = await conjure.submit(
                json.loads(bundled_workflow()), image=example_sketch_png(), prompt="x"
            )
            with trio.fail_after(3600):
                await wait_for(
                    conjure,
                    lambda s: s.jobs[job].status in ("succeeded", "failed", "cancelled"),
                )
                await wait_for(
                    conjure,
                    lambda s: all(m.status == "stopped" for m in s.machines.values()),
                )
            state = conjure.state
        bills = cloud.billing()
    return state, bills, [r.event for r in log.records()]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@pytest.mark.parametrize("offset", OFFSETS)
async def test_a_job_under_a_skewed_clock_keeps_its_machine_and_is_billed_as_runcomfy_bills(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, offset: float
) -> None:
    """RunComfy's clock 15 min from the host's: the job succeeds on one machine whose lease
    was renewed (none lost), and each machine's bill is RunComfy's within a second."""
    state, bills, events = await _one_job(offset, tmp_path)
    (job,) = state.jobs.values()
    assert job.status == "succeeded"
    assert [e for e in events if isinstance(e, ev.MachineLost)] == []
    assert any(isinstance(e, ev.LeaseRenewed) for e in events)
    assert len(bills) == 1
    for bill in bills:
        ours = state.machines[bill.server_id]
        assert bill.billed_seconds > 60  # it ran for minutes (not a 0 s or a 900 s bill)
        assert ours.billed_seconds is not None
        assert abs(ours.billed_seconds - bill.billed_seconds) <= 1
        rate = bill.rate_micros_per_hour
        assert abs(ours.cost_micros - bill.cost_micros) <= rate // 3600 + 1


def _story(events: list[Any]) -> list[str]:
    """What the budget, the machines and the job did, in order (no times, no ids)."""
    kinds = (ev.BudgetLimitReached, ev.BudgetWarning, ev.BudgetExceeded, ev.LeaseRenewed)
    kinds += (ev.MachineLaunched, ev.MachineReady, ev.MachineLost, ev.MachineStopped)
    kinds += (ev.JobStarted, ev.JobQueued, ev.JobSucceeded, ev.JobFailed)
    return [type(e).__name__ for e in events if isinstance(e, kinds)]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@pytest.mark.parametrize("offset", OFFSETS)
async def test_the_budget_under_a_skewed_clock_is_enforced_as_with_a_synced_one(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, offset: float
) -> None:
    """A budget the job's machine runs through in about a minute (the job needs minutes):
    with RunComfy's clock 15 min off, the budget cuts the lease and ends the job as with
    synced clocks (not at once, not never), and the spend the runtime shows is RunComfy's."""
    budget = 0.02
    synced, _, synced_events = await _one_job(0.0, tmp_path / "synced", budget)
    skewed, bills, skewed_events = await _one_job(offset, tmp_path / "skewed", budget)
    assert _story(skewed_events) == _story(synced_events)
    assert "BudgetLimitReached" in _story(skewed_events)
    assert [j.status for j in skewed.jobs.values()] == [j.status for j in synced.jobs.values()]
    spent = sum(m.cost_micros for m in skewed.machines.values())
    billed = sum(b.cost_micros for b in bills)
    assert 0 < billed <= budget * 1_000_000 + max(b.rate_micros_per_hour for b in bills) // 3600
    assert abs(spent - billed) <= max(b.rate_micros_per_hour for b in bills) // 3600 + 1
