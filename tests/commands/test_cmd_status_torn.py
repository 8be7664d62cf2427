"""``status LOG`` of a log whose last append a crash cut short (a torn tail): it warns, as
replay does, that it shows the run as of the records before it (it said nothing: the lost
record, a SystemStopped maybe, went unmentioned)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conjure_actors.cli import main
from tests.commands.test_cmd_replay import story, write


def test_status_of_a_torn_log_warns_and_shows_the_records_before_it(
    tmp_path: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """One warning line on stderr (where, how many records are shown), then the summary."""
    log = write(tmp_path / "run.log", story())
    size = log.stat().st_size
    os.truncate(log, size - 3)  # the last record, SystemStopped, cut short
    assert main(["status", str(log)]) == 0
    captured = capsys.readouterr()
    (warning,) = captured.err.splitlines()
    assert warning.startswith(f"warning: {log}: torn tail at offset ")
    assert warning.endswith("showing the run as of the 6 complete records before it")
    assert captured.out.startswith(f"run log {log}: not running (crashed or killed")
