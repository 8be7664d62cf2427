"""Near the budget: a machine whose lease renewal the budget refused takes no new job (the
job would lose it when the lease runs out, its paid time thrown away) and is stopped once
idle; the run says once, in a ``BudgetLimitReached``, what the budget refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_conjure, sim_config, wait_for
from test_actor_pool import _SocketNeverOpens, pool_rig

import eventlog
from conjure_actors.actors.conjure import Conjure
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.prices import format_usd
from conjure_actors.sim.comfyui import ComfyTimings

DONE = ("succeeded", "failed", "cancelled")


def _config(cloud: Any, budget: float) -> Any:
    """One 2x-large machine ($4.99/h) on a 60 s lease renewed 30 s before its end."""
    config = sim_config(cloud, max_machines=1, lease_seconds=60.0, renew_margin=30.0, budget=budget)
    return attrs.evolve(config, runcomfy=attrs.evolve(config.runcomfy, server_type="2x-large"))


async def _submit(conjure: Conjure, n: int) -> list[str]:
    """``n`` jobs that each run in full (distinct seeds: no cached outputs), about 50 s."""
    graph = json.loads(bundled_workflow())
    return [
        await conjure.submit(graph, image=example_sketch_png(), prompt="x", seed=seed)
        for seed in range(n)
    ]


def _of(log: eventlog.MemoryLog[Any], kind: type) -> list[Any]:
    return [r.event for r in log.records() if isinstance(r.event, kind)]


async def _run(
    tmp_path: Path, budget: float | None, jobs: int, *, later: float | None = None
) -> tuple[Any, list[str], Any]:
    """Run ``jobs`` jobs under ``budget``; ``later``: the budget set (as serve's ``PUT
    /api/conjure/budget`` does) once the first job runs."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    timings = ComfyTimings.real(scale=0.35)
    async with (
        open_test_cloud(wall.now, ready_delay=3.0, timings=timings) as cloud,
        run_conjure(cloud, log, tmp_path, _config(cloud, budget), wall) as conjure,
    ):
        ids = await _submit(conjure, jobs)
        with trio.fail_after(3600):
            if later is not None:
                await wait_for(conjure, lambda s: s.jobs[ids[0]].status == "running")
                await conjure.set_budget(later)
            await wait_for(conjure, lambda s: all(s.jobs[j].status in DONE for j in ids))
        return log, ids, conjure.state


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_no_job_starts_on_a_machine_whose_renewal_the_budget_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """$0.09 pays for one lease, not its renewal: the second job is not leased the machine
    whose lease runs out under it (lost, its paid time thrown away) but fails, saying the
    budget; the machine stops once idle, before its lease's end."""
    log, (first, second), state = await _run(tmp_path, 0.09, 2)
    assert [e.reason for e in _of(log, ev.JobQueued) if "lost" in e.reason] == []
    assert state.jobs[first].status == "succeeded"
    assert state.jobs[second].status == "failed"
    assert state.jobs[second].error.error_type == "BudgetRefused"
    (machine,) = state.machines.values()
    assert machine.stop_reason == "budget"
    assert machine.stopped_at < machine.estimated_stopping_at


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_the_budget_stopping_renewals_is_told_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The refused renewal (asked again at every poll) gives one ``BudgetLimitReached``
    naming the machine and what the renewal needed, on the figures it was refused on; the
    refused launch after it, its own one."""
    log, _, state = await _run(tmp_path, 0.09, 2)
    told, launch = _of(log, ev.BudgetLimitReached)
    (machine,) = state.machines
    assert (told.what, told.server_id, told.limit_micros) == ("renewal", machine, 90_000)
    assert told.needed_micros is not None
    left = 90_000 - told.spent_micros - told.committed_micros
    assert 0 <= left < told.needed_micros
    assert (launch.what, launch.server_id) == ("launch", None)
    assert len(_of(log, ev.LaunchRefused)) >= 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_the_budget_warning_still_comes_at_its_fraction(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The machine stopped early for the budget still bills past 80% of it: the warning
    comes, once, and the budget is not exceeded."""
    log, _, state = await _run(tmp_path, 0.09, 2)
    (warning,) = _of(log, ev.BudgetWarning)
    assert warning.spent_micros >= 0.8 * 90_000
    assert state.budget.warned
    assert not state.budget.exceeded


