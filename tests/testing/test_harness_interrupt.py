"""Issue 17 in the whole runtime (in-memory harness, MockClock): an interrupt early in a run,
at any moment of the launches, leaves no machine billing and a ledger equal to the cloud's."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.testing import HarnessSettings, JobRequest, conjure_workflow, open_harness


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.integers(1, 3),
    ready_delay=st.floats(1.0, 120.0),
    interrupt_after=st.floats(0.0, 150.0),
    seed=st.integers(0, 1000),
)
def test_early_interrupt_leaves_nothing_billing_and_an_exact_ledger(
    jobs: int, ready_delay: float, interrupt_after: float, seed: int
) -> None:
    """Jobs submitted, an ordered shutdown after ``interrupt_after`` simulated seconds:
    afterwards no simulated machine runs, shutdown names none, and every machine costs in
    the ledger exactly what the cloud billed."""

    async def main() -> None:
        settings_ = HarnessSettings(seed=seed, ready_delay=ready_delay, max_machines=3)
        async with open_harness(settings_) as h:
            for i in range(jobs):
                request = JobRequest(
                    conjure_workflow(),
                    name="conjure",
                    image=example_sketch_png(),
                    prompt=f"a fox {i}",
                    seed=i,
                )
                await h.submit(request)
            await h.advance(interrupt_after)
            assert await h.shutdown() == []
            assert h.cloud.running() == []
            bills = {b.server_id: b.cost_micros for b in h.cloud.billing()}
            ours = {
                m.server_id: m.cost_micros
                for m in h.state.machines.values()
                if m.kind == "runcomfy"
            }
            assert ours == bills

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
