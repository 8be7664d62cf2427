"""A resume whose first listing misses a machine whose stop's 200 did not take (logged
``still_up``): that listing is no proof it went; it runs and bills on. It stays watched
(DELETE again once listed up) and its bill reaches the DELETE that takes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_soak_money_scenarios import _job, _quiet, _ready, _until

from conjure_actors.testing import HarnessSettings, open_harness
from conjure_actors.testing.faults import DeleteDoesNotTake, ListingMisses, cloud_tricks


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_machine_whose_delete_did_not_take_missed_by_the_resumes_listing_is_stopped(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Lease 1800 s. The stop's DELETE answers 200 still Ready (did not take); crash just
    after; the resume's listing (and the next two) leave the machine out; then it is
    listed again and DELETEs take. Before: billed to the resume and forgotten, it ran to
    its lease end (check_quiet: the cloud's bill above the ledger)."""
    async with open_harness(HarnessSettings(seed=3, max_machines=1, lease_seconds=1800.0)) as h:
        job = await h.submit(_job())
        assert job is not None
        await _until(h, lambda: _ready(h))
        await h.inject(DeleteDoesNotTake(10_000))
        await _until(h, lambda: bool(cloud_tricks(h).ignored))
        await h.crash()
        await h.advance(10.0)
        await h.inject(ListingMisses(0, 3))
        await h.start()
        await h.advance(60.0)
        cloud_tricks(h).deletes_ignored = 0
        await _quiet(h)
        (bill,) = h.cloud.billing()
        assert bill.reason == "stopped", bill
