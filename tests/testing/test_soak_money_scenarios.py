"""Money scenarios by hand, through the whole harness: a DELETE that answers 200 and does
not take, a listing that misses a running machine, a launch that lands late, each at the
worst moment (a crash, a budget stop). Each ends quiet: no machine runs, and the ledger is
the cloud's bill exactly (check_quiet)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.testing import (
    Harness,
    HarnessSettings,
    JobRequest,
    check_all,
    check_quiet,
    conjure_workflow,
    open_harness,
)
from conjure_actors.testing.faults import DeleteDoesNotTake, ListingMisses, cloud_tricks
from conjure_actors.testing.invariants import check_ledger


def _job(seed: int = 1) -> JobRequest:
    return JobRequest(
        conjure_workflow(), name="conjure", image=example_sketch_png(), prompt="a fox", seed=seed
    )


async def _until(h: Harness, predicate: Any, limit: float = 3600.0) -> None:
    waited = 0.0
    while not predicate():
        assert waited < limit, "condition not reached in simulated time"
        await h.advance(1.0)
        waited += 1.0


def _ready(h: Harness) -> bool:
    return any(m.status == "ready" for m in h.state.machines.values())


async def _quiet(h: Harness) -> None:
    await h.run_until_quiet()
    check_all(h)
    check_quiet(h)


async def _delete_not_taking(h: Harness, seconds: float) -> None:
    """Run one job; from then on every DELETE answers 200 and does not take, for
    ``seconds`` after the first such answer; then DELETEs take again."""
    job = await h.submit(_job())
    assert job is not None
    await _until(h, lambda: _ready(h))
    await h.inject(DeleteDoesNotTake(10_000))
    await _until(h, lambda: bool(cloud_tricks(h).ignored))
    await h.advance(seconds)
    cloud_tricks(h).deletes_ignored = 0


@pytest.mark.slow
async def test_a_machine_whose_delete_did_not_take_is_billed_to_its_lease_end(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Every DELETE answers 200 and does not take until the machine's lease runs out
    (between two DELETEs sent again, which answered 200 with the machine still Ready):
    RunComfy billed it to its lease end, and so must the ledger (not to the last 200)."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        await _delete_not_taking(h, 400.0)
        await _quiet(h)


@pytest.mark.slow
async def test_a_delete_that_keeps_not_taking_past_the_recheck_is_still_sent_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Every DELETE answers 200 and does not take for 400 s, longer than the pool's
    recheck of a stop (300 s), with a lease longer than that: the machine must still be
    stopped once DELETEs take again (not left billing to its lease end), and billed."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1, lease_seconds=1800.0)) as h:
        await _delete_not_taking(h, 400.0)
        stopped_again = trio.current_time()
        await _quiet(h)
        (bill,) = h.cloud.billing()
        assert bill.reason == "stopped", bill
        assert bill.stopped_at is not None
        assert bill.stopped_at < h.now() - trio.current_time() + stopped_again + 60, bill


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_machine_whose_delete_did_not_take_and_that_vanished_is_billed_past_the_200(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The stop's DELETE answers 200 showing the machine still Ready (it did not take);
    the machine vanishes 2 s later, before the next listing: RunComfy billed it those
    2 s, so its bill may not end at the 200 (check_ledger: never less than the cloud's)."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: _ready(h))
        await h.inject(DeleteDoesNotTake(1))
        await _until(h, lambda: bool(cloud_tricks(h).ignored))
        await h.advance(2.0)
        await h.lose_machine(0)
        await h.advance(30.0)  # a few listings (quiet at once: nothing runs in the cloud)
        await _quiet(h)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_the_ledger_may_lag_a_stopped_machine_still_up_until_it_is_found_gone(
    mock_clock: trio.testing.MockClock,
) -> None:
    """As above, but the invariants are checked at once after the machine vanished (fuzz
    of MoneyStateMachine, DeleteDoesNotTake(2) then lose_machine): its last 200 showed it
    still up (``stop_still_up``: the runtime knows its bill runs on), so until a listing
    finds it gone the ledger may be below the cloud's bill, like a running machine's."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: _ready(h))
        await h.inject(DeleteDoesNotTake(1))
        await _until(h, lambda: bool(cloud_tricks(h).ignored))
        await h.advance(2.0)
        await h.lose_machine(0)
        (m,) = (m for m in h.state.machines.values() if m.kind == "runcomfy")
        assert m.stop_still_up, m  # (not found gone yet: the case under test)
        check_all(h)
        await h.advance(30.0)
        await _quiet(h)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_delete_that_did_not_take_before_a_crash_is_billed_to_the_lease_end_at_resume(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The stop's DELETE answers 200 showing the machine still Ready (it did not take);
    the run crashes just after and stays down until the machine's lease ran out (RunComfy
    billed it until then); the resumed run's bill must reach that lease end."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: _ready(h))
        await h.inject(DeleteDoesNotTake(1))
        await _until(h, lambda: bool(cloud_tricks(h).ignored))
        await h.crash()
        await h.advance(300.0)  # down: the lease (ends 191 s after that 200) runs out
        await h.start()
        await h.advance(30.0)
        await _quiet(h)


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_launch_whose_answer_is_lost_and_that_lands_after_the_grace_is_not_left_running(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The launch's answer is lost (502: the sim launched it) and the listings show the
    machine only after 20 listings (~100 s, past the 60 s a launch of unknown outcome is
    given to land). It carries this run's marker (the lease minus 1-59 s): it must not be
    left running (and unbilled) until its lease ends."""
    from conjure_actors.sim import RunComfyFaults
    from conjure_actors.testing.faults import Knobs, LaunchesLag

    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        await h.inject(LaunchesLag(40))
        await h.inject(Knobs(runcomfy=RunComfyFaults(launch_ghost_rate=1.0)))
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: bool(h.cloud.running()))
        await h.inject(Knobs())
        await _until(h, lambda: bool(cloud_tricks(h).ever_hidden))
        await h.inject(LaunchesLag(0))  # (for later launches)
        await _until(h, lambda: h.state.jobs[job].status in ("succeeded", "failed"))
        await _quiet(h)


async def test_a_budget_stop_whose_deletes_do_not_take_still_stops_and_bills_every_machine(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The budget is lowered below the spend while two machines run; the stop of every machine meets
    DELETEs that answer 200 without taking (three of them): every machine is stopped in
    the end, billed as the cloud billed it, and the spend stays within a lease of it."""
    async with open_harness(HarnessSettings(seed=5, max_machines=2)) as h:
        jobs = [await h.submit(_job(seed=i)) for i in (1, 2, 3, 4)]
        assert all(jobs)
        await _until(h, lambda: _ready(h))
        await h.inject(DeleteDoesNotTake(3))
        await h.set_budget(0.01)  # below the spend: stop every machine now
        await h.advance(600.0)
        check_all(h)
        await _quiet(h)
        assert h.state.budget.exceeded
        assert cloud_tricks(h).ignored


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_listing_that_misses_a_running_machine_does_not_lose_it(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Listings leave a Ready machine out (it runs and bills on): its lookup
    (``GET /servers/{id}``) finds it up, so it is not logged lost; it is stopped when due,
    and the ledger is the cloud's bill exactly (before: lost, billed to the loss)."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: _ready(h))
        await h.inject(ListingMisses(0, 3))
        await _until(h, lambda: not any(cloud_tricks(h).hidden.values()))
        await _quiet(h)
        assert [m.lost_reason for m in h.state.machines.values() if m.lost_reason] == []


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_machine_ready_and_expired_while_the_runtime_was_down_is_billed_its_lease(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The runtime dies right after a launch; the machine becomes Ready and runs to its
    lease's end while nothing watches; the resume finds it gone. Before, its bill was $0
    ("gone while we were down", never seen Ready) while RunComfy billed the whole lease:
    now the ledger bills its launch's lease, the cloud's bill exactly."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: any(m.status == "starting" for m in h.state.machines.values()))
        await h.crash()
        await h.advance(60.0 + 300.0 + 60.0)  # Ready, its lease (300 s) out, gone
        await h.start()
        lost = [m for m in h.state.machines.values() if m.lost_reason]
        assert [m.lost_reason for m in lost] == ["gone while we were down"]
        (bill,) = [b for b in h.cloud.billing() if b.server_id == lost[0].server_id]
        assert bill.reason == "lease_expired"
        assert lost[0].cost_micros == bill.cost_micros > 0
        await _quiet(h)


async def test_a_machine_gone_while_starting_is_billed_from_the_last_look_at_it(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Polled Starting through a 3-minute boot, then gone before Ready (the cloud bills
    $0): before, billed 180 s from its launch (phantom spend against the budget). Now from
    the last listing that showed it Starting (a poll interval at most), and check_ledger
    holds the ledger to that rule."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1, ready_delay=900.0)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: any(m.status == "starting" for m in h.state.machines.values()))
        await h.advance(180.0)
        (sid,) = h.state.machines
        assert h.cloud.runcomfy.vanish(sid)
        await _until(h, lambda: h.state.machines[sid].lost_reason is not None)
        (bill,) = [b for b in h.cloud.billing() if b.server_id == sid]
        assert (bill.reason, bill.cost_micros) == ("never_ready", 0)
        billed = h.state.machines[sid].billed_seconds
        assert billed is not None
        assert billed <= h.settings.poll_interval + 1
        assert check_ledger(h) == []
