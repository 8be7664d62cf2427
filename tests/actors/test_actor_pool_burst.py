"""A burst a warm machine drains on its own (QA's reproduction, on the in-memory
simulator): the launches it asked for are not sent once nothing waits, and the machines
already Starting are stopped before Ready, unbilled; no job waits longer for it."""

from __future__ import annotations

import trio
import trio.testing
from test_actor_pool import Rig, pool_rig

JOB_SECONDS = 0.18  # QA's invert_save job on the warm machine


async def _warm(rig: Rig) -> str:
    """One job run to its end: one machine Ready and idle."""
    first = await rig.job()
    lease = await rig.lease(first)
    await rig.release(lease.server_id, first)
    return lease.server_id


async def _burst(rig: Rig, n: int) -> dict[str, tuple[float, str]]:
    """``n`` jobs at once, each holding its machine ``JOB_SECONDS``: job -> (seconds it
    waited for its machine, the machine)."""
    jobs = [await rig.job() for _ in range(n)]
    start = trio.current_time()
    waited: dict[str, tuple[float, str]] = {}

    async def run(job_id: str) -> None:
        lease = await rig.lease(job_id)
        waited[job_id] = (trio.current_time() - start, lease.server_id)
        await trio.sleep(JOB_SECONDS)
        await rig.release(lease.server_id, job_id)

    async with trio.open_nursery() as nursery:
        for j in jobs:
            nursery.start_soon(run, j)
    return waited


async def test_a_burst_the_warm_machine_drains_bills_no_other_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten jobs at once on one warm machine (QA: 4 launches, each billed to the idle
    timeout): the machines launched meanwhile are stopped while Starting, billed nothing,
    and every job ran on the warm machine as soon as it was free."""
    async with pool_rig(max_machines=5, idle_timeout=120.0, ready_delay=20.0) as rig:
        warm = await _warm(rig)
        waited = await _burst(rig, 10)
        await trio.sleep(300)  # past the idle timeout: every machine stopped
        assert rig.sim.running() == []
        bills = {b.server_id: b.billed_seconds for b in rig.sim.billing()}
        assert len(bills) > 1  # the burst did launch (the warm machine was busy)
        assert [sid for sid, seconds in bills.items() if seconds] == [warm]
        others = [m for m in rig.state.machines.values() if m.server_id != warm]
        assert {m.stop_reason for m in others} == {"surplus"}
        assert all(m.service_ready_at is None for m in others)  # stopped while Starting
        assert rig.ledger_matches_sim()
        # No job waited longer: each took the warm machine the moment it was free.
        slots = sorted(t for t, _ in waited.values())
        assert {sid for _, sid in waited.values()} == {warm}
        assert all(abs(t - k * JOB_SECONDS) < 1e-6 for k, t in enumerate(slots))


async def test_no_machine_launched_after_the_burst_left_the_queue_is_billed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The launches a burst asked for each decide at their turn in the account's bucket;
    one the bucket still held when the queue emptied may go out, and its machine is stopped
    while Starting: no machine but the warm one is billed (QA: one was sent 1.9 s after the
    last job had ended and billed to the idle timeout)."""
    async with pool_rig(max_machines=5, idle_timeout=120.0, ready_delay=20.0) as rig:
        warm = await _warm(rig)
        await _burst(rig, 10)
        await trio.sleep(60)  # every launch asked for has landed (or was given back)
        others = [b for b in rig.sim.billing() if b.server_id != warm]
        assert [b.billed_seconds for b in others] == [0] * len(others)
        assert rig.state.launch_requests == {}


async def test_a_machine_starting_for_a_cancelled_job_is_stopped_unbilled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two jobs wait, two machines start; one job is cancelled: one machine is stopped
    while Starting (billed nothing), and the job still waiting gets the other."""
    async with pool_rig(max_machines=4, ready_delay=60.0) as rig:
        a, b = await rig.job(), await rig.job()
        got = await rig.ask_lease(a)
        await rig.ask_lease(b)
        await trio.sleep(10)  # both launched, both Starting
        assert [m.status for m in rig.state.machines.values()] == ["starting"] * 2
        await rig.cancel(b)
        await rig.poll()  # a message behind the cancel: it has been handled
        reasons = sorted(str(m.stop_reason) for m in rig.state.machines.values())
        assert reasons == ["None", "surplus"]  # at once, not at the next tick
        with trio.fail_after(120):
            lease = await got.wait()
        await rig.release(lease.server_id, a)
        stopped = [m for m in rig.state.machines.values() if m.server_id != lease.server_id]
        assert [m.stop_reason for m in stopped] == ["surplus"]
        assert {b.server_id: b.billed_seconds for b in rig.sim.billing()}[stopped[0].server_id] == 0
        assert rig.ledger_matches_sim()
