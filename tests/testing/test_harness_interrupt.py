"""Issue 17 in the whole runtime (in-memory harness, MockClock): an interrupt early in a run,
at any moment of the launches, leaves no machine billing and a ledger equal to the cloud's."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.testing import HarnessSettings, JobRequest, conjure_workflow, open_harness

# A whole harness run an example: the inner loop runs 3 examples, the slow twin 40.
_RUN = settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_runs = {
    "jobs": st.integers(1, 3),
    "ready_delay": st.floats(1.0, 120.0),
    "interrupt_after": st.floats(0.0, 150.0),
    "seed": st.integers(0, 1000),
}


@pytest.mark.slow
@_RUN
@given(**_runs)
def test_early_interrupt_leaves_nothing_billing_and_an_exact_ledger(
    jobs: int, ready_delay: float, interrupt_after: float, seed: int
) -> None:
    """Jobs submitted, an ordered shutdown after ``interrupt_after`` simulated seconds:
    afterwards no simulated machine runs, shutdown names none, and every machine costs in
    the ledger exactly what the cloud billed."""
    _check_early_interrupt(jobs, ready_delay, interrupt_after, seed)


@pytest.mark.slow
@settings(_RUN, max_examples=40)
@given(**_runs)
def test_early_interrupt_leaves_nothing_billing_over_many_examples(
    jobs: int, ready_delay: float, interrupt_after: float, seed: int
) -> None:
    """The same property as above, over many more runs."""
    _check_early_interrupt(jobs, ready_delay, interrupt_after, seed)


def _check_early_interrupt(
    jobs: int, ready_delay: float, interrupt_after: float, seed: int
) -> None:
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
