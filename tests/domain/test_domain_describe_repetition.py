"""A timeline line says what it is about once: its subject (``launch K``, ``budget``,
``workflow``) is not said again by its summary ("launch K launch requested: ... (key K)")."""

from __future__ import annotations

import pytest
from domain_strategies import event_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.describe import describe

KEY = "9466fdf10b6845b8b4c13041e7071f71"


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
@settings(max_examples=8)
@given(st.data())
def test_no_summary_starts_with_its_subjects_kind(data: st.DataObject) -> None:
    """``budget  budget set to $5``, ``workflow  workflow x registered``, ``launch K  launch
    failed``: the kind of the subject said twice in a row."""
    for cls in ev.EVENT_TYPES:
        subject, summary = describe(data.draw(event_strategy(cls)))
        kind = subject.split()[0]
        assert not summary.startswith(f"{kind} "), (subject, summary)


def test_a_launch_request_names_its_key_once() -> None:
    """The subject ``launch K`` names the key: the summary says neither again."""
    requested = ev.MachineLaunchRequested(
        request_key=KEY,
        server_type="medium",
        workflow_version="wv-1",
        estimated_duration=592,
        at=0,
    )
    subject, summary = describe(requested)
    assert f"{subject}  {summary}" == (f"launch {KEY}  requested: medium, version wv-1, lease 592s")


def test_a_failed_launch_names_its_key_once() -> None:
    """A failed launch: 'launch K  failed: ...', not 'launch K  launch failed: ...'."""
    failed = ev.MachineLaunchFailed(request_key=KEY, reason="HTTP 400 unknown version", at=0)
    assert describe(failed) == (f"launch {KEY}", "failed: HTTP 400 unknown version")


def test_budget_lines_say_budget_once() -> None:
    """'budget  set to $5', not 'budget  budget set to $5'."""
    assert describe(ev.BudgetSet(limit_micros=5_000_000, at=0)) == ("budget", "set to $5.0000")
    assert describe(ev.BudgetSet(limit_micros=None, at=0)) == (
        "budget",
        "none set (no spending limit)",
    )


def test_a_workflow_line_says_workflow_once() -> None:
    """'workflow  x.json registered', not 'workflow  workflow x.json registered'."""
    registered = ev.WorkflowRegistered(
        sha256="0a4557ac9451" + "0" * 52, name="x.json", graph_json="{}", at=0
    )
    assert describe(registered) == ("workflow", "x.json registered (0a4557ac9451)")


def test_an_attached_comfyui_says_what_it_is_not_its_name_again() -> None:
    """'machine comfyui  attached (comfyui, 1 job(s) at a time)' said the name twice."""
    attached = ev.MachineAttached(server_id="comfyui", kind="comfyui", max_jobs=1, at=0)
    assert describe(attached) == (
        "machine comfyui",
        "attached (a ComfyUI you run, 1 job(s) at a time)",
    )
    dev = ev.MachineAttached(server_id="s-1", kind="dev", max_jobs=2, at=0)
    assert describe(dev) == ("machine s-1", "attached (the dev machine, 2 job(s) at a time)")
