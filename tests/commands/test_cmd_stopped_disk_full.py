"""``serve`` and ``run`` stopped by their event log's full disk (QA's N2): one line that
says which command stopped (serve's said "the run"), no exception class, what was stopped
and what to do (free space, then ``serve --log LOG`` / ``run --resume LOG`` goes on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import eventlog
from conjure_actors.actors.conjure import RunStoppedError
from conjure_actors.cli import main
from conjure_actors.commands import run, serve
from conjure_actors.commands.run import stopped_error

pytestmark = pytest.mark.usefixtures("no_credentials")

STOPS = "stopped machines 4a84 without logging it"


def _disk_full() -> eventlog.DiskFullError:
    return eventlog.DiskFullError("small/s.log", "No space left on device")


def _stopped(failure: BaseException, stops: str = STOPS) -> RunStoppedError:
    """A RunStoppedError as the actor system ends with it (inside the nurseries' groups)."""
    return RunStoppedError(f"the run stopped: {failure}; {stops}", failure=failure, stops=stops)


def test_serve_ends_with_its_own_line_when_its_disk_is_full(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI: one line, exit 1, serve's words."""

    async def stopped_by_a_full_disk(*args: Any) -> int:
        raise ExceptionGroup("serving", [_stopped(_disk_full())])

    monkeypatch.setattr(serve, "_main", stopped_by_a_full_disk)
    code = main(["serve", "--port", "0", "--log", "small/s.log"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err == (
        "error: serve stopped: the disk holding its event log is full; the log is unchanged"
        f" (valid up to its last record); {STOPS}; free space on that disk, then"
        " `serve --log small/s.log` serves again and resumes the jobs left unfinished\n"
    )


def test_a_full_disk_behind_another_failure_is_still_said_as_a_full_disk() -> None:
    """The actor system gave up on an actor whose append failed: the full disk is named,
    not the exception classes that carried it."""
    try:
        raise RuntimeError("supervisor gave up") from _disk_full()
    except RuntimeError as carried:
        failure = carried
    line = str(stopped_error(ExceptionGroup("g", [_stopped(failure)]), Path("s.log"), "serve"))
    assert line.startswith("serve stopped: the disk holding its event log is full;")
    assert "Error" not in line
    assert "free space on that disk, then `serve --log s.log`" in line


def test_another_refused_write_is_said_with_the_os_reason() -> None:
    """Not a full disk (a read-only remount): the OS's reason, the fix left to the user."""
    try:
        raise eventlog.LogWriteError("s.log", "Read-only file system") from OSError(
            30, "Read-only file system"
        )
    except eventlog.LogWriteError as refused:
        failure = refused
    line = str(stopped_error(_stopped(failure), Path("s.log"), "serve"))
    assert line.startswith("serve stopped: its event log refused writes (Read-only file system);")
    assert "LogWriteError" not in line
    assert line.endswith(
        "fix that, then `serve --log s.log` serves again and resumes the jobs left unfinished"
    )


def test_a_stop_on_another_error_says_serve_and_how_to_go_on() -> None:
    """Any other failure that ended the actor system: serve's line, not "the run stopped"."""
    line = str(stopped_error(_stopped(ValueError("bug")), Path("s.log"), "serve"))
    assert line == (
        f"serve stopped: ValueError: bug; {STOPS}; `serve --log s.log` serves again and"
        " resumes the jobs left unfinished"
    )


def test_other_errors_are_left_to_the_common_wording() -> None:
    assert stopped_error(ValueError("bug"), Path("s.log"), "serve") is None


def test_a_launch_without_answer_is_left_to_serve_not_to_run_resume() -> None:
    """The run's hint "(--resume stops it)" is not serve's: its next start stops it."""
    stops = (
        "stopped machines m1; 1 launch without answer may have started a machine"
        " (--resume stops it)"
    )
    line = str(stopped_error(_stopped(_disk_full(), stops), Path("s.log"), "serve"))
    assert "--resume" not in line
    assert "may have started a machine (`serve --log s.log` stops it)" in line


def test_run_ends_with_its_own_line_when_its_disk_is_full(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """run, stopped by the same full disk, says it as run's: no exception class (it said
    "the run stopped: DiskFullError: ..."), what was stopped, and that `run --resume LOG`
    finishes the jobs once space is freed."""

    async def stopped_by_a_full_disk(*args: Any) -> int:
        raise ExceptionGroup("running", [_stopped(_disk_full())])

    monkeypatch.setattr(run, "_main", stopped_by_a_full_disk)
    log = tmp_path / "r.log"
    code = main(["run", "--log", str(log)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert "DiskFullError" not in err
    assert err == (
        "error: run stopped: the disk holding its event log is full; the log is unchanged"
        f" (valid up to its last record); {STOPS}; free space on that disk, then"
        f" `run --resume {log}` finishes the jobs left unfinished\n"
    )
