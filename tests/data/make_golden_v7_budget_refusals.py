"""Write ``golden_v7_budget_refusals.log`` (and the state it must replay to): a run near its
budget as the CostActor tells refusals since session 26: a machine's renewal refused, told
with what it needed and the machine's id (``BudgetLimitReached.needed_micros``,
``server_id``); a launch refused, told the same way; a job left with no machine failing
``BudgetRefused``.

Run ``python tests/data/make_golden_v7_budget_refusals.py`` ONCE; the files are checked in
and ``tests/domain/test_domain_golden.py`` replays every ``golden_v*.log`` on each CI run (see
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
from conjure_actors.domain.describe import RAISE_BUDGET, budget_left  # noqa: E402
from conjure_actors.domain.prices import (  # noqa: E402
    billed_seconds,
    default_price_table,
    machine_cost_micros,
)

LOG = HERE / "golden_v7_budget_refusals.log"
STATE = HERE / "golden_v7_budget_refusals_state.json"
T0 = 1_800_600_000.0
LIMIT = 90_000


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    table = default_price_table("hobby")
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    emit(ev.SystemStarted(run_id="run-1", version="0.1.0", mode="runcomfy", at=t(0)))
    emit(ev.BudgetSet(limit_micros=LIMIT, at=t(0)))
    emit(ev.WorkflowRegistered(sha256="w" * 64, name="w.json", graph_json="{}", at=t(0)))
    emit(ev.JobSubmitted(job_id="job-1", workflow_sha256="w" * 64, at=t(0)))
    emit(ev.JobQueued(job_id="job-1", at=t(0)))
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
    now = t(30)
    assert not cost_policy.check_renewal(state, "srv-1", seconds=60, lease_micros=lease, now=now)
    emit(
        cost_policy.limit_reached(
            what="renewal",
            needed=cost_policy.renewal_estimate(state, "srv-1", seconds=60, now=now),
            spent=cost_policy.spent_micros(state, now),
            committed=cost_policy.committed_micros(state, now, lease_micros=lease),
            limit=LIMIT,
            at=now,
            server_id="srv-1",
        )
    )
    emit(decide.stop_machine(state, "srv-1", reason="budget", at=t(58)))
    now = t(58)
    refused = cost_policy.check_launch(
        state, "job-1", estimate=lease, lease_micros=lease, now=now, at=now
    )
    assert refused is not None
    spent = cost_policy.spent_micros(state, now)
    emit(refused)
    emit(
        cost_policy.limit_reached(
            what="launch",
            needed=lease,
            spent=spent,
            committed=LIMIT - spent - refused.remaining_micros,
            limit=LIMIT,
            at=now,
        )
    )
    rate = table.rate("2x-large")
    emit(
        ev.MachineStopped(
            server_id="srv-1",
            stopped_at=t(58),
            billed_seconds=billed_seconds(t(3), t(58)),
            cost_micros=machine_cost_micros(rate, t(3), t(58)),
            at=t(58),
        )
    )
    now = t(59)
    figures = budget_left(
        needed=lease,
        spent=cost_policy.spent_micros(state, now),
        committed=cost_policy.committed_micros(state, now, lease_micros=lease),
        limit=LIMIT,
    )
    emit(
        decide.fail_job(
            state,
            "job-1",
            error_type="BudgetRefused",
            message=f"no machine for job job-1: the budget cannot cover a launch: {figures};"
            f" {RAISE_BUDGET}",
            retryable=False,
            at=now,
        )
    )
    emit(ev.SystemStopped(reason="done", at=t(60)))
    assert state.anomaly_count == 0, state.anomalies
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
