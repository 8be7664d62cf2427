"""A failing state machine reports its seed and saves a log the replay command reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import invariant, run_state_machine_as_test

import eventlog
from conjure_actors.cli import main as cli_main
from conjure_actors.domain.events import Event
from conjure_actors.testing import ConjureStateMachine
from conjure_actors.testing.stateful import FAILURES_ENV


class NeverSubmitMachine(ConjureStateMachine):
    """A deliberately false property: "no job is ever accepted"."""

    @invariant()
    def no_job_accepted(self) -> None:
        if self.h is not None:
            assert self.h.job_ids() == [], "a job was accepted"


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
def test_failure_saves_a_replayable_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shrunk failure's event log is saved under $CONJURE_HARNESS_FAILURES."""
    monkeypatch.setenv(FAILURES_ENV, str(tmp_path))
    # No shrinking: what is tested is the report of the final run, not the shrinker.
    quick = settings(
        max_examples=100,
        stateful_step_count=15,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
    )
    with pytest.raises(AssertionError, match="a job was accepted"):
        run_state_machine_as_test(NeverSubmitMachine, settings=quick)
    logs = sorted(tmp_path.glob("NeverSubmitMachine-seed*.log"))
    assert len(logs) == 1
    events = [r.event for r in eventlog.read(logs[0], Event)]
    assert any(type(e).__name__ == "JobSubmitted" for e in events)
    assert cli_main(["replay", str(logs[0])]) == 0
