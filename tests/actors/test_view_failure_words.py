"""A failed job's line (the run's summary, ``status``) says conjure_actors' own error types
in words: ``failed: no machine for job ...``, not ``failed: NoMachine: no machine ...``;
``error_type`` stays as it is in the log and in ``--json`` (``run.error``)."""

from __future__ import annotations

import pytest

from conjure_actors.actors.view import error_record, job_reason, summarize
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply, initial_state


def _failed(error_type: str, message: str) -> State:
    state = initial_state()
    for e in (
        ev.JobSubmitted(job_id="a", workflow_sha256="w", at=0.0),
        ev.JobFailed(job_id="a", error_type=error_type, message=message, at=1.0),
    ):
        state = apply(state, e)
    return state


def test_no_machine_is_said_by_its_message_alone() -> None:
    message = "no machine for job a: launch failed: RunComfy does not know workflow version 'x'"
    state = _failed("NoMachine", message)
    assert summarize(state).failures == (("a", "failed", message),)
    assert error_record(state.jobs["a"])["error_type"] == "NoMachine"


@pytest.mark.parametrize(
    ("error_type", "words"),
    [
        ("RetriesExhausted", "out of retries"),
        ("Timeout", "timed out"),
        ("BudgetRefused", "refused by the budget"),
        ("InternalError", "internal error"),
    ],
)
def test_an_own_error_type_is_said_in_words(error_type: str, words: str) -> None:
    reason = job_reason(_failed(error_type, "why").jobs["a"])
    assert reason == f"{words}: why"


def test_comfyuis_exception_type_is_kept() -> None:
    """ComfyUI's exception class is its own word for the failure (a user searches for it)."""
    reason = job_reason(_failed("torch.OutOfMemoryError", "CUDA out of memory").jobs["a"])
    assert reason == "torch.OutOfMemoryError: CUDA out of memory"
