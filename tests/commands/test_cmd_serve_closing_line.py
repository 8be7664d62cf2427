"""serve's last line says what its log holds and what was spent (it ended without a word:
``run`` ends with its summary), and what the next start does with unfinished jobs."""

from __future__ import annotations

from pathlib import Path

from conjure_actors.commands.serve import closing_line
from conjure_actors.domain import state as st


def _state(statuses: list[str], cost_micros: int = 0) -> st.State:
    state = st.initial_state()
    for k, status in enumerate(statuses):
        state.jobs[f"j{k}"] = st.Job(f"j{k}", workflow_sha256="w", status=status)
    state.ledger.total_micros = cost_micros
    return state


def test_the_closing_line_counts_jobs_and_says_the_cost() -> None:
    """Two succeeded, one failed: the counts, the cost, the command that says more."""
    line = closing_line(_state([st.SUCCEEDED, st.SUCCEEDED, st.FAILED], 12_300), Path("s.log"))
    assert line == (
        "serve stopped: 3 jobs (2 succeeded, 1 failed, 0 cancelled); cost $0.0123;"
        " python -m conjure_actors status s.log says more"
    )


def test_unfinished_jobs_are_said_to_run_at_the_next_start() -> None:
    """A queued job left in the log: the next ``serve --log`` runs it."""
    line = closing_line(_state([st.QUEUED]), Path("my runs/s.log"))
    assert "1 unfinished: the next serve --log on this log runs them" in line
    assert "status 'my runs/s.log'" in line


def test_unfinished_jobs_whose_extra_data_is_lost_are_said_to_fail_at_the_next_start() -> None:
    """Two queued, one with extra_data (in memory only): the operator hears before a restart
    that the next start fails it not_resumable (QA7 F3: it promised to run all of them)."""
    from conjure_actors.domain import service_events as se

    state = _state([st.QUEUED, st.QUEUED])
    state.service.api_jobs["j1"] = se.ApiJob(
        job_id="j1",
        labels={},
        idempotency_key=None,
        input_assets={},
        accepted_at=0.0,
        expires_at=1.0,
        extra_data_keys=["api_key_comfy_org"],
    )
    line = closing_line(state, Path("s.log"))
    assert "2 unfinished: the next serve --log on this log runs 1 and fails 1 not_resumable" in line
