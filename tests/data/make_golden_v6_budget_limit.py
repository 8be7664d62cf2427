"""Write ``golden_v6_budget_limit.log`` (and the state it must replay to): a run near its
budget whose CostActor refused a machine's lease renewal and then a launch, and said once
that the budget stopped launches and renewals (``BudgetLimitReached``).

Run ``python tests/data/make_golden_v6_budget_limit.py`` ONCE; the files are checked in and
``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run (see
``make_golden.py`` for the rules: never regenerate an existing golden log).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from golden_story import Story, write_golden  # noqa: E402

from conjure_actors.domain import cost_policy, decide  # noqa: E402
from conjure_actors.domain import events as ev  # noqa: E402
from conjure_actors.domain.prices import default_price_table  # noqa: E402

LOG = HERE / "golden_v6_budget_limit.log"
STATE = HERE / "golden_v6_budget_limit_state.json"
T0 = 1_800_500_000.0


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    table = default_price_table("hobby")
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(ev.SystemStarted(run_id="run-1", version="0.1.0", mode="runcomfy", at=t(0)))
    emit(ev.BudgetSet(limit_micros=90_000, at=t(0)))
    emit(
        decide.request_launch(
            state,
            request_key="launch-1",
            server_type="2x-large",
            workflow_version="wv-1",
            estimated_duration=56,
            table=table,
            at=t(0),
        )
    )
    emit(decide.machine_launched(state, request_key="launch-1", server_id="srv-1", at=t(0)))
    emit(
        decide.machine_ready(
            state,
            "srv-1",
            service_ready_at=t(3),
            estimated_stopping_at=t(59),
            table=table,
            at=t(4),
        )
    )
    lease = cost_policy.lease_cost_micros(table.rate("2x-large"), 60)
    assert not cost_policy.check_renewal(state, "srv-1", seconds=60, lease_micros=lease, now=t(30))
    emit(
        ev.BudgetLimitReached(
            what="renewal",
            spent_micros=cost_policy.spent_micros(state, t(30)),
            committed_micros=cost_policy.committed_micros(state, t(30), lease_micros=lease),
            limit_micros=90_000,
            at=t(30),
        )
    )
    emit(decide.stop_machine(state, "srv-1", reason="budget", at=t(58)))
    refused = cost_policy.check_launch(
        state, "job-2", estimate=lease, lease_micros=lease, now=t(58), at=t(58)
    )
    assert refused is not None
    emit(refused)
    emit(ev.SystemStopped(reason="done", at=t(60)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