async def test_a_budget_lowered_mid_run_stops_renewals_and_says_so(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """No budget at the start, $0.09 set once the first job runs (serve's PUT): the machine
    whose renewal it refuses takes no second job, and the stop is said after that budget."""
    log, (first, second), state = await _run(tmp_path, None, 2, later=0.09)
    assert state.jobs[first].status == "succeeded"
    assert state.jobs[second].error.error_type == "BudgetRefused"
    assert [e.reason for e in _of(log, ev.JobQueued) if "lost" in e.reason] == []
    said = _of(log, ev.BudgetSet | ev.BudgetLimitReached)
    told = [e.what if isinstance(e, ev.BudgetLimitReached) else "set" for e in said]
    assert told[-3:] == ["set", "renewal", "launch"]


async def test_a_budget_refusal_does_not_stop_a_machine_kept_for_a_reattaching_prompt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As a restart finds it: the log places a job's running prompt on a Ready machine
    whose lease the adoption dropped (its slot kept for the job's re-attach), and the
    machine is not healthy yet (its WebSocket still opening), so the job cannot lease it
    again; the budget refuses its renewal. Before, the next poll stopped it "budget" (no
    lease on it) under the running prompt, thrown away though the lease was paid. Now it
    is kept while its slot is reserved: its lease runs out, or the job leases it."""
    async with pool_rig(
        budget=0.017,  # one lease (60 s, $0.0165), not its renewal
        comfy=_SocketNeverOpens,
        ready_delay=3.0,
        max_machines=1,
        lease_seconds=60.0,
        renew_margin=30.0,
    ) as rig:
        job = await rig.job()
        await rig.ask_lease(job)
        await trio.sleep(6)  # Ready at 3 s, seen by the 5 s listing; renewal due at ~8 s
        (m,) = rig.state.machines.values()
        sid = m.server_id
        assert (m.status, m.healthy, m.leases) == ("ready", False, [])
        now = rig.ctx.now()
        await rig.ctx.emit(
            ev.JobStarted(job_id=job, attempt=1, server_id=sid, at=now),
            ev.PromptSubmitting(
                job_id=job, attempt=1, prompt_id="p1", client_id="c1", server_id=sid, at=now
            ),
            ev.PromptSubmitted(job_id=job, prompt_id="p1", number=0.0, at=now),
            ev.ExecutionStarted(job_id=job, prompt_id="p1", at=now),
        )
        rig.pool.reserved[sid] = {job}  # what policy.reserved_slots gives a restart
        assert m.estimated_stopping_at is not None
        await trio.sleep(m.estimated_stopping_at - rig.ctx.now() - 2.0)
        (told,) = rig.events(ev.BudgetLimitReached)
        assert told.what == "renewal"
        assert [e.reason for e in rig.events(ev.MachineStopping)] == []
        assert rig.state.machines[sid].status == "ready"


async def test_a_job_the_budget_left_without_a_machine_says_the_refusals_figures(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Its error names what a launch needs (as the ``LaunchRefused`` logged for it), what
    was spent (the bill, as ``status`` and the summary say it) of what budget, and what to
    do (it said only "budget")."""
    log, (_, second), state = await _run(tmp_path, 0.09, 2)
    refused = [e for e in _of(log, ev.LaunchRefused) if e.job_id == second][-1]
    (machine,) = state.machines.values()
    message = state.jobs[second].error.message
    assert message.startswith("no machine: the budget cannot cover a launch: ")
    assert f"needs {format_usd(refused.estimate_micros)}, " in message
    assert f"of the $0.0900 budget left after {format_usd(machine.cost_micros)} spent" in message
    assert message.endswith("raise --budget (serve: PUT /api/conjure/budget)")
