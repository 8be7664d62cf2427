"""``status LOG`` says why a job failed as the live view and the summary say it: the node
and class the log recorded, once, without the client's "... rejected prompt <id>:" preamble."""

from __future__ import annotations

from conjure_actors.commands.status import job_failure
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st


def _rejected(
    message: str, node_id: str | None, class_type: str | None, failed: str = "m"
) -> st.State:
    state = st.initial_state()
    for e in (
        ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=0.0),
        ev.JobSubmitted(job_id="j", workflow_sha256="w", at=0.0),
        ev.JobQueued(job_id="j", at=0.0),
        ev.PromptSubmitting(
            job_id="j", attempt=1, prompt_id="p", client_id="c", server_id="s", at=0.0
        ),
        ev.PromptRejected(
            job_id="j",
            prompt_id="p",
            error_type="x",
            message=message,
            node_id=node_id,
            class_type=class_type,
            at=1.0,
        ),
        ev.JobFailed(job_id="j", error_type="PromptRejected", message=failed, at=1.0),
    ):
        st.apply(state, e)
    return state


def test_status_names_the_rejected_node_from_the_event_fields() -> None:
    """A rejection whose message does not name its node: status names it from the fields."""
    state = _rejected("bad value", "20", "KSampler")
    assert job_failure(state.jobs["j"]) == "node 20 (KSampler): PromptRejected: m"


def test_status_does_not_repeat_a_node_the_message_names() -> None:
    """A catalogue refusal names its node as "node 1: ...": status does not name it again."""
    state = _rejected("node 1: unknown class 'X'", "1", "X", "refused: node 1: unknown class 'X'")
    assert job_failure(state.jobs["j"]) == "PromptRejected: refused: node 1: unknown class 'X'"
