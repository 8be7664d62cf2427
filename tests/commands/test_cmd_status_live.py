"""``status LOG`` says whether a process is writing the log (it holds the log's lock, as
``replay --follow`` asks), not "running (or crashed)"; a directory or a missing file is said
in replay's words."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain.service_events import ApiJobAccepted
from tests.commands.bad_input_support import one_line_usage_error
from tests.commands.test_cmd_replay import T0, WF, story

UNFINISHED = story()[:-1]  # a run that has not stopped (no SystemStopped)


def _first_line(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["status", str(path)]) == 0
    return capsys.readouterr().out.splitlines()[0]


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="the OS does not name the pid")
def test_a_log_being_written_is_running_with_the_writers_pid(
    tmp_path: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live run's (or serve's) log: running, and the pid of the process writing it."""
    path = tmp_path / "live.log"
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(UNFINISHED)
        writer.flush()
        assert _first_line(path, capsys) == f"run log {path}: running (pid {os.getpid()})"


def test_a_run_nobody_writes_that_did_not_stop_crashed(
    tmp_path: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run log without its stop and no writer: not running, and what finishes it."""
    path = tmp_path / "crashed.log"
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(UNFINISHED)
    assert _first_line(path, capsys) == (
        f"run log {path}: not running (crashed or killed: `run --resume {path}` finishes it)"
    )


def test_a_serve_log_that_did_not_stop_is_finished_by_serve(
    tmp_path: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crashed serve's log (its jobs came through the API): serve --log finishes it."""
    path = tmp_path / "serve.log"
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r", version="0", mode="simulated", at=T0),
                ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=T0),
                ApiJobAccepted(job_id="j1", expires_at=T0 + 3600, at=T0 + 1),
                ev.JobSubmitted(job_id="j1", workflow_sha256=WF, at=T0 + 1),
            ]
        )
    assert _first_line(path, capsys) == (
        f"serve log {path}: not running (crashed or killed: `serve --log {path}` finishes it)"
    )


def test_a_run_that_stopped_says_why(
    tmp_path: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that stopped in order: its stop reason, as before."""
    path = tmp_path / "done.log"
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(story())
    assert _first_line(path, capsys) == f"run log {path}: done"


@pytest.mark.parametrize("what", ["a directory", "a missing file"])
def test_status_says_a_bad_path_in_replays_words(
    tmp_path: Path, no_credentials: None, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status DIR said "no run log at DIR" where replay said it is a directory: the same
    thing is now said in the same words (and a missing file too)."""
    path = tmp_path / "runs"
    if what == "a directory":
        path.mkdir()
    said = []
    for command in ("status", "replay"):
        code = main([command, str(path)])
        said.append(one_line_usage_error(code, capsys.readouterr().err))
    assert said[0] == said[1]
    assert "no run log at" not in said[0]
