"""The harness's start: a fresh log (nothing at stake) may try once more after the runtime
gave up on an outage, as it does by design after a minute; a resume must start at once."""

from __future__ import annotations

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
