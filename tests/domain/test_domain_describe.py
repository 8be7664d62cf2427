"""One-line descriptions of events for the timeline."""

from __future__ import annotations

import pytest
from domain_strategies import event_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.describe import _SUMMARIES, describe, event_subject


def test_every_event_type_has_a_summary() -> None:
    """No event type falls back to the generic field dump."""
    assert set(_SUMMARIES) == set(ev.EVENT_TYPES)


# Each example draws one event of every type: the inner loop runs a few, the slow tests many.
@pytest.mark.slow
@settings(max_examples=4)
@given(st.data())
def test_descriptions_are_one_line(data: st.DataObject) -> None:
    """Every description is a single line with a subject."""
    _check_one_line(data)


@pytest.mark.slow
@settings(max_examples=50)
@given(st.data())
def test_descriptions_are_one_line_over_many_examples(data: st.DataObject) -> None:
    """The same property as above, over many more generated events."""
    _check_one_line(data)


def _check_one_line(data: st.DataObject) -> None:
    for cls in ev.EVENT_TYPES:
        subject, summary = describe(data.draw(event_strategy(cls)))
        assert subject
        assert "\n" not in summary


def test_subjects_name_jobs_and_machines() -> None:
    """A node event is about its job; a lease is about its machine."""
    progress = ev.NodeProgress(job_id="j", prompt_id="p", node_id="3", value=1, max=4, at=0)
    lease = ev.MachineLeased(server_id="s", job_id="j", at=0)
    assert event_subject(progress) == "job j"
    assert event_subject(lease) == "machine s"
    assert describe(progress)[1] == "node 3 1/4"


def test_multiline_messages_become_one_line() -> None:
    """A server error message with newlines still describes on one line."""
    failed = ev.JobFailed(job_id="j", error_type="E", message="first\nsecond\r\nthird", at=0)
    assert describe(failed)[1] == "failed: E: first second third"


def test_a_rejection_names_its_node_once() -> None:
    """A rejection's node is named when its message does not name it, and only once."""
    bare = ev.PromptRejected(
        job_id="j", prompt_id="p", error_type="t", message="bad", node_id="7", class_type="X", at=0
    )
    named = ev.PromptRejected(
        job_id="j", prompt_id="p", error_type="t", message="node 7 (X) w: bad", node_id="7", at=0
    )
    assert describe(bare)[1] == "prompt p rejected: node 7 (X): t: bad"
    assert describe(named)[1] == "prompt p rejected: t: node 7 (X) w: bad"


def test_a_late_prompt_stopped_is_told_under_its_job() -> None:
    """The replay timeline shows a given-up prompt stopped late in its job's story."""
    stopped = ev.LatePromptStopped(server_id="s", prompt_id="p1", job_id="j", was="pending", at=0)
    summary = "prompt p1, given up, arrived late on s: stopped (pending)"
    assert describe(stopped) == ("job j", summary)


def test_a_late_prompt_stop_not_confirmed_says_so() -> None:
    """A stop no lookup confirmed (the interrupt accepted, the prompt not seen gone) is not
    told as done."""
    sent = ev.LatePromptStopped(
        server_id="s", prompt_id="p1", job_id="j", was="running", confirmed=False, at=0
    )
    summary = "prompt p1, given up, arrived late on s: stop sent, not confirmed (running)"
    assert describe(sent) == ("job j", summary)
