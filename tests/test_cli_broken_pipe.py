"""A pipe that closes early (``status LOG | head``) ends every command quietly, exit 141
(128 + SIGPIPE), in one place (``cli.main``): it used to be a ``BrokenPipeError`` traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import eventlog
from conjure_actors import cli
from conjure_actors.commands import status
from conjure_actors.domain.events import Event, SystemStarted

ROOT = Path(__file__).resolve().parent.parent


def test_a_command_whose_reader_left_exits_141_without_a_word(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BrokenPipeError of a command's print: no traceback, no line, exit 141, stdout
    pointed at /dev/null (so that the interpreter's last flush cannot fail again)."""
    silenced: list[bool] = []

    def reader_left(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(status, "main", reader_left)
    monkeypatch.setattr(cli, "_stdout_to_devnull", lambda: silenced.append(True))
    assert cli.main(["status", "x.log"]) == cli.EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""
    assert silenced == [True]


def test_debug_shows_the_broken_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug keeps the traceback, as for every other error."""

    def reader_left(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(status, "main", reader_left)
    with pytest.raises(BrokenPipeError):
        cli.main(["--debug", "status", "x.log"])


@pytest.mark.slow  # a subprocess
def test_status_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`status LOG | head` once head has gone: exit 141, nothing on stderr."""
    log = tmp_path / "r.log"
    with eventlog.open_writer(log, Event, sync="none") as writer:
        writer.append(SystemStarted(run_id="r", version="0", mode="simulated", at=1.0))
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conjure_actors", "status", str(log)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
