"""A resume on a log that lost its last records (cut short, or salvaged after damage).

A log cut before its ``MachineLaunchRequested`` does not know the machine its run launched
last: that machine bills on (until its lease ends) and the resume adopted only what the
log names, saying nothing. The recovery now lists the account even when the log holds
nothing that may bill, and keeps the servers listed up that the log does not know
(``pool.unknown_listed``) for run and serve to name, never stopping them (another
client's machine is not to be stopped). A salvaged log that lost only the
``MachineLaunched`` record keeps that launch's intent open though its machine is adopted
from its ``MachineReady``: the adoption now closes that intent (it waited for a server of
its own until its landing grace ended, then failed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import crash_while_running, open_test_cloud, run_conjure, sim_config

import eventlog
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event


def _rewritten(log: eventlog.MemoryLog[Any], keep: Callable[[Any], bool]) -> Any:
    """A new log of the records of ``log`` that ``keep`` keeps (a cut, or a salvage that
    lost some), as a reopened writer over them."""
    records = [r for r in log.records() if keep(r)]
    new: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event, clock=log._clock)
    new.append_many([r.event for r in records], ts=[r.ts for r in records])
    new.close()
    return new.reopen()


def _seq_of(log: eventlog.MemoryLog[Any], kind: type) -> int:
    return next(r.seq for r in log.records() if isinstance(r.event, kind))


@pytest.mark.slow
async def test_a_resume_on_a_log_cut_before_its_launch_names_the_machine_it_does_not_know(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Crash while the prompt runs; the log loses everything from its launch intent on.
    The resume runs the job on a new machine; the crashed run's machine, unknown to the
    log, is named (kept in ``pool.unknown_listed``, Ready, with its cost so far) and not
    stopped by the resume (nothing proves it is this run's)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        await crash_while_running(cloud, log, tmp_path, config, wall)
        (orphan,) = cloud.running()
        cut = _seq_of(log, ev.MachineLaunchRequested)
        log = _rewritten(log, lambda r: r.seq < cut)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            named = list(conjure.pool.unknown_listed)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
        assert orphan in cloud.running()  # left alone: named, never stopped by a guess
    assert [u.server_id for u in named] == [orphan]
    logged = [r.event for r in log.records() if isinstance(r.event, ev.MachineUnknownListed)]
    assert [(e.server_id, e.status, e.cost_micros) for e in logged] == [
        (orphan, "Ready", named[0].cost_micros)
    ]
    assert orphan not in conjure.state.machines  # a fact of the log, not a machine of it
    assert named[0].status == "Ready"
    assert named[0].cost_micros is not None
    assert named[0].cost_micros > 0


async def test_a_resume_of_a_salvaged_log_that_lost_its_launch_record_does_not_wait_for_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The log lost only ``MachineLaunched`` (its place holder is skipped): the machine is
    adopted from its ``MachineReady``, and that adoption closes the launch's intent at the
    reconcile; before, the intent stayed open for its landing grace (60 s) and then
    failed "no server found for this launch"."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        await crash_while_running(cloud, log, tmp_path, config, wall)
        (machine,) = cloud.running()
        key = next(
            r.event.request_key
            for r in log.records()
            if isinstance(r.event, ev.MachineLaunchRequested)
        )
        log = _rewritten(log, lambda r: not isinstance(r.event, ev.MachineLaunched))
        resumed_at = log.last_seq
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            open_after_start = dict(conjure.state.launch_requests)
            with trio.fail_after(3600):
                await conjure.wait_until_idle()
        assert cloud.running() == []
    assert open_after_start == {}
    after = [r.event for r in log.records() if r.seq > resumed_at]
    adopted = [e for e in after if isinstance(e, ev.MachineAdopted)]
    assert [(e.server_id, e.request_key) for e in adopted] == [(machine, key)]
    assert [e for e in after if isinstance(e, ev.MachineLaunchFailed)] == []


async def test_a_resume_on_a_log_cut_before_its_first_job_names_the_machine_it_does_not_know(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The log lost its job too (only the run's start is left): the resume has nothing to
    run, and still lists the account and names the killed run's machine; before, it did not
    reconcile at all (no job, no machine, no launch in the log)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    async with open_test_cloud(wall.now) as cloud:
        config = sim_config(cloud)
        await crash_while_running(cloud, log, tmp_path, config, wall)
        (orphan,) = cloud.running()
        cut = _seq_of(log, ev.JobSubmitted)
        log = _rewritten(log, lambda r: r.seq < cut)
        async with run_conjure(cloud, log, tmp_path, config, wall) as conjure:
            named = [u.server_id for u in conjure.pool.unknown_listed]
        assert orphan in cloud.running()
    assert named == [orphan]
