"""Issue 14, the decide step of a failed attempt: node errors are not retried (unless memory
or I/O), an interrupt from elsewhere cancels, outputs dropped by node errors fail."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as hyp
from test_domain_decide import TABLE, base

from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply


def running() -> State:
    """j1 running attempt 1 on a ready machine s1."""
    state = base()  # j1 submitted, s1 launched (test_domain_decide)
    apply(
        state,
        decide.machine_ready(
            state, "s1", service_ready_at=10.0, estimated_stopping_at=None, table=TABLE, at=10.0
        ),
    )
    apply(state, decide.queue_job(state, "j1", at=11.0))
    apply(state, decide.lease_machine(state, "s1", "j1", at=11.0))
    apply(state, decide.start_job(state, "j1", "s1", at=11.0))
    return state


def _judge(failure: decide.AttemptFailure) -> object:
    return decide.judge_failure(running(), "j1", failure, max_attempts=3, delay=2.0, at=20.0)


_DETERMINISTIC = hyp.sampled_from(
    ["ValueError", "RuntimeError", "KeyError", "PIL.UnidentifiedImageError", "AssertionError"]
)


@given(
    exc=_DETERMINISTIC,
    message=hyp.text(max_size=80).filter(
        lambda m: not any(k in m.lower() for k in ("memory", "cuda", "allocation"))
    ),
)
def test_a_deterministic_node_error_fails_the_job_at_once(exc: str, message: str) -> None:
    """A node error of the graph itself fails on the first attempt, naming node and class."""
    failure = decide.execution_failure("16", "LoadImage", exc, message)
    event = _judge(failure)
    assert isinstance(event, ev.JobFailed)
    assert event.error_type == "ExecutionFailed"
    assert not event.retryable
    assert "node 16 (LoadImage)" in event.message
    assert exc in event.message


def test_an_out_of_memory_node_error_is_retried() -> None:
    """Out of memory may pass on another attempt: a retry, with the reason."""
    failure = decide.execution_failure(
        "20", "KSampler", "torch.OutOfMemoryError", "Allocation on device 0 would exceed"
    )
    event = _judge(failure)
    assert isinstance(event, ev.JobRetrying)
    assert "node 20 (KSampler)" in event.reason


def test_an_interrupt_from_elsewhere_cancels_the_job() -> None:
    """An interrupt this run did not send ends the job cancelled, saying by whom."""
    event = _judge(decide.outside_interrupt("20", "KSampler"))
    assert isinstance(event, ev.JobCancelled)
    assert event.reason == "interrupted on the server at node 20 (KSampler), not by this run"


def test_outputs_dropped_by_node_errors_fail_without_a_retry() -> None:
    """A 200 answer listing node errors fails the job, with every problem (five at most)."""
    problems = [f"node {i} (LoadImage) image: Invalid image file: x{i}.png" for i in range(7)]
    event = _judge(decide.dropped_outputs(problems))
    assert isinstance(event, ev.JobFailed)
    assert event.error_type == "NodeErrors"
    assert "Invalid image file: x4.png" in event.message
    assert "x5.png" not in event.message
    assert "(+2 more)" in event.message
