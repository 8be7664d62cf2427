"""A job's outputs in the fold are those of its current attempt (QA H1: a resumed or retried
job listed the files of the attempt it gave up beside the ones of the attempt that ran)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.state import State, apply, initial_state

WF = "f" * 64


def _fold(events: list[Any]) -> State:
    state = initial_state()
    for event in events:
        state = apply(state, event)
    return state


def _saved(name: str, sha: str = "0") -> ev.OutputSaved:
    return ev.OutputSaved(
        job_id="j",
        node_id="9",
        filename=name,
        path=f"/out/j/{name}",
        size=10,
        sha256=sha * 64,
        kind="image",
        at=3.0,
    )


_START = [
    ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=1.0),
    ev.JobSubmitted(job_id="j", workflow_sha256=WF, at=1.0),
    ev.JobStarted(job_id="j", attempt=1, server_id="m", at=2.0),
]


def test_a_new_attempt_drops_the_outputs_of_the_one_before() -> None:
    state = _fold(
        [
            *_START,
            _saved("a_00001_.png"),
            ev.JobRetrying(job_id="j", attempt=1, reason="download failed", delay=1.0, at=4.0),
            ev.JobStarted(job_id="j", attempt=2, server_id="m", at=5.0),
            _saved("a_00002_.png"),
            _saved("b_00001_.png"),
        ]
    )
    assert [o.filename for o in state.jobs["j"].outputs] == ["a_00002_.png", "b_00001_.png"]


def test_a_file_saved_again_in_one_attempt_is_listed_once() -> None:
    """A re-attach downloads again a file whose first copy is not intact: one entry."""
    state = _fold([*_START, _saved("a.png", "1"), _saved("b.png"), _saved("a.png", "2")])
    outputs = state.jobs["j"].outputs
    assert [(o.filename, o.sha256[0]) for o in outputs] == [("a.png", "2"), ("b.png", "0")]


@given(st.lists(st.sampled_from(["a.png", "b.png", "c.png", "new attempt"]), max_size=30))
def test_outputs_are_the_distinct_files_saved_since_the_last_start(steps: list[str]) -> None:
    events: list[Any] = list(_START)
    attempt, since_start = 1, list[str]()
    for step in steps:
        if step == "new attempt":
            events.append(
                ev.JobRetrying(job_id="j", attempt=attempt, reason="x", delay=1.0, at=4.0)
            )
            attempt += 1
            events.append(ev.JobStarted(job_id="j", attempt=attempt, server_id="m", at=5.0))
            since_start = []
        else:
            events.append(_saved(step))
            if step not in since_start:
                since_start.append(step)
    state = _fold(events)
    assert [o.filename for o in state.jobs["j"].outputs] == since_start
    assert state.anomaly_count == 0
