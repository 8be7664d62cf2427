"""A serve job that ran to its end but whose outputs could not all be stored: the API tells
its client ``failed`` (``outputs_not_stored``); ``status LOG``, serve's closing line and
``replay --at`` tell its operator the same, with the reason (QA11 F6: they counted it
succeeded, without a word)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands.serve import closing_line
from conjure_actors.domain.events import UPCASTERS, Event
from conjure_actors.domain.state import State, apply, initial_state

pytestmark = pytest.mark.usefixtures("no_credentials")

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_v13_outputs_not_stored.log"
JOB = "00000000-0000-4000-8000-0000000000d1"


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "serve.log"
    shutil.copyfile(GOLDEN, path)
    return path


def _state(path: Path) -> State:
    state: State = eventlog.fold(
        eventlog.read(path, Event, upcasters=UPCASTERS), apply, initial_state()
    )
    return state


def test_status_counts_it_failed_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failed, and the line why: how many outputs, why, where their files are."""
    assert main(["status", str(_copy(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "  jobs: 1 (0 succeeded, 1 failed, 0 cancelled, 0 unfinished)\n" in out
    assert (
        f"  job {JOB}: failed: outputs_not_stored: 1 of its 2 outputs could not be stored"
        " (the server's asset store refuses writes: Read-only file system); their files are"
        f" in serve's output folder (--out) under {JOB}/\n"
    ) in out


def test_the_closing_line_counts_it_failed(tmp_path: Path) -> None:
    """serve's last line agrees with what the API answered for it."""
    line = closing_line(_state(_copy(tmp_path)), Path("s.log"))
    assert line.startswith("serve stopped: 1 jobs (0 succeeded, 1 failed, 0 cancelled);")


def test_the_fold_keeps_its_own_status(tmp_path: Path) -> None:
    """The log's state is not changed: the job succeeded there (its outputs_not_stored says
    the rest, as docs/replay-json.md documents)."""
    state = _state(_copy(tmp_path))
    assert state.jobs[JOB].status == "succeeded"
    assert JOB in state.service.outputs_not_stored


def test_replay_state_names_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``replay --at``'s job table: its error column says why the API reads it failed."""
    assert main(["replay", str(_copy(tmp_path)), "--at", "20"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if JOB in line)
    assert "outputs_not_stored: 1 of its 2 outputs" in row
