"""The harness's start: a fresh log (nothing at stake) may try once more after the runtime
gave up on an outage, as it does by design after a minute; a resume must start at once."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from conjure_actors.sim import RunComfyFaults
from conjure_actors.testing import HarnessSettings, open_harness
from conjure_actors.testing.faults import Knobs, TimedFault


async def test_a_fresh_start_through_an_outage_longer_than_a_minute_starts_on_its_retry(
    mock_clock: trio.testing.MockClock,
) -> None:
    """RunComfy answers 5xx for 90 s: the runtime's fresh start gives up after its minute
    (by design: nothing to stop, nothing to resume); before, the harness failed there."""
    async with open_harness(HarnessSettings(seed=1), start=False) as h:
        await h.inject(Knobs(runcomfy=RunComfyFaults(server_error_rate=1.0)))
        h.schedule([TimedFault(90.0, Knobs())])
        await h.start()
        assert h.running
        assert len(h.start_failures) == 1


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_run_until_quiet_watches_a_few_listings_past_the_quiet_moment(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Quiet the moment nothing runs in the cloud is not enough to check the ledger (a bill
    is corrected at the next listing) nor that nothing launches after: run_until_quiet
    returns at least three listings after the last machine stopped, still quiet."""
    from conjure_actors.actors.example import example_sketch_png
    from conjure_actors.testing import JobRequest, check_quiet, conjure_workflow

    settings = HarnessSettings(seed=3, max_machines=1)
    async with open_harness(settings) as h:
        job = JobRequest(
            conjure_workflow(), name="conjure", image=example_sketch_png(), prompt="a fox", seed=1
        )
        assert await h.submit(job) is not None
        assert await h.run_until_quiet()
        (bill,) = h.cloud.billing()
        assert bill.stopped_at is not None
        assert h.now() - bill.stopped_at >= 3 * settings.poll_interval
        check_quiet(h)
