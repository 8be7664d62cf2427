"""Write ``golden_v11_budget_start.log`` (and the state it must replay to): since session
29 a start records the budget it was configured with (``BudgetSet.from_start``), so that a
restart given the same ``--budget`` keeps a budget set at run time. The story: a start with
--budget 1.00 (set, recorded), a budget lowered at run time, a restart with the same
--budget (kept: no event), a restart with --budget 0.50 (set, recorded), a run-time set to
0.40 and its warning, then a restart with --budget 0.40 (another than the last start's, and
the budget in force: only recorded, the warning kept).

Run ``python tests/data/make_golden_v11_budget_start.py`` ONCE; the files are checked in and
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

from conjure_actors.domain import events as ev  # noqa: E402
from conjure_actors.domain.cost_policy import StartBudget, start_budget  # noqa: E402

LOG = HERE / "golden_v11_budget_start.log"
STATE = HERE / "golden_v11_budget_start_state.json"
T0 = 1_800_900_000.0


def story() -> list[Any]:
    """The golden events, decided against the state as they go (so they are legal)."""
    story_ = Story(T0)
    state, out, emit, t = story_.state, story_.out, story_.emit, story_.t

    def start(run: int, at: float, micros: int) -> None:
        emit(ev.SystemStarted(run_id=f"run-{run}", version="0.1.0", mode="runcomfy", at=at))
        if start_budget(state.budget, micros) is StartBudget.SET:
            emit(ev.BudgetSet(limit_micros=micros, at=at, from_start=True))

    start(1, t(0), 1_000_000)
    emit(ev.BudgetSet(limit_micros=30_000, at=t(10)))  # PUT /api/conjure/budget
    emit(ev.SystemStopped(reason="interrupted", at=t(20)))
    start(2, t(30), 1_000_000)  # the same --budget: the $0.03 is kept
    assert state.budget.limit_micros == 30_000
    emit(ev.SystemStopped(reason="interrupted", at=t(40)))
    start(3, t(50), 500_000)  # another --budget: set
    emit(ev.BudgetSet(limit_micros=400_000, at=t(60)))
    emit(ev.BudgetWarning(spent_micros=350_000, limit_micros=400_000, at=t(70)))
    emit(ev.SystemStopped(reason="interrupted", at=t(80)))
    start(4, t(90), 400_000)  # another --budget, the one in force: only recorded
    emit(ev.SystemStopped(reason="done", at=t(100)))
    assert state.anomaly_count == 0, state.anomalies
    assert (state.budget.limit_micros, state.budget.start_micros) == (400_000, 400_000)
    assert state.budget.warned
    return out


def main() -> int:
    return write_golden(LOG, STATE, story())


if __name__ == "__main__":
    raise SystemExit(main())
