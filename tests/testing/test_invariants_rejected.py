"""check_jobs on a workflow the server refuses: once its prompt went out, the job ends
refused, or with no machine left to send it to (its answer lost to a crash, the budget spent
since: soak seed 976); any other ending is a defect."""

from __future__ import annotations

import attrs

from conjure_actors.domain import state as st
from conjure_actors.testing import invariants as inv


def _failed(error_type: str) -> st.Job:
    job = st.Job(job_id="j1", workflow_sha256="a" * 64)
    return attrs.evolve(job, status=st.FAILED, prompt_id="p1", error=st.JobError(error_type, "why"))


def test_a_refused_workflow_that_then_found_no_machine_is_not_flagged() -> None:
    assert inv._job_problems(_failed("NoMachine"), "rejected", 0) == []


def test_a_refused_workflow_that_then_found_the_budget_spent_is_not_flagged() -> None:
    """No machine because the budget refused its launch: ``BudgetRefused``, as NoMachine."""
    assert inv._job_problems(_failed("BudgetRefused"), "rejected", 0) == []


def test_a_refused_workflow_that_ran_out_of_retries_is_flagged() -> None:
    (problem,) = inv._job_problems(_failed("RetriesExhausted"), "rejected", 1)
    assert "failed as RetriesExhausted instead of PromptRejected" in problem
